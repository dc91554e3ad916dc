"""The pool against the local board over HTTP, with a fake agent executable."""

from __future__ import annotations

import signal
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from taskinfa_worker.app import build_pool
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Task
from taskinfa_worker.errors import EXIT_AUTH
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.redact import Redactor
from tests.board_support import BoardHandle
from tests.pool.support import (
    Scene,
    WorkerProcess,
    alive,
    process_env,
    running_pool,
    unanswered_requests,
    wait_for,
    worker_settings,
)


async def add_tasks(client: BoardClient, count: int, title: str = "task") -> list[Task]:
    # status todo said outright: the current release creates tasks in backlog otherwise.
    return [
        await client.create_task(
            f"{title} {i}", "default", description=f"do thing {i}", status="todo"
        )
        for i in range(count)
    ]


async def statuses(client: BoardClient) -> dict[str, str]:
    page = await client.list_tasks(limit=100)
    return {task.id: task.status for task in page.tasks}


async def comments_of(client: BoardClient, task_id: str) -> list[Any]:
    return (await client.list_comments(task_id, limit=100)).comments


async def test_eight_slots_forty_tasks_all_reach_review(
    any_board: BoardHandle, scene: Scene
) -> None:
    board = any_board
    settings = worker_settings(board.url, board.api_key, scene, concurrency=8, exit_when_idle=True)
    async with BoardClient.from_settings(settings) as client:
        tasks = await add_tasks(client, 40)
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.completed == 40, what="40 completions")
        final = await statuses(client)
        assert set(final.values()) == {"review"}
        assert sorted(scene.starts()) == sorted(t.id for t in tasks)  # each ran exactly once
        scene.assert_no_duplicates()
        sample = await client.get_task(tasks[0].id)
        assert sample is not None
        assert sample.assigned_to is not None
        assert sample.assigned_to.startswith("tester-")
        assert sample.files_changed == ["result.txt"]
        assert sample.loop_count == 1
        if board.options.comments_route:
            kinds = [c.comment_type for c in await comments_of(client, tasks[0].id)]
            # The summary alone: the start note waits for a first progress comment (the
            # run's heartbeat or session names it meanwhile), and these runs are short.
            assert kinds == ["summary"]
        else:
            assert sample.completion_notes  # the summary reached the task itself
        assert "completed=40" in repr(pool)
        slot_names = {t.assigned_to for t in (await client.list_tasks(limit=100)).tasks}
        assert len(slot_names) > 1  # the work was spread over several slots


async def test_exit_when_idle_returns_on_empty_queue(board: Any, scene: Scene) -> None:
    settings = worker_settings(board.url, board.api_key, scene, concurrency=4, exit_when_idle=True)
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: pool.state.draining, what="drain on an empty queue")


async def test_failing_task_ends_in_failed_status_after_max_attempts(
    board: Any, scene: Scene
) -> None:
    settings = worker_settings(board.url, board.api_key, scene, max_attempts=3)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="broken [fail]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.failed == 3, what="three failed attempts")
        final = await client.get_task(task.id)
        assert final is not None
        assert final.status == "blocked"
        assert final.error_count == 3
        assert final.completion_notes is not None
        assert final.completion_notes.startswith("Failed:")
        errors = [c for c in await comments_of(client, task.id) if c.comment_type == "error"]
        assert len(errors) == 3
        assert "exit" in errors[0].content.lower()
        assert len(scene.starts(task.id)) == 3  # it never loops past max attempts


async def test_failed_status_falls_back_to_review_where_blocked_is_refused(
    make_board: Any, scene: Scene
) -> None:
    board = await make_board(accept_blocked=False)
    settings = worker_settings(board.url, board.api_key, scene, max_attempts=1)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="broken [fail]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.failed == 1, what="a failed attempt")
        final = await client.get_task(task.id)
        assert final is not None
        assert final.status == "review"
        assert final.completion_notes is not None
        assert final.completion_notes.startswith("Failed:")


async def test_task_moved_back_by_a_person_mid_run_stops_the_agent(
    board: Any, scene: Scene
) -> None:
    settings = worker_settings(board.url, board.api_key, scene)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="long [hang]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: scene.starts(task.id), what="the agent to start")
            # Back to the backlog (todo would simply be claimed again, as it should).
            await client.update_task(task.id, status="backlog", assigned_to=None)
            await wait_for(
                lambda: any(e[0] == "stop" and e[1] == task.id for e in scene.entries()),
                what="the agent to be stopped",
            )
            await wait_for(lambda: not pool.running, what="the slot to be free")
            pool.drain()
        final = await client.get_task(task.id)
        assert final is not None
        assert (final.status, final.assigned_to, final.error_count) == ("backlog", None, 0)
        notes = [c.content for c in await comments_of(client, task.id)]
        assert any("moved to 'backlog'" in n for n in notes)
        pid = int(scene.entries()[0][2])
        assert not alive(pid)


async def test_deleted_task_stops_the_agent(board: Any, scene: Scene) -> None:
    settings = worker_settings(board.url, board.api_key, scene)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="doomed [hang]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: scene.starts(task.id), what="the agent to start")
            await client.delete_task(task.id)
            await wait_for(lambda: not pool.running, what="the slot to be free")
            pool.drain()
        assert await client.get_task(task.id) is None
        assert not alive(int(scene.entries()[0][2]))


async def test_api_down_mid_task_still_ends_correctly(make_board: Any, scene: Scene) -> None:
    board = await make_board()
    settings = worker_settings(board.url, board.api_key, scene)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="survivor [gate]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: scene.starts(task.id), what="the agent to start")
            await board.stop()  # the board goes away mid-task
            scene.open_gate()
            await wait_for(
                lambda: any(e[0] == "stop" for e in scene.entries()), what="the agent to end"
            )
            # The ending is being retried against a dead board; let it fail a few times.
            await wait_for(
                lambda: unanswered_requests(pool.metrics) >= 2,
                what="retries against the dead board",
            )
            await board.start()  # same port, same database
            await wait_for(lambda: pool.state.completed == 1, timeout=90, what="completion")
            pool.drain()
        final = await client.get_task(task.id)
        assert final is not None
        assert final.status == "review"


@pytest.mark.slow
async def test_three_processes_share_a_board_without_duplicates(board: Any, scene: Scene) -> None:
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        tasks = await add_tasks(client, 30)
        workers = [
            WorkerProcess(
                process_env(board.url, board.api_key, scene, BOT_NAME=f"proc{i}"),
                ["--concurrency", "3", "--exit-when-idle"],
                scene.root / f"worker{i}.log",
            )
            for i in range(3)
        ]
        try:
            codes = [await w.wait(timeout=100) for w in workers]
        finally:
            for w in workers:
                w.kill()
        assert codes == [0, 0, 0], [w.output()[-2000:] for w in workers]
        assert set((await statuses(client)).values()) == {"review"}
        assert sorted(scene.starts()) == sorted(t.id for t in tasks)
        scene.assert_no_duplicates()


@pytest.mark.slow
async def test_sigterm_drains_running_tasks_then_exits_zero(board: Any, scene: Scene) -> None:
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        gated = await add_tasks(client, 2, title="gated [gate]")
        worker = WorkerProcess(
            process_env(board.url, board.api_key, scene, BOT_NAME="drainer"),
            ["--concurrency", "2"],
            scene.root / "worker.log",
        )
        try:
            await wait_for(lambda: len(scene.starts()) == 2, what="both agents to start")
            await add_tasks(client, 1, title="late")  # must not be claimed after SIGTERM
            worker.signal(signal.SIGTERM)
            await wait_for(lambda: "draining" in worker.output(), what="the drain to begin")
            scene.open_gate()
            assert await worker.wait() == 0, worker.output()[-3000:]
        finally:
            worker.kill()
        final = await statuses(client)
        assert [final[t.id] for t in gated] == ["review", "review"]
        assert list(final.values()).count("todo") == 1  # the late task was left alone
        out = worker.output()
        assert "2 completed" in out
        assert "stopped" in out


@pytest.mark.slow
async def test_second_sigterm_releases_running_tasks(board: Any, scene: Scene) -> None:
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        tasks = await add_tasks(client, 2, title="endless [hang]")
        worker = WorkerProcess(
            process_env(board.url, board.api_key, scene, BOT_NAME="releaser"),
            ["--concurrency", "2"],
            scene.root / "worker.log",
        )
        try:
            await wait_for(lambda: len(scene.starts()) == 2, what="both agents to start")
            worker.signal(signal.SIGTERM)
            await wait_for(lambda: "draining" in worker.output(), what="the drain to begin")
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0, worker.output()[-3000:]
        finally:
            worker.kill()
        for task in tasks:
            final = await client.get_task(task.id)
            assert final is not None
            assert (final.status, final.assigned_to, final.error_count) == ("todo", None, 0)
            notes = [c.content for c in await comments_of(client, task.id)]
            assert any(n.startswith("Released:") and "No attempt" in n for n in notes)
        for entry in scene.entries():
            assert not alive(int(entry[2]))
        assert "2 released" in worker.output()


@pytest.mark.slow
async def test_sigkill_then_restart_recovers_the_task(any_board: BoardHandle, scene: Scene) -> None:
    board = any_board
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        (task,) = await add_tasks(client, 1, title="interrupted [gate]")
        env = process_env(board.url, board.api_key, scene, BOT_NAME="phoenix")
        first = WorkerProcess(env, ["--concurrency", "1"], scene.root / "first.log")
        try:
            await wait_for(lambda: scene.starts(task.id), what="the agent to start")
            first.proc.kill()  # SIGKILL: no chance to clean up
            await first.wait()
        finally:
            first.kill()
        stuck = await client.get_task(task.id)
        assert stuck is not None
        assert stuck.status == "in_progress"
        # The agent runs in a session of its own, so the SIGKILL cannot reach it; the
        # parent-death signal stops it with its worker (no overlap with a lease rerun).
        orphan = int(scene.entries()[0][2])
        await wait_for(lambda: not alive(orphan), what="the agent to die with its worker")
        second = WorkerProcess(
            env, ["--concurrency", "1", "--exit-when-idle"], scene.root / "second.log"
        )
        try:
            await wait_for(lambda: len(scene.starts(task.id)) == 2, what="the rerun to start")
            scene.open_gate()
            assert await second.wait() == 0, second.output()[-3000:]
        finally:
            second.kill()
        scene.assert_no_duplicates()
        final = await client.get_task(task.id)
        assert final is not None
        assert final.status == "review"
        assert final.error_count == 1  # the crashed run counted as an attempt
        if board.options.comments_route:
            errors = [c for c in await comments_of(client, task.id) if c.comment_type == "error"]
            assert any("stopped unexpectedly" in c.content for c in errors)


async def test_lease_releases_tasks_of_a_silent_worker_but_never_a_persons(
    board: Any, scene: Scene
) -> None:
    from datetime import UTC, datetime, timedelta

    settings = worker_settings(board.url, board.api_key, scene)
    async with BoardClient.from_settings(settings) as client:
        ghost_task, person_task = await add_tasks(client, 2, title="held")
        await client.heartbeat("ghost-1", "working", ghost_task.id)
        assert await client.claim(ghost_task.id, "ghost-1") is not None
        await client.update_task(person_task.id, status="in_progress", assigned_to="alice")
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        board.store.backdate(ghost_task.id, "ghost-1", long_ago)
        board.store.backdate(person_task.id, None, long_ago)
        from taskinfa_worker.pool.recovery import LeaseSweeper
        from taskinfa_worker.pool.reporting import TaskReporter
        from taskinfa_worker.redact import Redactor

        sweeper = LeaseSweeper(
            client, TaskReporter(client, Redactor(), 3), {}, lease_timeout=300, author="tester"
        )
        assert await sweeper.sweep()
        ghost = await client.get_task(ghost_task.id)
        person = await client.get_task(person_task.id)
        assert ghost is not None
        assert (ghost.status, ghost.error_count) == ("todo", 1)
        assert person is not None
        assert (person.status, person.assigned_to) == (
            "in_progress",
            "alice",
        )


async def test_a_key_revoked_mid_run_stops_the_pool_through_a_progress_comment(
    make_board: Any, scene: Scene
) -> None:
    # No heartbeat route, no takeaway check or lease sweep within the test: the progress
    # comment is the only request that can meet the revoked key. It must stop the pool
    # (exit status 3), not be logged as "progress comment not posted" while the agent runs on.
    board = await make_board(heartbeat_route=False)
    settings = worker_settings(
        board.url,
        board.api_key,
        scene,
        progress_interval=0.1,
        cancel_check_interval=3600,
        lease_timeout=7200,
    )
    redactor = Redactor([settings.taskinfa_api_key])
    async with BoardClient.from_settings(settings, Metrics()) as client:
        task = await client.create_task("talks a lot [chatty]", "default")
        pool = build_pool(settings, client, Metrics(), redactor, handle_signals=False)

        async def revoke_after_first_progress() -> None:
            async def progressed() -> bool:
                comments = await comments_of(client, task.id)
                return any(c.content.startswith("Working") for c in comments)

            await wait_for(progressed, what="a progress comment")
            board.store.revoke_api_key(board.api_key)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(revoke_after_first_progress)
                code = await pool.run()
    assert code == EXIT_AUTH
    assert len(pool.running) == 0
    stops = [e for e in scene.entries() if e[0] == "stop" and e[1] == task.id]
    assert len(stops) == 1  # the agent was stopped, not left talking
    assert board.store.get_task(task.id)["status"] == "in_progress"  # nothing could be written


@pytest.mark.slow
async def test_a_key_revoked_mid_run_ends_the_process_with_status_3(
    board: Any, scene: Scene
) -> None:
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        task = await client.create_task("talks a lot [chatty]", "default")
    worker = WorkerProcess(
        process_env(board.url, board.api_key, scene, BOT_NAME="revoked"),
        ["--concurrency", "2"],
        scene.root / "worker.log",
    )
    try:
        await wait_for(lambda: scene.starts(task.id), what="the agent to start")
        board.store.revoke_api_key(board.api_key)
        assert await worker.wait() == EXIT_AUTH, worker.output()[-3000:]
    finally:
        worker.kill()
    out = worker.output()
    assert "refused the API key" in out
    assert "Traceback" not in out
    assert board.api_key not in out
    assert [e[0] for e in scene.entries() if e[1] == task.id] == ["start", "stop"]


@pytest.mark.slow
async def test_a_persons_move_hands_a_task_to_another_process_without_overlap(
    any_board: BoardHandle, scene: Scene
) -> None:
    board = any_board
    # Default check interval (30 s): the first worker learns late that its task is gone,
    # so the second one's agent must wait for the first one's stop note.
    env = process_env(board.url, board.api_key, scene)
    del env["CANCEL_CHECK_INTERVAL"]
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        (task,) = await add_tasks(client, 1, title="long [hang]")
        alpha = WorkerProcess({**env, "BOT_NAME": "alpha"}, [], scene.root / "alpha.log")
        beta: WorkerProcess | None = None
        try:
            await wait_for(lambda: scene.starts(task.id), what="alpha's agent to start")
            beta = WorkerProcess({**env, "BOT_NAME": "beta"}, [], scene.root / "beta.log")
            await client.update_task(task.id, status="todo", assigned_to=None)  # a person
            await wait_for(lambda: len(scene.starts(task.id)) == 2, timeout=90, what="beta")
            # Beta's agent started only after alpha's had stopped.
            kinds = [e[0] for e in scene.entries() if e[1] == task.id]
            assert kinds == ["start", "stop", "start"], scene.entries()
            if board.options.comments_route:
                notes = [c.content for c in await comments_of(client, task.id)]
                assert any(n.startswith("Stopped by alpha-1") for n in notes)
            assert "waiting up to" in beta.output()
            assert (await client.get_task(task.id)).assigned_to == "beta-1"
        finally:
            alpha.kill()
            if beta is not None:
                beta.kill()


@pytest.mark.slow
async def test_a_task_that_reached_review_before_is_handed_over_without_overlap_too(
    any_board: BoardHandle, scene: Scene
) -> None:
    # The real releases set started_at and completed_at the first time only: once a task has
    # been in review, completed_at > started_at for good, whatever runs it later. The fence
    # must still see the second run when a person moves the task away in the middle of it.
    board = any_board
    env = process_env(board.url, board.api_key, scene)
    del env["CANCEL_CHECK_INTERVAL"]  # alpha learns late (30 s) that its task is gone
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        (task,) = await add_tasks(client, 1, title="fix it")
        alpha = WorkerProcess({**env, "BOT_NAME": "alpha"}, [], scene.root / "alpha.log")
        beta: WorkerProcess | None = None
        try:

            async def reviewed() -> bool:
                return (await client.get_task(task.id)).status == "review"

            await wait_for(reviewed, what="the first run to reach review")
            # A person sends it back with more to do (the marker makes the next run last).
            await client.update_task(
                task.id, status="todo", assigned_to=None, title="fix it again [hang]"
            )
            await wait_for(lambda: len(scene.starts(task.id)) == 2, what="alpha's second run")
            if board.options.timestamps_once:
                again = await client.get_task(task.id)
                assert again.started_at is not None
                assert again.completed_at is not None
                # Read as "ended" (seconds: on a quick first run both may be the same second).
                assert again.completed_at >= again.started_at
            beta = WorkerProcess({**env, "BOT_NAME": "beta"}, [], scene.root / "beta.log")
            await client.update_task(task.id, status="todo", assigned_to=None)  # a person
            await wait_for(lambda: len(scene.starts(task.id)) == 3, timeout=90, what="beta")
            # Beta's agent started only after alpha's second one had stopped.
            kinds = [e[0] for e in scene.entries() if e[1] == task.id]
            assert kinds == ["start", "stop", "start", "stop", "start"], scene.entries()
            assert "waiting up to" in beta.output()
            assert (await client.get_task(task.id)).assigned_to == "beta-1"
        finally:
            alpha.kill()
            if beta is not None:
                beta.kill()


async def test_a_stop_never_overwrites_the_notes_of_a_task_a_person_took_over(
    make_board: Any, scene: Scene
) -> None:
    # The worker-era release has no comments: notes are the only place a worker can write,
    # and after a person's move they are the person's.
    board = await make_board(profile="v1")
    settings = worker_settings(board.url, board.api_key, scene)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="long [hang]")
        await client.update_task(task.id, status="todo")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: scene.starts(task.id), what="the agent to start")
            await client.update_task(
                task.id, status="backlog", assigned_to=None, completion_notes="Dana: paused."
            )
            await wait_for(
                lambda: any(e[0] == "stop" and e[1] == task.id for e in scene.entries()),
                what="the agent to be stopped",
            )
            await wait_for(lambda: not pool.running, what="the slot to be free")
        final = await client.get_task(task.id)
    assert final is not None
    assert (final.status, final.completion_notes) == ("backlog", "Dana: paused.")
