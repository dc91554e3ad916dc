"""taskinfa-worker: one asyncio process that runs N agent slots against a Taskinfa board.

The pieces a program embedding the worker needs; the command line is ``taskinfa_worker.cli``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import Comment, Project, Task, Worker
from taskinfa_worker.errors import AuthError, ConfigError, TaskinfaWorkerError
from taskinfa_worker.pool.worker_pool import WorkerPool
from taskinfa_worker.settings import Settings, load_settings

__all__ = [
    "AuthError",
    "BoardClient",
    "Comment",
    "ConfigError",
    "Lane",
    "Project",
    "Settings",
    "Task",
    "TaskinfaWorkerError",
    "Worker",
    "WorkerPool",
    "__version__",
    "load_settings",
]
