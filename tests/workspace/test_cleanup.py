"""Cleanup after success, failure, cancellation, timeouts and crashes; locks across processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from taskinfa_worker.errors import WorkspaceError
from taskinfa_worker.workspace.cleanup import remove_if_empty
from taskinfa_worker.workspace.git import GitTimeoutError
from taskinfa_worker.workspace.locks import FileLock
from taskinfa_worker.workspace.safety import safe_name
from tests.workspace.support import (
    git_children,
    hanging_server,
    make_manager,
    make_origin,
    project,
    task,
    tree_entries,
)

WAIT = 20.0  # upper bound for conditions that normally hold within milliseconds


def mirror_lock(workspace_dir: Path, url: str, project_id: str = "proj_1") -> Path:
    key = f"{safe_name(project_id)}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    return workspace_dir / "repos" / f"{key}.lock"


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


def lock_is_free(path: Path) -> bool:
    lock = FileLock(path)
    if not lock.try_acquire():
        return False
    lock.release()
    return True


@asynccontextmanager
async def lock_held_by_another_process(path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A separate process holding ``flock`` on ``path`` until the block ends."""
    code = textwrap.dedent(
        f"""
        import fcntl, os, sys
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"locked\n"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_discard_after_a_failed_agent_removes_everything(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws")
    ws = await manager.prepare(task(), project(str(origin)))
    # The agent failed half-way and left read-only files and folders behind.
    locked = ws.path / "build" / "locked"
    locked.mkdir(parents=True)
    (locked / "artifact").write_text("x")
    (locked / "artifact").chmod(0o400)
    locked.chmod(0o500)
    await manager.discard(ws)
    assert tree_entries(tmp_path / "ws" / "tasks") == []
    await manager.discard(ws)  # twice is harmless


async def test_cancel_while_git_hangs_kills_git_and_releases_the_lock(tmp_path: Path) -> None:
    async with hanging_server() as server:
        url = server.url()
        manager = make_manager(tmp_path / "ws", git_timeout=60.0)
        preparing = asyncio.create_task(manager.prepare(task(), project(url)))
        await asyncio.wait_for(server.connected.wait(), WAIT)
        assert git_children(), "git should be running against the hanging server"
        preparing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await preparing
        assert git_children() == []
        assert lock_is_free(mirror_lock(tmp_path / "ws", url))
        assert tree_entries(tmp_path / "ws" / "tasks") == []
    # The same manager still works afterwards.
    origin = make_origin(tmp_path)
    ws = await manager.prepare(task(), project(str(origin), "proj_2"))
    await manager.discard(ws)
    await manager.prune_stale()  # and removes the half clone the kill left behind
    assert [name for name in tree_entries(tmp_path / "ws" / "repos") if ".tmp" in name] == []


async def test_a_hung_remote_times_out_without_blocking_other_projects(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    async with hanging_server() as server:
        manager = make_manager(tmp_path / "ws", git_timeout=3.0)
        hung = asyncio.create_task(manager.prepare(task("task_hung"), project(server.url())))
        await asyncio.wait_for(server.connected.wait(), WAIT)
        # Another project of another slot prepares while the first one is stuck.
        other = await manager.prepare(task("task_ok"), project(str(origin), "proj_2"))
        assert not hung.done()
        with pytest.raises(GitTimeoutError, match="longer than 3 s"):
            await hung
        assert git_children() == []
        assert lock_is_free(mirror_lock(tmp_path / "ws", server.url()))
        await manager.discard(other)
    assert tree_entries(tmp_path / "ws" / "tasks") == []


async def test_cancel_while_waiting_for_another_process_lock(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    url = str(origin)
    manager = make_manager(tmp_path / "ws")
    await manager.prune_stale()  # creates the folders
    lock_path = mirror_lock(tmp_path / "ws", url)
    async with lock_held_by_another_process(lock_path) as holder:
        preparing = asyncio.create_task(manager.prepare(task(), project(url)))
        tasks_dir = tmp_path / "ws" / "tasks"
        await wait_for(lambda: any(n.endswith(".lock") for n in tree_entries(tasks_dir)))
        assert not preparing.done()
        preparing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await preparing
        assert tree_entries(tasks_dir) == []
        assert holder.returncode is None
        assert not lock_is_free(lock_path)  # the other process still holds its lock
    # Once the other process is gone, the lock is free again and preparing works.
    ws = await manager.prepare(task(), project(url))
    await manager.discard(ws)


CHILD_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from tests.workspace.support import make_manager, project, task
    from pathlib import Path

    async def main():
        manager = make_manager(Path(sys.argv[1]))
        ws = await manager.prepare(task(sys.argv[3]), project(sys.argv[2]))
        (ws.path / "half-done.txt").write_text("the agent was working")
        print(ws.path, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)


@asynccontextmanager
async def worker_process(
    workspace_dir: Path, url: str, task_id: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """Another worker process on the same workspace volume, in the middle of a task."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD_WORKER,
        str(workspace_dir),
        url,
        task_id,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the child worker did not prepare its workspace"
        yield proc, Path(line.decode().strip())
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_prune_removes_only_trees_of_dead_processes(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    workspace_dir = tmp_path / "ws"
    here = make_manager(workspace_dir)
    mine = await here.prepare(task("task_here"), project(str(origin)))
    async with (
        worker_process(workspace_dir, str(origin), "task_alive") as (_alive, alive_tree),
        worker_process(workspace_dir, str(origin), "task_dead") as (dead, dead_tree),
    ):
        dead.send_signal(signal.SIGKILL)  # a crash: no discard, no cleanup
        await dead.wait()
        half_clone = workspace_dir / "repos" / "proj_1-000000000000.git.tmp"
        half_clone.mkdir()
        assert dead_tree.is_dir()

        # A worker restarting on the shared volume prunes before its slots start.
        await make_manager(workspace_dir).prune_stale()

        assert not dead_tree.exists()
        assert not dead_tree.with_name(dead_tree.name + ".lock").exists()
        assert (alive_tree / "half-done.txt").exists()  # the other process is still working
        assert mine.path.is_dir()  # so is this one
        assert not half_clone.exists()
    # The live child ended without discarding: its tree is now stale as well.
    await here.prune_stale()
    assert not alive_tree.exists()
    assert mine.path.is_dir()
    await here.discard(mine)
    assert tree_entries(workspace_dir / "tasks") == []


async def test_file_lock_is_exclusive_and_survives_unlink_races(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    with pytest.raises(WorkspaceError, match="held by another worker"):
        await second.acquire(timeout=0.1)
    first.release(unlink=True)
    assert not path.exists()
    assert second.try_acquire()  # a new file, a new lock
    assert path.exists()
    second.release()


def test_the_quick_removal_takes_only_empty_folders_inside_the_workspace(tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    empty, full = root / "tasks" / "empty", root / "tasks" / "full"
    empty.mkdir(parents=True)
    full.mkdir()
    (full / "kept.txt").write_text("x")
    assert remove_if_empty(empty, root)
    assert not empty.exists()
    assert not remove_if_empty(full, root)  # content: left for remove_tree, in a thread
    assert (full / "kept.txt").exists()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(WorkspaceError):
        remove_if_empty(outside, root)
    assert outside.exists()
