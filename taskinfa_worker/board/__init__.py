"""The local Taskinfa board: the API of API.md over SQLite, for tests, demos and offline use.

``store`` keeps the data, ``validation`` checks requests, ``quota`` is the per-key
window, ``routes`` has the routes and ``server`` runs it all (``taskinfa-worker board``).
"""

from __future__ import annotations

from taskinfa_worker.board.routes import BoardOptions, create_app
from taskinfa_worker.board.server import RunningBoard, serve_board, start_board
from taskinfa_worker.board.store import BoardStore

__all__ = ["BoardOptions", "BoardStore", "RunningBoard", "create_app", "serve_board", "start_board"]
