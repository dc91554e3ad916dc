"""status.log: one line per slot, replaced atomically."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import anyio
import pytest

from taskinfa_worker.pool.state import PoolState, SlotState
from taskinfa_worker.status_file import TITLE_WIDTH, StatusFile, StatusWriter, render, snapshot


def make_state(slots: int = 3) -> PoolState:
    return PoolState("bot", [SlotState(f"bot-{i}") for i in range(1, slots + 1)])


def test_one_line_per_slot_with_name_status_task_title_and_since(tmp_path: Path) -> None:
    state = make_state()
    state.slots[0].set("working", "task_abc", "Fix the\nlogin\tbug")
    state.slots[2].set("working", "task_xyz", "x" * 200)
    state.completed, state.failed, state.released = 4, 1, 2
    status = StatusFile(tmp_path / "bot" / "status.log")
    status.write(state)
    header, counters, *lines = status.read().splitlines()
    assert header.startswith("# taskinfa-worker bot  pid ")
    assert counters.startswith("# 2/3 slots busy  completed 4  failed 1  released 2")
    assert "board not ready" in counters
    assert len(lines) == 3
    assert lines[0].split()[:4] == ["bot-1", "working", "task_abc", "since"]
    assert lines[0].endswith("Fix the login bug")  # user text kept on one line
    assert lines[1].split()[:3] == ["bot-2", "idle", "-"]
    assert lines[2].split()[:3] == ["bot-3", "working", "task_xyz"]
    title = lines[2].split("  ")[-1]
    assert len(title) == TITLE_WIDTH
    assert title.endswith("…")


def test_flags_show_drain_and_board(tmp_path: Path) -> None:
    state = make_state(1)
    state.board_ready = True
    state.draining = True
    counters = render(snapshot(state)).splitlines()[1]
    assert counters.endswith("draining  board ready")


def test_readable_by_others_and_no_temporary_files_left(tmp_path: Path) -> None:
    status = StatusFile(tmp_path / "status.log")
    status.write(make_state())
    status.write(make_state())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["status.json", "status.log"]
    assert stat.S_IMODE(status.path.stat().st_mode) == 0o644
    assert status.age() >= 0


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    status = StatusFile(tmp_path / "status.log")
    status.write_text("before\n")
    with pytest.raises(UnicodeEncodeError):
        status.write_text("half \ud800 written")  # cannot be encoded: fails mid-write
    assert status.read() == "before\n"
    assert [path.name for path in tmp_path.iterdir()] == ["status.log"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    status = StatusFile(tmp_path / "status.log")
    versions = [f"version {n}\n" + ("slot line\n" * 2000) for n in range(5)]
    status.write_text(versions[0])
    done = threading.Event()
    seen: list[str] = []

    def read_continuously() -> None:
        while not done.is_set():
            seen.append(status.read())

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for round_ in range(200):
            status.write_text(versions[round_ % len(versions)])
    finally:
        done.set()
        reader.join(timeout=10)
    assert seen
    assert all(text in versions for text in seen)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StatusFile(tmp_path / "status.log").read()


class CountingFile(StatusFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes = 0

    def write(self, state: PoolState) -> None:
        self.writes += 1
        super().write(state)


async def test_a_burst_of_changes_is_one_write_and_the_last_state_is_on_disk(
    tmp_path: Path,
) -> None:
    # 256 slots ending at once change the state 512 times; the file follows in a few
    # writes, each of the state at that moment, and nothing is left unwritten.
    state = make_state(256)
    file = CountingFile(tmp_path / "status.log")
    writer = StatusWriter(file, lambda: state, interval=3600)  # no second write by time
    async with anyio.create_task_group() as group:
        group.start_soon(writer.run)
        writer.changed()
        while file.writes == 0:  # the first change is written at once
            await anyio.sleep(0)
        for slot in state.slots:
            slot.set("working", "task_1", "t")
            writer.changed()
            slot.set("idle", None, None)
            writer.changed()
        state.completed = 256
        for _ in range(20):  # give the writer every chance to run
            await anyio.sleep(0)
        assert file.writes == 1  # the burst waits for the interval...
        group.cancel_scope.cancel()
    writer.flush()  # ...and the pool's stop writes what is pending
    assert file.writes == 2
    assert "completed 256" in file.read()
    writer.flush()
    assert file.writes == 2  # nothing pending, nothing written
