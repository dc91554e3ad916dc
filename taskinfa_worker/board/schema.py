"""The local board's SQLite schema and the fixed SQL text the store builds queries from.

Tables mirror the real dashboard's (tasks, task_lists, workers, comments, api_keys). Only
constant column names are ever put into SQL text; every value is a bound parameter.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

# An earlier version of this board kept the model choice in llm_models and an
# llm_providers table of another shape; nothing outside a test could fill them, so a file
# that still has llm_models loses both before the schema below is applied.
DROP_OBSOLETE: Final = "DROP TABLE IF EXISTS llm_models; DROP TABLE IF EXISTS llm_providers;"
OBSOLETE_MARK: Final = "llm_models"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_lists (
    workspace_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    repository_url TEXT,
    working_directory TEXT NOT NULL DEFAULT '/workspace',
    is_initialized INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    task_list_id TEXT,
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '[]',
    assigned_to TEXT,
    "order" INTEGER NOT NULL DEFAULT 0,
    loop_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    files_changed TEXT NOT NULL DEFAULT '[]',
    completion_notes TEXT,
    parent_task_id TEXT,
    pr_url TEXT,
    branch_name TEXT,
    claude_session_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    comment_count INTEGER NOT NULL DEFAULT 0,
    board_version INTEGER NOT NULL DEFAULT 0
);
-- /tasks/next reads only unassigned tasks, in exactly this order.
CREATE INDEX IF NOT EXISTS tasks_next ON tasks
    (workspace_id, status, priority_rank, "order", created_at) WHERE assigned_to IS NULL;
CREATE INDEX IF NOT EXISTS tasks_by_list ON tasks (workspace_id, task_list_id, status);
CREATE INDEX IF NOT EXISTS tasks_by_assignee ON tasks (workspace_id, assigned_to);
-- The kanban page's change feed reads the cards changed since the version a page has.
CREATE INDEX IF NOT EXISTS tasks_by_board_version ON tasks (workspace_id, board_version);
CREATE TABLE IF NOT EXISTS comments (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    author_type TEXT NOT NULL,
    content TEXT NOT NULL,
    comment_type TEXT NOT NULL,
    loop_number INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_by_task ON comments (task_id, created_at);
CREATE TABLE IF NOT EXISTS workers (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    current_task_id TEXT,
    last_heartbeat TEXT,
    last_heartbeat_epoch REAL,
    total_tasks_completed INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
-- A task waits until every task it depends on is done (the current release's rule).
CREATE TABLE IF NOT EXISTS task_dependencies (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on_task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on_task_id)
);
-- The current release's agent routes: sessions, the event feed.
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    project_id TEXT,
    current_task_id TEXT,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_event_at TEXT,
    summary TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- The real release keeps no workspace on an event (it joins the session's); the local board
-- keeps the poster's, so an event without a session still belongs to one workspace.
CREATE TABLE IF NOT EXISTS session_events (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    session_id TEXT,
    task_id TEXT,
    event_type TEXT NOT NULL,
    message TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL
);
-- The dashboard's model choice, as the release keeps it (its migration 016): one row per
-- provider a workspace configured (the token in plain text, as there), and one choice per
-- kind of session, for one project or (task_list_id NULL) for the whole workspace.
CREATE TABLE IF NOT EXISTS llm_providers (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    base_url TEXT,
    auth_token TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (workspace_id, provider)
);
CREATE TABLE IF NOT EXISTS llm_session_config (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    task_list_id TEXT,
    session_type TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT 'anthropic',
    model TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- NULL never equals NULL in a UNIQUE constraint: one index for the global choices, one for
-- the projects'.
CREATE UNIQUE INDEX IF NOT EXISTS llm_session_global
    ON llm_session_config (workspace_id, session_type) WHERE task_list_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS llm_session_project
    ON llm_session_config (workspace_id, task_list_id, session_type)
    WHERE task_list_id IS NOT NULL;
"""

# The board-wide version the page's change feed watches: every write that a page shows
# bumps it, whoever writes (this server, a test's store, another process on the file). A
# task's row keeps the version of its last change (board_version) and its number of
# comments, so a page is sent the cards changed since its version, not the whole board.
_BUMP: Final = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version';"
_NOW: Final = "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'version')"
_STAMP: Final = f"UPDATE tasks SET board_version = {_NOW} WHERE rowid = NEW.rowid;"  # noqa: S608
REMOVED_TASKS: Final = """
-- Deleted tasks, so a page that has them hears they are gone.
CREATE TABLE IF NOT EXISTS removed_tasks (
    task_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    board_version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS removed_tasks_by_version ON removed_tasks (workspace_id, board_version);
"""
CARD_TRIGGERS: Final = f"""
CREATE TRIGGER IF NOT EXISTS card_on_tasks_insert AFTER INSERT ON tasks
    BEGIN {_BUMP} {_STAMP} END;
-- An UPDATE that moves board_version is a stamp (this one's, a comment's): no change of its own.
CREATE TRIGGER IF NOT EXISTS card_on_tasks_update AFTER UPDATE ON tasks
    WHEN NEW.board_version = OLD.board_version
    BEGIN {_BUMP} {_STAMP} END;
CREATE TRIGGER IF NOT EXISTS card_on_tasks_delete AFTER DELETE ON tasks
    BEGIN {_BUMP} INSERT INTO removed_tasks (task_id, workspace_id, board_version)
    VALUES (OLD.id, OLD.workspace_id, {_NOW}); END;
-- A comment changes its task's card (the count): counted and stamped in one UPDATE, which
-- the tasks' own trigger then leaves alone.
CREATE TRIGGER IF NOT EXISTS card_on_comments_insert AFTER INSERT ON comments
    BEGIN {_BUMP} UPDATE tasks SET comment_count = comment_count + 1, board_version = {_NOW}
    WHERE id = NEW.task_id; END;
CREATE TRIGGER IF NOT EXISTS card_on_comments_delete AFTER DELETE ON comments
    BEGIN {_BUMP} UPDATE tasks SET comment_count = comment_count - 1, board_version = {_NOW}
    WHERE id = OLD.task_id; END;
"""  # noqa: S608 (fixed text only, no value)
_VERSIONED_WRITES: Final = (
    ("workers", ("INSERT", "UPDATE")),
    ("task_lists", ("INSERT", "UPDATE", "DELETE")),
)
_VERSION_TRIGGER: Final = (
    "CREATE TRIGGER IF NOT EXISTS version_on_{table}_{name} AFTER {op} ON {table}\n"
    f"    BEGIN {_BUMP} END;\n"
)
SCHEMA += (
    REMOVED_TASKS
    + CARD_TRIGGERS
    + "".join(
        _VERSION_TRIGGER.format(table=table, name=op.lower(), op=op)
        for table, ops in _VERSIONED_WRITES
        for op in ops
    )
)

# A file made before tasks kept their card's version and comment count: the columns are
# added, the counts filled in, and the triggers that only bumped the version replaced, in
# one transaction so that no write of another process on the file goes unseen.
CARD_COLUMNS_MARK: Final = "board_version"
ADD_CARD_COLUMNS: Final = f"""
BEGIN IMMEDIATE;
DROP TRIGGER IF EXISTS version_on_tasks_insert;
DROP TRIGGER IF EXISTS version_on_tasks_update;
DROP TRIGGER IF EXISTS version_on_tasks_delete;
DROP TRIGGER IF EXISTS version_on_comments_insert;
DROP TRIGGER IF EXISTS version_on_comments_delete;
ALTER TABLE tasks ADD COLUMN comment_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN board_version INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET comment_count = (SELECT COUNT(*) FROM comments c WHERE c.task_id = tasks.id);
{REMOVED_TASKS}{CARD_TRIGGERS}
COMMIT;
"""  # noqa: S608 (fixed text only, no value)

# Columns a PATCH may set directly (validated values); status has its own timestamp rules.
PATCH_COLUMNS: Final = {
    "assigned_to": "assigned_to",
    "completion_notes": "completion_notes",
    "error_count": "error_count",
    "loop_count": "loop_count",
    "title": "title",
    "description": "description",
    "priority": "priority",
    "order": '"order"',
    "branch_name": "branch_name",
    "pr_url": "pr_url",
    "claude_session_id": "claude_session_id",
}
JSON_LIST_COLUMNS: Final = ("labels", "files_changed")

_TASK_COLUMNS: Final = (
    "id, workspace_id, task_list_id, title, description, status, priority, labels, assigned_to, "
    '"order", loop_count, error_count, files_changed, completion_notes, parent_task_id, pr_url, '
    "branch_name, claude_session_id, created_at, updated_at, started_at, completed_at"
)
SELECT_TASK: Final = f"SELECT {_TASK_COLUMNS} FROM tasks"  # noqa: S608
SELECT_TASK_BY_ID: Final = SELECT_TASK + " WHERE id = ? AND workspace_id = ?"
SELECT_NEXT: Final = (
    f"SELECT {', '.join('t.' + c.strip() for c in _TASK_COLUMNS.split(','))}, "  # noqa: S608
    "tl.name AS project_name, tl.repository_url AS project_repository_url "
    "FROM tasks t JOIN task_lists tl "
    "ON tl.workspace_id = t.workspace_id AND tl.id = t.task_list_id "
    "WHERE t.workspace_id = ? AND t.status = 'todo' AND t.assigned_to IS NULL"
)
# What the current release's /tasks/next adds: no subtasks, no task still waiting on another.
NEXT_NOT_WAITING: Final = (
    " AND t.parent_task_id IS NULL AND NOT EXISTS (SELECT 1 FROM task_dependencies d "
    "JOIN tasks dep ON dep.id = d.depends_on_task_id "
    "WHERE d.task_id = t.id AND dep.status != 'done')"
)
