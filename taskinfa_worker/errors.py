"""The worker's errors. Callers decide by class whether to retry, skip a task, or stop.

TaskinfaWorkerError
├── ConfigError                a setting is missing or invalid: exit status 2
├── BoardError                 anything the board said or failed to say
│   ├── TransportError         no answer: connection refused, reset, timeout (retryable)
│   └── ApiError               an HTTP answer that is not a success
│       ├── AuthError          401/403: the key was refused (fatal, stop the process)
│       ├── BadRequestError    400: the board rejected what we sent
│       ├── NotFoundError      404
│       ├── ConflictError      409: someone else holds the task
│       ├── RateLimitedError   429 that outlived the client's own waiting
│       ├── ServerError        5xx (retryable)
│       └── MalformedResponseError  2xx whose body is not what the contract says
├── WorkspaceError             preparing or finishing a task's git tree failed
│   └── UnsafeInputError       a repository URL or id was refused before git ran
└── AgentError                 the agent could not be started at all
"""

from __future__ import annotations


class TaskinfaWorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(TaskinfaWorkerError):
    """A setting is missing or invalid. The message is one sentence for the operator."""


class BoardError(TaskinfaWorkerError):
    """The board could not be used for one request."""

    retryable: bool = False


class TransportError(BoardError):
    """No HTTP answer arrived (connection error or timeout)."""

    retryable = True


class ApiError(BoardError):
    """The board answered with a non-success status."""

    def __init__(self, status: int, method: str, url: str, message: str) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.message = message
        super().__init__(f"{method} {url} answered {status}: {message}")


class AuthError(ApiError):
    """The board refused the API key. Fatal: retrying cannot help."""

    def __init__(self, status: int, method: str, url: str, message: str) -> None:
        super().__init__(status, method, url, message)
        self.args = (
            f"The board at {url} refused the API key ({status}: {message}); "
            "check TASKINFA_API_KEY and TASKINFA_API_URL.",
        )


class BadRequestError(ApiError):
    """400: the board rejected the request's content."""


class NotFoundError(ApiError):
    """404: the resource (or the route) does not exist."""


class ConflictError(ApiError):
    """409: another worker holds the task."""


class RateLimitedError(ApiError):
    """429 after the client already waited as the board asked."""

    retryable = True


class ServerError(ApiError):
    """5xx: the board is in trouble; safe requests are retried."""

    retryable = True


class MalformedResponseError(ApiError):
    """A success status whose body does not match the API contract."""


class WorkspaceError(TaskinfaWorkerError):
    """Preparing, committing, pushing or cleaning a task's workspace failed."""


class UnsafeInputError(WorkspaceError):
    """A repository URL, id or path was refused before any command ran."""


class AgentError(TaskinfaWorkerError):
    """The agent could not be started (missing executable, bad template)."""
