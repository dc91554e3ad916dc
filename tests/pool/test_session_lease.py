"""Recovery without ``/workers`` (the current release, v2): a dead run's session goes silent
and its task comes back; a person's task and a live worker's are never touched."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.pool.session_lease import SessionLease
from taskinfa_worker.pool.sessions import owner_mark
from taskinfa_worker.redact import Redactor
from tests.board_support import FakeClock, MakeBoard
from tests.pool.support import (
    Scene,
    WorkerProcess,
    alive,
    process_env,
    wait_for,
    worker_settings,
)
from tests.pool.test_pool import add_tasks, comments_of

LEASE = 300.0


async def test_only_the_task_of_a_silent_session_is_released(
    make_board: MakeBoard, scene: Scene
) -> None:
    # Everything starts an hour ago on the board's clock; the live session is then renewed.
    clock = FakeClock(time.time() - 3600)
    board = await make_board(profile="v2", clock=clock)
    records = board.agent_records
    # The dead worker's task, a person's, a live worker's, and one the dead worker ran but a
    # person took over (its session names another holder).
    ghost, person, live, moved = (
        board.create_task(title, status="in_progress", assigned_to=holder)
        for title, holder in (
            ("ghost", "pod-a-1"),
            ("person", "alice"),
            ("live", "pod-c-1"),
            ("moved", "bob"),
        )
    )
    sessions = {}
    for task, slot in ((ghost, "pod-a-1"), (live, "pod-c-1"), (moved, "pod-a-1")):
        summary = f"{owner_mark(slot, task['id'])}: {task['title']}"
        sessions[task["id"]] = records.create_session(current_task_id=task["id"], summary=summary)[
            "id"
        ]
    clock.now = time.time()
    records.update_session(sessions[live["id"]], {"last_event_at": board.store.now()})

    settings = worker_settings(board.url, board.api_key, scene, bot_name="pod-b")
    async with BoardClient.from_settings(settings) as client:
        lease = SessionLease(
            client, TaskReporter(client, Redactor(), 3), set(), {"pod-b-1"}, LEASE, "pod-b"
        )
        assert await lease.sweep()
        states = {t["id"]: board.store.get_task(t["id"]) for t in (ghost, person, live, moved)}
        assert (states[ghost["id"]]["status"], states[ghost["id"]]["error_count"]) == ("todo", 1)
        notes = [c.content for c in await comments_of(client, ghost["id"])]
        assert any("showed no sign of life in its session" in n for n in notes)
        for kept, holder in ((person, "alice"), (live, "pod-c-1"), (moved, "bob")):
            assert (states[kept["id"]]["status"], states[kept["id"]]["assigned_to"]) == (
                "in_progress",
                holder,
            )
    assert records.get_session(sessions[ghost["id"]])["status"] == "error"
    assert records.get_session(sessions[live["id"]])["status"] == "active"
    # The dead worker's other session is over too: its task is a person's now.
    assert records.get_session(sessions[moved["id"]])["status"] == "error"


@pytest.mark.slow
async def test_sigkill_then_another_name_recovers_the_task_but_not_a_live_workers(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v2")
    lease = "4"
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        (task,) = await add_tasks(client, 1, title="interrupted [gate]")
        dead_env = process_env(
            board.url, board.api_key, scene, BOT_NAME="pod-a", LEASE_TIMEOUT=lease
        )
        dead = WorkerProcess(dead_env, ["--concurrency", "1"], scene.root / "a.log")
        live: WorkerProcess | None = None
        other: WorkerProcess | None = None
        try:
            await wait_for(lambda: scene.starts(task.id), what="the first agent to start")
            # Started once pod-a is busy, so the next task is pod-c's.
            live_env = {**dead_env, "BOT_NAME": "pod-c"}
            live = WorkerProcess(live_env, ["--concurrency", "1"], scene.root / "c.log")
            (held,) = await add_tasks(client, 1, title="long [hang]")
            await wait_for(lambda: scene.starts(held.id), what="the live worker's agent")
            dead.proc.kill()  # SIGKILL: no chance to end its session
            await dead.wait()
            orphan = int(scene.entries()[0][2])
            await wait_for(lambda: not alive(orphan), what="the agent to die with its worker")
            scene.open_gate()
            other_env = {**dead_env, "BOT_NAME": "pod-b"}
            other = WorkerProcess(other_env, ["--concurrency", "1"], scene.root / "b.log")

            async def reviewed() -> bool:
                now = await client.get_task(task.id)
                return now is not None and now.status == "review"

            await wait_for(reviewed, what="the task run to review by pod-b")
            final = await client.get_task(task.id)
            assert final is not None
            assert (final.assigned_to, final.error_count) == ("pod-b-1", 1)
            notes = [c.content for c in await comments_of(client, task.id)]
            # Released by whichever live worker swept first (pod-b, or pod-c beside its run);
            # the attempt is counted once however many saw it (error_count above).
            released = [n for n in notes if "showed no sign of life in its session" in n]
            assert released, notes
            assert "Its worker pod-a-1 showed" in released[0]
            assert f"(lease {lease} s)" in released[0]
            # The live worker's task, as old as the dead one's, was never touched.
            kept = await client.get_task(held.id)
            assert kept is not None
            assert (kept.status, kept.assigned_to) == ("in_progress", "pod-c-1")
            assert len(scene.starts(held.id)) == 1
        finally:
            for process in (dead, live, other):
                if process is not None:
                    process.kill()
    sessions = board.agent_records.list_sessions()
    (ended,) = [s for s in sessions if (s["summary"] or "").startswith("Its worker pod-a-1")]
    assert ended["status"] == "error"
    (running,) = [s for s in sessions if s["current_task_id"] == held.id]
    assert running["status"] == "active"
    assert running["summary"].startswith(owner_mark("pod-c-1", held.id))
