"""The board's SQLite store on its own: the claim across connections, key hashing, the
schema on disk, timestamps from the clock, comment cleanup and heartbeat counting."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskinfa_worker.board.problems import Conflict, Invalid, NotFound
from taskinfa_worker.board.quota import SlidingWindowLimiter
from taskinfa_worker.board.store import BoardStore, hash_key, slugify
from tests.board_support import FakeClock


def test_claim_is_atomic_across_connections(tmp_path: Path) -> None:
    # Two connections to one file, like two board processes, and threads racing on each
    # task: the conditional UPDATE must leave exactly one winner per task.
    db = tmp_path / "race.db"
    first, second = BoardStore(db), BoardStore(db)
    try:
        tasks = [first.create_task(f"t{i}")["id"] for i in range(20)]
        racers = 16
        for task_id in tasks:
            barrier = threading.Barrier(racers)

            def claim(n: int, task_id: str = task_id, barrier: threading.Barrier = barrier) -> str:
                store = first if n % 2 else second
                barrier.wait()
                try:
                    store.claim_task(task_id, f"w-{n}")
                except Conflict:
                    return "lost"
                return "won"

            with ThreadPoolExecutor(racers) as pool:
                results = list(pool.map(claim, range(racers)))
            assert results.count("won") == 1, (task_id, results)
            assert results.count("lost") == racers - 1
            winner = second.get_task(task_id)
            assert winner["status"] == "in_progress"
            assert winner["assigned_to"] is not None
    finally:
        first.close()
        second.close()


def test_claim_of_unknown_task_is_not_found(store: BoardStore) -> None:
    with pytest.raises(NotFound):
        store.claim_task("task_nope", "w")


def test_only_the_key_hash_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    key = "tk_test_plaintext_never_on_disk"
    with BoardStore(db) as store:
        assert not store.has_api_keys()
        store.add_api_key(key)
        store.add_api_key(key)  # idempotent
        assert store.has_api_keys()
        assert store.workspace_for_key(key) == "default"
        assert store.workspace_for_key(key + "x") is None
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert key.encode() not in on_disk
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT key_hash, workspace_id FROM api_keys").fetchall()
    raw.close()
    assert rows == [(hash_key(key), "default")]
    with BoardStore(db) as reopened:  # a fresh process knows the key from its hash
        assert reopened.workspace_for_key(key) == "default"


def test_schema_wal_and_default_task_list_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "board.db"
    with BoardStore(db) as store:
        task = store.create_task("kept")
    with BoardStore(db) as store:
        assert [t["id"] for t in store.list_task_lists()] == ["default"]
        assert store.get_task(task["id"])["title"] == "kept"
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    finally:
        raw.close()
    assert "tasks_next" in indexes


def test_an_earlier_boards_model_tables_make_way_for_the_releases(tmp_path: Path) -> None:
    # The tables of the board before it kept the release's shape: opening the file replaces
    # them (they held nothing a person could have set), and everything else stays.
    db = tmp_path / "old.db"
    with BoardStore(db) as store:
        task = store.create_task("kept")
    raw = sqlite3.connect(db)
    raw.executescript(
        "DROP TABLE llm_session_config; DROP TABLE llm_providers;"
        "CREATE TABLE llm_providers (id TEXT PRIMARY KEY, name TEXT NOT NULL);"
        "CREATE TABLE llm_models (workspace_id TEXT, task_list_id TEXT, model TEXT);"
    )
    raw.close()
    with BoardStore(db) as store:
        assert store.get_task(task["id"])["title"] == "kept"
        names = {
            row["name"]
            for row in store.rows("SELECT name FROM pragma_table_info(?)", ("llm_providers",))
        }
        assert {"provider", "auth_token"} <= names
        assert not store.rows("SELECT 1 FROM sqlite_master WHERE name = 'llm_models'")
        assert store.rows("SELECT 1 FROM sqlite_master WHERE name = 'llm_session_config'")


def test_a_file_from_before_the_card_columns_gets_them_with_its_comment_counts(
    tmp_path: Path,
) -> None:
    # A file of the board before tasks kept their card's version and comment count: the
    # version was bumped by one trigger per table, comments counted at every read.
    db = tmp_path / "old.db"
    with BoardStore(db) as store:
        task = store.create_task("kept")
        for n in range(2):
            store.add_comment(task["id"], author="w", content=f"{n}", comment_type="progress")
    raw = sqlite3.connect(db)
    bump = "BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'; END;"
    old_triggers = (
        f"CREATE TRIGGER version_on_tasks_insert AFTER INSERT ON tasks {bump}"
        f"CREATE TRIGGER version_on_tasks_update AFTER UPDATE ON tasks {bump}"
        f"CREATE TRIGGER version_on_tasks_delete AFTER DELETE ON tasks {bump}"
        f"CREATE TRIGGER version_on_comments_insert AFTER INSERT ON comments {bump}"
    )
    raw.executescript(
        "DROP TRIGGER card_on_tasks_insert; DROP TRIGGER card_on_tasks_update;"
        "DROP TRIGGER card_on_tasks_delete; DROP TRIGGER card_on_comments_insert;"
        "DROP TRIGGER card_on_comments_delete; DROP INDEX tasks_by_board_version;"
        "DROP TABLE removed_tasks; ALTER TABLE tasks DROP COLUMN comment_count;"
        "ALTER TABLE tasks DROP COLUMN board_version;" + old_triggers
    )
    raw.close()
    with BoardStore(db) as store:
        (card,), _ = store.list_cards(("id", "comment_count"), limit=10)
        assert card == {"id": task["id"], "comment_count": 2, "files_changed": 0, "seq": 1}
        before = store.version()
        store.add_comment(task["id"], author="w", content="2", comment_type="progress")
        # One bump for the comment (the old comment trigger would have made it two).
        assert store.version() == before + 1
        (card,), _ = store.list_cards(("id", "comment_count"), limit=10, changed_after=before)
        assert card["comment_count"] == 3
        store.delete_task(task["id"])
        assert store.removed_since(before) == [task["id"]]


def test_timestamps_come_from_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(now=86_400 + 3_723.9)
    with BoardStore(tmp_path / "b.db", clock=clock) as store:
        task = store.create_task("t")
        assert task["created_at"] == task["updated_at"] == "1970-01-02 01:02:03"
        clock.advance(60)
        claimed = store.claim_task(task["id"], "w")
        assert claimed["started_at"] == "1970-01-02 01:03:03"


def test_slugs() -> None:
    assert slugify("My Web App!") == "my-web-app"
    assert slugify("  --Ünïcode & stuff--  ") == "n-code-stuff"
    assert slugify("API v2.0") == "api-v2-0"
    assert slugify("!!!") == ""


def test_task_list_conflict_and_bad_name(store: BoardStore) -> None:
    store.create_task_list("Web")
    with pytest.raises(Conflict):
        store.create_task_list("WEB")
    with pytest.raises(Invalid):
        store.create_task_list("???")
    with pytest.raises(Invalid, match="Task list not found"):
        store.create_task("t", "nope")


def test_deleting_a_task_deletes_its_comments(store: BoardStore) -> None:
    task = store.create_task("t")
    store.add_comment(task["id"], author="w", content="hi", comment_type="progress")
    assert store.list_comments(task["id"])[1] == 1
    store.delete_task(task["id"])
    with pytest.raises(NotFound):
        store.list_comments(task["id"])
    assert store._query("SELECT COUNT(*) FROM comments")[0][0] == 0
    with pytest.raises(NotFound):
        store.delete_task(task["id"])


def test_heartbeat_counts_finished_tasks_like_the_real_server(store: BoardStore) -> None:
    store.heartbeat("w", "working", "task_a")
    assert store.heartbeat("w", "idle")["total_tasks_completed"] == 1
    assert store.heartbeat("w", "idle")["total_tasks_completed"] == 1  # idle → idle
    store.heartbeat("w", "working")  # working without a task
    assert store.heartbeat("w", "idle")["total_tasks_completed"] == 1
    store.heartbeat("w", "working", "task_b")
    assert store.heartbeat("w", "idle")["total_tasks_completed"] == 2
    workers, stats = store.list_workers()
    assert [w["name"] for w in workers] == ["w"]
    assert stats["idle"] == 1


def test_limiter_window_and_headers() -> None:
    clock = FakeClock(now=0.0)
    limiter = SlidingWindowLimiter(2, window=60, clock=clock)
    assert limiter.hit("k").remaining == 1
    clock.advance(59)
    assert limiter.hit("k").remaining == 0
    refused = limiter.hit("k")
    assert (refused.allowed, refused.retry_after) == (False, 1)
    assert refused.headers()["X-RateLimit-Reset"] == "1970-01-01T00:01:00.000Z"
    assert limiter.hit("other").allowed
    clock.advance(1)
    assert limiter.hit("k").allowed
    with pytest.raises(ValueError, match="at least 1"):
        SlidingWindowLimiter(0)


def test_backdate_ages_a_claim_and_a_worker(tmp_path: Path) -> None:
    clock = FakeClock(now=datetime(2030, 1, 1, 12, 0, tzinfo=UTC).timestamp())
    with BoardStore(tmp_path / "b.db", clock=clock) as store:
        task = store.create_task("t")
        store.claim_task(task["id"], "w")
        store.heartbeat("w", "working", task["id"])
        store.backdate(task["id"], "w", datetime(2030, 1, 1, 11, 0, tzinfo=UTC))
        aged = store.get_task(task["id"])
        assert aged["started_at"] == aged["updated_at"] == "2030-01-01 11:00:00"
        (worker,), _stats = store.list_workers()
        assert (worker["status"], worker["last_heartbeat"]) == ("offline", "2030-01-01 11:00:00")
        store.backdate(None, None, datetime(2000, 1, 1, tzinfo=UTC))  # nothing to do
        with pytest.raises(NotFound):
            store.backdate("task_nope", None, datetime(2030, 1, 1, tzinfo=UTC))
        with pytest.raises(NotFound):
            store.backdate(None, "nobody", datetime(2030, 1, 1, tzinfo=UTC))
