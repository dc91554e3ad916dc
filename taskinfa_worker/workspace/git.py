"""Run git (or the PR command) as a bounded child process, with redacted errors.

The child runs through ``processes.run_process``: an argument list (no shell), its own
session, killed with its whole group on a timeout or a cancellation and always reaped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskinfa_worker import processes
from taskinfa_worker.errors import WorkspaceError, WorkspaceUnavailableError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.workspace.gitenv import GitEnv
from taskinfa_worker.workspace.safety import RepoUrl

TAIL_CHARS = 1500


class GitTimeoutError(WorkspaceError):
    """A git command (or the PR command) ran longer than its time limit and was killed."""


@dataclass(frozen=True)
class GitResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        """stdout as text (paths that are not UTF-8 keep a replacement character)."""
        return self.stdout.decode("utf-8", "replace")


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    timeout: float,
    env: Mapping[str, str],
    stdin: bytes | None = None,
) -> GitResult:
    """Run ``argv`` to its end within ``timeout`` seconds.

    Raises ``GitTimeoutError`` on timeout and ``WorkspaceError`` when the program cannot be
    started; a non-zero exit status is returned, not raised.
    """
    try:
        done = await processes.run_process(argv, cwd=cwd, env=env, timeout=timeout, stdin=stdin)
    except TimeoutError:  # before OSError, of which it is a subclass
        raise GitTimeoutError(
            f"{_verb(argv)} took longer than {timeout:g} s and was stopped"
        ) from None
    except OSError as exc:
        raise WorkspaceUnavailableError(
            f"could not start {argv[0]}: {exc.strerror or exc}",
            fix=f"install {os.path.basename(argv[0])} on this worker's PATH",
        ) from None
    return GitResult(
        argv=done.argv,
        returncode=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr.decode("utf-8", "replace"),
    )


async def git(
    *args: str,
    cwd: Path | None,
    timeout: float,
    env: Mapping[str, str],
    stdin: bytes | None = None,
) -> GitResult:
    """``git *args`` (the caller puts ``-c`` options first and ``--`` before user input)."""
    return await run_process(("git", *args), cwd=cwd, timeout=timeout, env=env, stdin=stdin)


def _verb(argv: Sequence[str]) -> str:
    """``git fetch`` for logs and errors: the program and its subcommand, nothing else."""
    words = [os.path.basename(argv[0])]
    args = iter(argv[1:])
    for arg in args:
        if arg == "-c" or arg == "-C":
            next(args, None)
            continue
        if not arg.startswith("-"):
            words.append(arg)
            break
    return " ".join(words)


def describe(result: GitResult) -> str:
    """The end of git's error output, trimmed for a comment (the caller redacts it)."""
    text = result.stderr.strip() or result.text.strip()
    if len(text) > TAIL_CHARS:
        text = "…" + text[-TAIL_CHARS:]
    return text or f"exit status {result.returncode}"


_AUTH_HINTS = (
    "terminal prompts disabled",
    "could not read username",
    "could not read password",
    "authentication failed",
    "permission denied (publickey",
    "http basic: access denied",
    "the requested url returned error: 401",
    "the requested url returned error: 403",
)


# git's words when the network, not the repository, failed: the worker's fault.
_NETWORK_HINTS = (
    "could not resolve host",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "connection timed out",
)
NETWORK_FIX = "check this worker's network and DNS (the repository host could not be reached)"


class Git:
    """git with the worker's environment, options, timeout and redacted errors."""

    def __init__(self, env: GitEnv, redactor: Redactor, timeout: float) -> None:
        self.env = env
        self._redact = redactor
        self.timeout = timeout

    async def run(
        self,
        *args: str,
        cwd: Path | None,
        action: str,
        repo: RepoUrl | None = None,
        local_copy: bool = False,
        identity: bool = False,
        check: bool = True,
        stdin: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> GitResult:
        """Run one git command; ``action`` names it in errors ("fetch the repository")."""
        options = self.env.config(repo=repo, local_copy=local_copy)
        if identity:
            options += self.env.identity()
        env = self.env.env(repo)
        env.update(extra_env or {})
        try:
            result = await git(*options, *args, cwd=cwd, timeout=self.timeout, env=env, stdin=stdin)
        except GitTimeoutError as exc:
            raise GitTimeoutError(self._redact(f"could not {action}: {exc}")) from None
        if check and not result.ok:
            message = self.failure(action, result)
            if any(hint in describe(result).lower() for hint in _NETWORK_HINTS):
                raise WorkspaceUnavailableError(message, fix=NETWORK_FIX)
            raise WorkspaceError(message)
        return result

    def failure(self, action: str, result: GitResult) -> str:
        """One redacted message: what failed, a hint for missing credentials, git's words."""
        detail = describe(result)
        message = f"could not {action}: {detail}"
        if any(hint in detail.lower() for hint in _AUTH_HINTS):
            message = (
                f"could not {action}: the repository refused access or needs credentials "
                "(set GITHUB_TOKEN for https, or provide an ssh key); git said: " + detail
            )
        return self._redact(message)
