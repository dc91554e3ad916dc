"""The worker's errors, shaped by how callers catch them.

A fatal error ends the process (the key is refused: nothing will work until a person acts);
a board error is about one request (the caller retries, skips or gives up on that request);
workspace and agent errors end one attempt of one task. Fatal and recoverable errors are
siblings, so ``except BoardError`` never swallows a refused key.

A ``WorkerFault`` is a workspace or agent error that is this worker's, not the task's (the
agent executable is missing, git is not installed, the disk is full, the network is down):
the task goes back to ``todo`` without an attempt counted, and the pool stops claiming
until the fault may have been fixed. ``fix`` says what the operator should do.

TaskinfaWorkerError
├── FatalError                 stop the process; ``exit_status`` is the documented status
│   ├── ConfigError            a setting is missing or invalid: exit status 2
│   ├── AuthError              401/403: the board refused the key: exit status 3
│   ├── NameTakenError         another live worker runs under BOT_NAME: exit status 5
│   └── PreflightError         the agent, git, a folder or the port is unusable: exit 6
├── BoardError                 one request failed; the process goes on
│   ├── TransportError         no answer: connection refused, reset, timeout
│   └── ApiError               an HTTP answer that is not a success
│       ├── BadRequestError    400: the board rejected what we sent
│       ├── NotFoundError      404 (or 410)
│       ├── ConflictError      409: someone else holds the task
│       ├── RateLimitedError   429 that outlived the client's own waiting
│       ├── ServerError        5xx
│       └── MalformedResponseError  2xx whose body is not what the contract says
├── WorkspaceError             preparing or finishing a task's git tree failed
│   ├── UnsafeInputError       a repository URL or id was refused before git ran
│   └── WorkspaceUnavailableError  (also a WorkerFault) git missing, disk, network
├── AgentError                 the agent could not be started at all
│   └── AgentUnavailableError  (also a WorkerFault) executable missing, folders unusable
└── WorkerFault                the worker, not the task, is broken; ``fix`` says how
"""

from __future__ import annotations

EXIT_CONFIG = 2
EXIT_AUTH = 3
EXIT_WORKER_FAULT = 4  # a worker fault stopped the claims and --exit-when-idle gave up
EXIT_NAME_TAKEN = 5  # another live process already works under this BOT_NAME
EXIT_PREFLIGHT = 6  # a start-up check (agent, sandbox, git, folders, port) failed before any claim


class TaskinfaWorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class FatalError(TaskinfaWorkerError):
    """The process cannot go on. The message is one sentence for the operator."""

    exit_status: int = 1


class ConfigError(FatalError):
    """A setting is missing or invalid."""

    exit_status = EXIT_CONFIG


class AuthError(FatalError):
    """The board refused the API key (401/403). Retrying cannot help."""

    exit_status = EXIT_AUTH

    def __init__(self, status: int, method: str, url: str, message: str) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.message = message
        super().__init__(
            f"The board at {url} refused the API key ({status}: {message}); "
            "check TASKINFA_API_KEY and TASKINFA_API_URL."
        )


class BoardError(TaskinfaWorkerError):
    """The board could not be used for one request."""


class TransportError(BoardError):
    """No HTTP answer arrived (connection error or timeout)."""


class ApiError(BoardError):
    """The board answered with a non-success status."""

    def __init__(self, status: int, method: str, url: str, message: str) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.message = message
        super().__init__(f"{method} {url} answered {status}: {message}")


class BadRequestError(ApiError):
    """400: the board rejected the request's content."""


class NotFoundError(ApiError):
    """404: the resource (or the route) does not exist."""


class ConflictError(ApiError):
    """409: another worker holds the task."""


class RateLimitedError(ApiError):
    """429 after the client already waited as the board asked."""


class ServerError(ApiError):
    """5xx: the board is in trouble; safe requests are retried."""


class MalformedResponseError(ApiError):
    """A success status whose body does not match the API contract."""


class WorkspaceError(TaskinfaWorkerError):
    """Preparing, committing, pushing or cleaning a task's workspace failed."""


class UnsafeInputError(WorkspaceError):
    """A repository URL, id or path was refused before any command ran."""


class AgentError(TaskinfaWorkerError):
    """The agent could not be started (missing executable, bad template)."""


class WorkerFault(TaskinfaWorkerError):
    """The worker is at fault, not the task: no attempt is counted against the task."""

    def __init__(self, message: str, *, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class WorkspaceUnavailableError(WorkspaceError, WorkerFault):
    """git is missing, the workspace folder is unusable, or the network is down."""


class AgentUnavailableError(AgentError, WorkerFault):
    """The agent executable is missing or not executable, or its folders cannot be made."""


class NameTakenError(FatalError):
    """Another live process works under this ``BOT_NAME``."""

    exit_status = EXIT_NAME_TAKEN


class PreflightError(FatalError):
    """A check before any claim failed (agent, sandbox, git, folders, port)."""

    exit_status = EXIT_PREFLIGHT

    @classmethod
    def unusable_folder(cls, setting: str, path: object, exc: OSError) -> PreflightError:
        """The folder a setting names cannot be written (permissions, a full disk)."""
        return cls(
            f"{setting} {path} is not usable ({exc.strerror or exc}); "
            f"set {setting} to a writable folder."
        )
