"""The local Taskinfa board: the API of API.md over SQLite, for tests, demos and offline use.

``store`` keeps the data, ``validation`` checks requests, ``quota`` is the per-key
window, ``routes`` has the routes and ``server`` runs it all (``taskinfa-worker board``).
``profiles`` holds ``BoardOptions`` and the real releases it can behave as (``v1``, ``v2``);
``agent_store`` and ``agent_routes`` are the current release's sessions, events, pending
messages and llm-config. ``page`` serves the kanban page at ``/`` (files in ``static/``),
``access`` decides who may use the board (key, one-time link, session cookie) and
``changes`` is the change feed the page waits on.
"""

from __future__ import annotations

from taskinfa_worker.board.profiles import BoardOptions, options_for
from taskinfa_worker.board.routes import create_app
from taskinfa_worker.board.server import RunningBoard, serve_board, start_board
from taskinfa_worker.board.store import BoardStore

__all__ = [
    "BoardOptions",
    "BoardStore",
    "RunningBoard",
    "create_app",
    "options_for",
    "serve_board",
    "start_board",
]
