"""SQLite data access of the local board: plain synchronous methods returning API.md dicts.

One connection (``check_same_thread=False``) in WAL mode with a busy timeout, guarded by a
lock, so the aiohttp handlers (one thread) and tests (any thread) can share it. Every write
is one statement or one ``BEGIN IMMEDIATE`` transaction, so several processes may open the
same file. The claim is a single conditional ``UPDATE``: whoever's statement matches the
row while it is still ``todo`` and unassigned wins; nobody reads before writing.

Inputs are expected to be validated already (``validation.py``); the store raises
``NotFound`` and ``Conflict``, and ``Invalid`` only for what needs the data to judge (a
task list that does not exist, a name with no letter for a slug). Timestamps are SQLite's
``YYYY-MM-DD HH:MM:SS`` in UTC, taken from an injectable clock so tests can move time
without sleeping.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from taskinfa_worker.board.problems import Conflict, Invalid, NotFound
from taskinfa_worker.board.schema import (
    ADD_CARD_COLUMNS,
    CARD_COLUMNS_MARK,
    DROP_OBSOLETE,
    JSON_LIST_COLUMNS,
    NEXT_NOT_WAITING,
    OBSOLETE_MARK,
    PATCH_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    SELECT_NEXT,
    SELECT_TASK,
    SELECT_TASK_BY_ID,
)
from taskinfa_worker.client.models import PRIORITY_RANK

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""

DEFAULT_WORKSPACE: Final = "default"
DEFAULT_TASK_LIST: Final = "default"
OFFLINE_AFTER: Final = 120.0
"""A worker whose last heartbeat is older than this many seconds is shown offline."""


def format_timestamp(epoch: float) -> str:
    """SQLite's ``datetime('now')`` format: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def hash_key(api_key: str) -> str:
    """The stored form of an API key: only its SHA-256 ever reaches the database."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def slugify(name: str) -> str:
    """Task list id from its name, as the real dashboard makes it (kebab-case)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# How the board lists tasks (GET /tasks and the kanban page's cards alike).
BOARD_ORDER: Final = '"order", created_at, rowid'


class BoardStore:
    """The board's data in one SQLite file. Thread-safe; every method is short."""

    def __init__(self, path: Path | str, *, clock: Clock = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so single statements are their own transaction
        # and multi-statement writes say BEGIN IMMEDIATE themselves.
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._key_cache: dict[str, str] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # --- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> BoardStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> str:
        """The current time in the board's timestamp format."""
        return format_timestamp(self.clock())

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, for the board's other record keepers (``agent_store``)."""
        with self._write() as db:
            yield db

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Read rows under the store's lock (for ``agent_store``)."""
        return self._query(sql, params)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; taken before reading so no other writer interleaves."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
            return row

    def _migrate(self) -> None:
        with self._lock:
            obsolete = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (OBSOLETE_MARK,)
            ).fetchone()
            if obsolete is not None:
                self._db.executescript(DROP_OBSOLETE)
            task_columns = {row["name"] for row in self._db.execute("PRAGMA table_info(tasks)")}
            if task_columns and CARD_COLUMNS_MARK not in task_columns:
                self._db.executescript(ADD_CARD_COLUMNS)
            # executescript commits on its own; the statements are all IF NOT EXISTS.
            self._db.executescript(SCHEMA)
            with self._write() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('version', '0')")
                now = self.now()
                db.execute(
                    "INSERT OR IGNORE INTO task_lists (workspace_id, id, name, created_at, "
                    "updated_at) VALUES (?, ?, 'Default', ?, ?)",
                    (DEFAULT_WORKSPACE, DEFAULT_TASK_LIST, now, now),
                )

    def version(self) -> int:
        """The board-wide change counter: it moves on every write to what the page shows."""
        row = self._query_one("SELECT value FROM meta WHERE key = 'version'")
        return 0 if row is None else int(row["value"])

    # --- API keys --------------------------------------------------------------------------
    def has_api_keys(self) -> bool:
        """Whether any key was ever stored (a restart must not mint a second one)."""
        return self._query_one("SELECT 1 FROM api_keys LIMIT 1") is not None

    def add_api_key(self, api_key: str, workspace_id: str = DEFAULT_WORKSPACE) -> None:
        """Store the hash of ``api_key``; adding a known key again changes nothing."""
        key_hash = hash_key(api_key)
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO api_keys (key_hash, workspace_id, created_at) "
                "VALUES (?, ?, ?)",
                (key_hash, workspace_id, self.now()),
            )
            self._key_cache[key_hash] = workspace_id

    def revoke_api_key(self, api_key: str) -> None:
        """Forget ``api_key``: from now on every request with it is refused (401)."""
        key_hash = hash_key(api_key)
        with self._lock:
            self._db.execute("DELETE FROM api_keys WHERE key_hash = ?", (key_hash,))
            self._key_cache.pop(key_hash, None)

    def key_hashes(self) -> list[str]:
        """The stored hashes of every key, oldest first (the page's login link uses one)."""
        rows = self._query("SELECT key_hash FROM api_keys ORDER BY created_at, rowid")
        return [str(row["key_hash"]) for row in rows]

    def workspace_for_key(self, api_key: str) -> str | None:
        """The workspace a key belongs to, or None when the board does not know the key."""
        return self.workspace_for_key_hash(hash_key(api_key))

    def workspace_for_key_hash(self, key_hash: str) -> str | None:
        """As ``workspace_for_key``, from the stored form (a page session keeps only that)."""
        cached = self._key_cache.get(key_hash)
        if cached is not None:
            return cached
        row = self._query_one("SELECT workspace_id FROM api_keys WHERE key_hash = ?", (key_hash,))
        if row is None:
            return None
        self._key_cache[key_hash] = str(row["workspace_id"])
        return str(row["workspace_id"])

    # --- task lists ------------------------------------------------------------------------
    def create_task_list(
        self,
        name: str,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        description: str | None = None,
        repository_url: str | None = None,
        working_directory: str | None = None,
    ) -> dict[str, Any]:
        """Create a task list whose id is the slug of its name; Conflict when it exists."""
        list_id = slugify(name)
        if not list_id:
            raise Invalid("name must contain at least one letter or digit", {"field": "name"})
        now = self.now()
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO task_lists (workspace_id, id, name, description, repository_url,"
                    " working_directory, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        workspace_id,
                        list_id,
                        name,
                        description,
                        repository_url,
                        working_directory or "/workspace",
                        now,
                        now,
                    ),
                )
        except sqlite3.IntegrityError:
            raise Conflict(
                f"Task list '{list_id}' already exists", {"task_list_id": list_id}
            ) from None
        return self.get_task_list(list_id, workspace_id=workspace_id)

    def get_task_list(
        self, task_list_id: str, *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, Any]:
        row = self._query_one(
            "SELECT * FROM task_lists WHERE workspace_id = ? AND id = ?",
            (workspace_id, task_list_id),
        )
        if row is None:
            raise NotFound("Task list not found")
        return _task_list(row)

    def list_task_lists(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT * FROM task_lists WHERE workspace_id = ? ORDER BY created_at DESC, rowid DESC",
            (workspace_id,),
        )
        return [_task_list(row) for row in rows]

    # --- tasks -----------------------------------------------------------------------------
    def create_task(
        self,
        title: str,
        task_list_id: str = DEFAULT_TASK_LIST,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        description: str | None = None,
        priority: str = "medium",
        labels: Sequence[str] = (),
        status: str = "todo",
        order: int = 0,
        assigned_to: str | None = None,
        parent_task_id: str | None = None,
    ) -> dict[str, Any]:
        """Add a task. The task list must exist in the workspace (400 otherwise, as real)."""
        task_id = _new_id("task")
        now = self.now()
        started = now if status == "in_progress" else None
        completed = now if status in ("review", "done") else None
        with self._write() as db:
            exists = db.execute(
                "SELECT 1 FROM task_lists WHERE workspace_id = ? AND id = ?",
                (workspace_id, task_list_id),
            ).fetchone()
            if exists is None:
                raise Invalid("Task list not found", {"task_list_id": task_list_id})
            if parent_task_id is not None and not _task_exists(db, parent_task_id, workspace_id):
                raise Invalid("Parent task not found", {"parent_task_id": parent_task_id})
            db.execute(
                "INSERT INTO tasks (id, workspace_id, task_list_id, title, description, status, "
                'priority, priority_rank, labels, assigned_to, "order", created_at, updated_at, '
                "started_at, completed_at, parent_task_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    workspace_id,
                    task_list_id,
                    title,
                    description,
                    status,
                    priority,
                    PRIORITY_RANK[priority],
                    json.dumps(list(labels)),
                    assigned_to or None,
                    order,
                    now,
                    now,
                    started,
                    completed,
                    parent_task_id,
                ),
            )
        return self.get_task(task_id, workspace_id=workspace_id)

    def add_dependency(
        self, task_id: str, depends_on: str, *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> None:
        """Make ``task_id`` wait for ``depends_on`` to be done (set in the dashboard's UI)."""
        with self._write() as db:
            for needed in (task_id, depends_on):
                if not _task_exists(db, needed, workspace_id):
                    raise NotFound("Task not found")
            db.execute(
                "INSERT OR IGNORE INTO task_dependencies (task_id, depends_on_task_id) "
                "VALUES (?, ?)",
                (task_id, depends_on),
            )

    def get_task(self, task_id: str, *, workspace_id: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        row = self._query_one(SELECT_TASK_BY_ID, (task_id, workspace_id))
        if row is None:
            raise NotFound("Task not found")
        return _task(row)

    def next_task(
        self,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        task_list_id: str | None = None,
        skip_waiting: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The task ``/tasks/next`` offers and its project, or None. Reads, never claims.

        ``skip_waiting`` leaves out subtasks and tasks with a dependency not yet done.
        """
        sql = SELECT_NEXT + (NEXT_NOT_WAITING if skip_waiting else "")
        params: list[Any] = [workspace_id]
        if task_list_id is not None:
            sql += " AND t.task_list_id = ?"
            params.append(task_list_id)
        # rowid last: two tasks created in the same second keep their insertion order.
        sql += ' ORDER BY t.priority_rank, t."order", t.created_at, t.rowid LIMIT 1'
        row = self._query_one(sql, params)
        if row is None:
            return None
        project = {
            "id": row["task_list_id"],
            "name": row["project_name"],
            "repository_url": row["project_repository_url"],
        }
        return _task(row), project

    def claim_task(
        self,
        task_id: str,
        bot_name: str,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        timestamps_once: bool = False,
    ) -> dict[str, Any]:
        """Atomically assign a ``todo``, unassigned task. Conflict when someone has it.

        ``timestamps_once``: as ``update_task``."""
        now = self.now()
        stamps = (
            "started_at = COALESCE(started_at, :now)"
            if timestamps_once
            else "started_at = :now, completed_at = NULL"
        )
        with self._write() as db:
            # The WHERE clause is the whole claim: the row matches only while free ({stamps}
            # is one of two fixed strings).
            claimed = db.execute(
                f"UPDATE tasks SET assigned_to = :bot, status = 'in_progress', {stamps}, "  # noqa: S608
                "updated_at = :now WHERE id = :id AND workspace_id = :ws "
                "AND status = 'todo' AND assigned_to IS NULL",
                {"bot": bot_name, "now": now, "id": task_id, "ws": workspace_id},
            ).rowcount
            row = db.execute(SELECT_TASK_BY_ID, (task_id, workspace_id)).fetchone()
        if row is None:
            raise NotFound("Task not found")
        if claimed != 1:
            raise Conflict("Task already claimed")
        return _task(row)

    def update_task(
        self,
        task_id: str,
        fields: dict[str, Any],
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        timestamps_once: bool = False,
    ) -> dict[str, Any]:
        """Apply validated PATCH fields in one statement.

        Entering ``in_progress`` sets ``started_at`` (and clears ``completed_at``); entering
        ``review`` or ``done`` sets ``completed_at``. A PATCH that repeats the current
        status leaves the timestamps alone. ``timestamps_once`` (the real releases): each
        is set only while still empty, so after the first run they never move again.
        """
        now = self.now()
        assignments = ["updated_at = :now"]
        params: dict[str, Any] = {"now": now, "id": task_id, "ws": workspace_id}
        for name, column in PATCH_COLUMNS.items():
            if name in fields:
                assignments.append(f"{column} = :{name}")
                params[name] = fields[name]
        for name in JSON_LIST_COLUMNS:
            if name in fields:
                assignments.append(f"{name} = :{name}")
                params[name] = json.dumps(list(fields[name]))
        if "priority" in fields:
            assignments.append("priority_rank = :priority_rank")
            params["priority_rank"] = PRIORITY_RANK[fields["priority"]]
        if "status" in fields:
            params["status"] = fields["status"]
            assignments += ["status = :status", *_timestamp_moves(timestamps_once)]
        with self._write() as db:
            changed = db.execute(
                # Assignments name whitelisted columns only (PATCH_COLUMNS, fixed SQL).
                f"UPDATE tasks SET {', '.join(assignments)} "  # noqa: S608
                "WHERE id = :id AND workspace_id = :ws",
                params,
            ).rowcount
        if changed != 1:
            raise NotFound("Task not found")
        return self.get_task(task_id, workspace_id=workspace_id)

    def backdate(
        self,
        task_id: str | None,
        worker_name: str | None,
        when: datetime,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> None:
        """Test hook: make a claim and/or a worker's last heartbeat look ``when`` old.

        Sets the task's ``started_at`` and ``updated_at``, and the worker's
        ``last_heartbeat``, so lease and liveness logic can be tested without waiting.
        """
        epoch = when.timestamp()
        stamp = format_timestamp(epoch)
        with self._write() as db:
            if task_id is not None:
                changed = db.execute(
                    "UPDATE tasks SET started_at = ?, updated_at = ? "
                    "WHERE id = ? AND workspace_id = ?",
                    (stamp, stamp, task_id, workspace_id),
                ).rowcount
                if changed != 1:
                    raise NotFound("Task not found")
            if worker_name is not None:
                changed = db.execute(
                    "UPDATE workers SET last_heartbeat = ?, last_heartbeat_epoch = ? "
                    "WHERE name = ? AND workspace_id = ?",
                    (stamp, epoch, worker_name, workspace_id),
                ).rowcount
                if changed != 1:
                    raise NotFound("Worker not found")

    def delete_task(self, task_id: str, *, workspace_id: str = DEFAULT_WORKSPACE) -> None:
        """Delete a task and its comments (a person removing it from the board)."""
        with self._write() as db:
            deleted = db.execute(
                "DELETE FROM tasks WHERE id = ? AND workspace_id = ?", (task_id, workspace_id)
            ).rowcount
        if deleted != 1:
            raise NotFound("Task not found")

    def list_cards(
        self,
        columns: tuple[str, ...],
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        limit: int,
        changed_after: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The kanban page's cards: only ``columns`` (of the tasks table), how many files
        each changed and ``seq`` (its place among tasks created in the same second), in
        board order as ``list_tasks``, and the total. With ``changed_after``, only the cards
        whose last change came after that board version (see ``removed_since``). Its own
        query because the page reads it twice a second on a busy board: shaping whole tasks
        (their descriptions, their JSON lists) took most of the time."""
        for column in columns:
            if not re.fullmatch(r"[a-z_]+", column):
                raise ValueError(f"not a column name: {column!r}")
        listed = ", ".join(f'"{column}"' for column in columns)
        changed = "" if changed_after is None else " AND board_version > ?"
        params = (workspace_id, *(() if changed_after is None else (changed_after,)), limit)
        with self._lock:
            total = self._db.execute(
                "SELECT COUNT(*) FROM tasks WHERE workspace_id = ?", (workspace_id,)
            ).fetchone()[0]
            # `listed` holds checked column names only, `changed` is fixed; values are bound.
            rows = self._db.execute(
                f"SELECT {listed}, json_array_length(files_changed) AS files_changed, "  # noqa: S608
                f"rowid AS seq FROM tasks WHERE workspace_id = ?{changed} "
                f"ORDER BY {BOARD_ORDER} LIMIT ?",
                params,
            ).fetchall()
        return [dict(row) for row in rows], int(total)

    def removed_since(self, version: int, *, workspace_id: str = DEFAULT_WORKSPACE) -> list[str]:
        """The ids of the tasks deleted after board version ``version``."""
        rows = self._query(
            "SELECT task_id FROM removed_tasks WHERE workspace_id = ? AND board_version > ?",
            (workspace_id, version),
        )
        return [str(row["task_id"]) for row in rows]

    def list_tasks(
        self,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        status: str | None = None,
        task_list_id: str | None = None,
        assigned_to: str | None = None,
        priority: str | None = None,
        limit: int = 50,
        offset: int = 0,
        mark_blocked: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of tasks (board order: ``order``, then oldest first) and the total.

        ``mark_blocked`` adds ``is_blocked`` to each: whether it waits on a task not done."""
        where = ["workspace_id = ?"]
        params: list[Any] = [workspace_id]
        for column, value in (
            ("status", status),
            ("task_list_id", task_list_id),
            ("assigned_to", assigned_to),
            ("priority", priority),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        condition = " AND ".join(where)
        with self._lock:
            # `condition` joins fixed "column = ?" pieces; the values are bound.
            total_row = self._db.execute(
                f"SELECT COUNT(*) FROM tasks WHERE {condition}",  # noqa: S608
                params,
            ).fetchone()
            rows = self._db.execute(
                f"{SELECT_TASK} WHERE {condition} ORDER BY {BOARD_ORDER} LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            blocked = self._blocked([row["id"] for row in rows]) if mark_blocked else set()
        tasks = [_task(row) for row in rows]
        if mark_blocked:
            for task in tasks:
                task["is_blocked"] = task["id"] in blocked
        return tasks, int(total_row[0])

    def _blocked(self, task_ids: list[str]) -> set[str]:
        """Which of these tasks wait on a dependency that is not done (caller holds the lock)."""
        if not task_ids:
            return set()
        marks = ", ".join("?" for _ in task_ids)
        # `marks` is placeholders only; the ids are bound.
        sql = (
            "SELECT DISTINCT d.task_id FROM task_dependencies d "  # noqa: S608
            "JOIN tasks dep ON dep.id = d.depends_on_task_id "
            f"WHERE d.task_id IN ({marks}) AND dep.status != 'done'"
        )
        rows = self._db.execute(sql, task_ids).fetchall()
        return {row[0] for row in rows}

    # --- comments --------------------------------------------------------------------------
    def add_comment(
        self,
        task_id: str,
        *,
        author: str,
        content: str,
        comment_type: str,
        author_type: str = "bot",
        loop_number: int | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> dict[str, Any]:
        comment_id = _new_id("cmt")
        now = self.now()
        with self._write() as db:
            if not _task_exists(db, task_id, workspace_id):
                raise NotFound("Task not found")
            db.execute(
                "INSERT INTO comments (id, task_id, author, author_type, content, comment_type, "
                "loop_number, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (comment_id, task_id, author, author_type, content, comment_type, loop_number, now),
            )
        return {
            "id": comment_id,
            "task_id": task_id,
            "author": author,
            "author_type": author_type,
            "content": content,
            "comment_type": comment_type,
            "loop_number": loop_number,
            "created_at": now,
        }

    def list_comments(
        self,
        task_id: str,
        *,
        limit: int = 50,
        offset: int = 0,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first, and the total number of comments on the task."""
        with self._lock:
            if not _task_exists(self._db, task_id, workspace_id):
                raise NotFound("Task not found")
            total = self._db.execute(
                "SELECT COUNT(*) FROM comments WHERE task_id = ?", (task_id,)
            ).fetchone()[0]
            rows = self._db.execute(
                "SELECT id, task_id, author, author_type, content, comment_type, loop_number, "
                "created_at FROM comments WHERE task_id = ? "
                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (task_id, limit, offset),
            ).fetchall()
        return [dict(row) for row in rows], int(total)

    # --- workers ---------------------------------------------------------------------------
    def heartbeat(
        self,
        worker_name: str,
        status: str,
        current_task_id: str | None = None,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> dict[str, Any]:
        """Record a heartbeat. Like the real server, going from working on a task to idle
        counts one completed task."""
        epoch = self.clock()
        now = format_timestamp(epoch)
        with self._write() as db:
            db.execute(
                "INSERT INTO workers (workspace_id, name, id, status, current_task_id, "
                "last_heartbeat, last_heartbeat_epoch, created_at, updated_at) "
                "VALUES (:ws, :name, :id, :status, :task, :now, :epoch, :now, :now) "
                "ON CONFLICT (workspace_id, name) DO UPDATE SET "
                "total_tasks_completed = total_tasks_completed + CASE WHEN "
                "workers.status = 'working' AND workers.current_task_id IS NOT NULL "
                "AND excluded.status = 'idle' THEN 1 ELSE 0 END, "
                "status = excluded.status, current_task_id = excluded.current_task_id, "
                "last_heartbeat = excluded.last_heartbeat, "
                "last_heartbeat_epoch = excluded.last_heartbeat_epoch, "
                "updated_at = excluded.updated_at",
                {
                    "ws": workspace_id,
                    "name": worker_name,
                    "id": _new_id("worker"),
                    "status": status,
                    "task": current_task_id or None,
                    "now": now,
                    "epoch": epoch,
                },
            )
            row = db.execute(
                "SELECT * FROM workers WHERE workspace_id = ? AND name = ?",
                (workspace_id, worker_name),
            ).fetchone()
        return _worker(row, epoch)

    def list_workers(
        self, *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """All workers by name, with the status the board shows, and counts per status."""
        epoch = self.clock()
        rows = self._query(
            "SELECT * FROM workers WHERE workspace_id = ? ORDER BY name", (workspace_id,)
        )
        workers = [_worker(row, epoch) for row in rows]
        statuses = [worker["status"] for worker in workers]
        stats = {
            "total": len(workers),
            "online": sum(status != "offline" for status in statuses),
            "idle": statuses.count("idle"),
            "working": statuses.count("working"),
            "offline": statuses.count("offline"),
        }
        return workers, stats


# --- row shaping -------------------------------------------------------------------------
def _task_exists(db: sqlite3.Connection, task_id: str, workspace_id: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM tasks WHERE id = ? AND workspace_id = ?", (task_id, workspace_id)
    ).fetchone()
    return row is not None


def _task(row: sqlite3.Row) -> dict[str, Any]:
    task = {key: row[key] for key in row.keys() if not key.startswith("project_")}  # noqa: SIM118
    task["labels"] = json.loads(task["labels"])
    task["files_changed"] = json.loads(task["files_changed"])
    # The local board has no human users, so nobody is ever the (human) assignee.
    task["assignee"] = None
    return task


def _task_list(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "description": row["description"],
        "repository_url": row["repository_url"],
        "working_directory": row["working_directory"],
        "is_initialized": bool(row["is_initialized"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _worker(row: sqlite3.Row, now_epoch: float) -> dict[str, Any]:
    last = row["last_heartbeat_epoch"]
    offline = last is None or now_epoch - float(last) > OFFLINE_AFTER
    return {
        "id": row["id"],
        "name": row["name"],
        "status": "offline" if offline else row["status"],
        "current_task_id": row["current_task_id"],
        "last_heartbeat": row["last_heartbeat"],
        "total_tasks_completed": row["total_tasks_completed"],
    }


def _timestamp_moves(once: bool) -> list[str]:
    """The ``started_at``/``completed_at`` assignments of a PATCH that sets a status.

    In an UPDATE, ``status`` on the right-hand side is still the old value. ``once``: the
    real releases' COALESCE, so a task that ran and came back keeps its first timestamps.
    """
    if once:
        return [
            "started_at = CASE WHEN :status = 'in_progress' "
            "THEN COALESCE(started_at, :now) ELSE started_at END",
            "completed_at = CASE WHEN :status IN ('review', 'done') "
            "THEN COALESCE(completed_at, :now) ELSE completed_at END",
        ]
    return [
        "started_at = CASE WHEN :status = 'in_progress' AND status != 'in_progress' "
        "THEN :now ELSE started_at END",
        "completed_at = CASE "
        "WHEN :status IN ('review', 'done') AND status NOT IN ('review', 'done') THEN :now "
        "WHEN :status = 'in_progress' AND status != 'in_progress' THEN NULL "
        "ELSE completed_at END",
    ]
