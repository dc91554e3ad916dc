"""``taskinfa-worker check`` and ``taskinfa-worker status``.

``run_checks`` tries everything a run needs, one line per check, before any task is
claimed: the board (reachable, key accepted, atomic claim route, and on the current
release its sessions and model choice, tokens never shown), the agent executable,
git, the agent sandbox, the folders the worker writes to, and the health port::

    ok    settings valid (BOT_NAME=bot, CONCURRENCY=4, AGENT=claude)
    ok    board reachable (http://localhost:3000/api)
    FAIL  board key accepted: the board refused the key (401) ...

A ``warn`` line is worth reading but does not fail the check (a board without the claim
route still works, without atomic claims). Exit status 1 when any line is ``FAIL``.

``show_status`` prints the slots' table from the health port's ``/status`` when the port
is set and answers, else from the status file the pool keeps.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import quote

import aiohttp
import anyio

from taskinfa_worker.agent.sandbox import sandbox_state
from taskinfa_worker.client.answer import excerpt
from taskinfa_worker.client.api import BoardClient, Lane, not_the_api
from taskinfa_worker.client.llm_config import TASK_SESSION
from taskinfa_worker.errors import (
    AuthError,
    BoardError,
    PreflightError,
    ServerError,
    TransportError,
)
from taskinfa_worker.health import port_problem
from taskinfa_worker.pool.model_choice import own_endpoint, resolve
from taskinfa_worker.processes import run_process
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings, env_var, is_secret
from taskinfa_worker.status_file import StatusFile, render

__all__ = ["Check", "preflight", "run_checks", "show_status"]

Outcome = Literal["ok", "warn", "skip", "FAIL"]

# Seconds `claude --version` / `git --version` may take (a first start may unpack files).
VERSION_TIMEOUT = 30.0
# Seconds one board probe may take; shorter than a run's request timeout, people wait.
PROBE_TIMEOUT = 15.0
STATUS_TIMEOUT = 3.0
# An id no board will have: the claim probe must never claim a real task.
PROBE_TASK_ID = "task_taskinfa-worker-check-probe-nonexistent"
COUNT_LIMIT = 100
"""The largest page the board sends: ``check`` counts the todo tasks up to this many."""


def todo_count(tasks: Sequence[object]) -> str:
    """ "1 task", "8 tasks", or "100 or more tasks" when the page is full (there may be more)."""
    if len(tasks) >= COUNT_LIMIT:
        return f"{COUNT_LIMIT} or more tasks"
    return f"{len(tasks)} task" + ("" if len(tasks) == 1 else "s")


@dataclass
class Check:
    outcome: Outcome
    label: str
    detail: str = ""

    def line(self) -> str:
        if not self.detail:
            return f"{self.outcome:<4}  {self.label}"
        separator = " " if self.detail.startswith("(") else ": "
        return f"{self.outcome:<4}  {self.label}{separator}{self.detail}"


class _Checks:
    """Runs the checks in order, printing each line as soon as it is known."""

    def __init__(self, settings: Settings, out: TextIO | None, *, for_run: bool = False) -> None:
        self.settings = settings
        self.out = out
        # `run` refuses a taken health port; `check` may run beside the worker holding it.
        self.for_run = for_run
        self.redact = Redactor(
            [settings.taskinfa_api_key, settings.anthropic_api_key, settings.github_token]
        )
        self.results: list[Check] = []
        self.board_ok = False

    def report(self, check: Check) -> None:
        check.detail = self.redact(check.detail)
        self.results.append(check)
        if self.out is not None:
            print(check.line(), file=self.out, flush=True)

    def local_steps(self) -> list[Callable[[], Awaitable[None]]]:
        """What needs no board: ``run`` makes these checks before it claims anything."""
        return [
            self.check_agent,
            self.check_credentials,
            self.check_sandbox,
            self.check_git,
            self.check_workspace,
            self.check_log_dir,
            self.check_health_port,
        ]

    async def run(self) -> int:
        steps: list[Callable[[], Awaitable[None]]] = [
            self.check_settings,
            self.check_board,
            self.check_claim_route,
            self.check_sessions,
            self.check_model_choice,
            self.check_chat,
            *self.local_steps(),
        ]
        for step in steps:
            await step()
        failed = sum(1 for check in self.results if check.outcome == "FAIL")
        if failed:
            print(f"{failed} of {len(self.results)} checks failed", file=self.out, flush=True)
            return 1
        print(f"all {len(self.results)} checks passed", file=self.out, flush=True)
        return 0

    # --- settings and board -----------------------------------------------------------------
    async def check_settings(self) -> None:
        # Reaching this point means Settings validated; say what they resolved to.
        s = self.settings
        self.report(
            Check(
                "ok",
                "settings valid",
                f"(BOT_NAME={s.bot_name}, CONCURRENCY={s.concurrency}, AGENT={s.agent})",
            )
        )

    def _probe_client(self) -> BoardClient:
        return BoardClient(
            self.settings.taskinfa_api_url,
            self.settings.taskinfa_api_key,
            rate_limit=self.settings.rate_limit,
            request_timeout=min(self.settings.request_timeout, PROBE_TIMEOUT),
            # One attempt each: a person is waiting for the answer.
            retry_max_time=dict.fromkeys(Lane, 0.0),
        )

    async def check_board(self) -> None:
        url = self.settings.taskinfa_api_url
        client = self._probe_client()
        try:
            # A full page rather than limit=1: real boards send the page's length as
            # "total", so the tasks listed are the only count to be had.
            page = await client.list_tasks(status="todo", limit=COUNT_LIMIT)
        except TransportError as exc:
            self.report(Check("FAIL", "board reachable", f"{url}: {exc}"))
            self.report(Check("skip", "board key accepted", "(board not reachable)"))
            return
        except AuthError as exc:
            self.report(Check("ok", "board reachable", f"({url})"))
            self.report(Check("FAIL", "board key accepted", str(exc)))
            return
        except ServerError as exc:
            self.report(Check("FAIL", "board reachable", f"{url} is in trouble: {exc}"))
            self.report(Check("skip", "board key accepted", "(the board answered 5xx)"))
            return
        except BoardError as exc:
            self.report(Check("ok", "board reachable", f"({url})"))
            wrong_url = not_the_api(exc)
            if wrong_url is not None:
                self.report(Check("FAIL", "board key accepted", f"cannot tell: {wrong_url}"))
            else:
                self.report(Check("FAIL", "board key accepted", f"unexpected answer: {exc}"))
            return
        finally:
            await client.aclose()
        self.board_ok = True
        self.report(Check("ok", "board reachable", f"({url})"))
        self.report(
            Check(
                "ok",
                "board key accepted",
                f"(workspace {self.settings.workspace_id}: {todo_count(page.tasks)} in todo)",
            )
        )

    async def check_claim_route(self) -> None:
        if not self.board_ok:
            self.report(Check("skip", "claim route", "(board not usable)"))
            return
        url = f"{self.settings.taskinfa_api_url}/tasks/{quote(PROBE_TASK_ID, safe='')}/claim"
        key = self.settings.taskinfa_api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=min(self.settings.request_timeout, PROBE_TIMEOUT))
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
                session.post(url, json={"bot_name": self.settings.slot_names()[0]}) as response,
            ):
                status = response.status
                body = await response.read()
                is_json = _json_object(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.report(Check("FAIL", "claim route", f"no answer: {excerpt(str(exc))}"))
            return
        if status == 404 and is_json:
            # The route exists and looked the task up: "task not found".
            self.report(Check("ok", "claim route present", "(claims are atomic)"))
        elif status in (404, 405):
            self.report(
                Check(
                    "warn",
                    "claim route missing",
                    f"(POST /tasks/{{id}}/claim answered {status}): claims fall back to "
                    "PATCH and a read-back, which is not atomic when several workers share "
                    "the board",
                )
            )
        elif status in (200, 409):
            self.report(Check("ok", "claim route present", f"(answered {status})"))
        else:
            self.report(
                Check("warn", "claim route unknown", f"(answered {status}: {excerpt(body)})")
            )

    async def check_sessions(self) -> None:
        """Whether runs will show as sessions (the current release's dashboard)."""
        if not self.board_ok:
            self.report(Check("skip", "sessions", "(board not usable)"))
            return
        async with self._probe_client() as client:
            try:
                sessions = await client.sessions.find(status="active")
            except BoardError as exc:
                self.report(Check("warn", "sessions unknown", f"GET /sessions failed: {exc}"))
                return
        if sessions is None:
            detail = "(not the current release: runs are not shown as sessions there)"
            self.report(Check("ok", "no sessions route", detail))
        elif self.settings.sessions:
            detail = f"({len(sessions)} active: each run shows in the dashboard as a session)"
            self.report(Check("ok", "sessions", detail))
        else:
            detail = (
                "(SESSIONS=false on a board with sessions: runs do not show in its dashboard, "
                "and where it has no /workers either, a task of this worker that dies with it "
                "stays in_progress until a restart under the same BOT_NAME)"
            )
            self.report(Check("warn", "sessions off", detail))

    async def check_model_choice(self) -> None:
        """Which model and provider runs will use (the current release's ``/llm-config``);
        the line names providers and models, never a token."""
        if own_endpoint(self.settings):
            detail = "(ANTHROPIC_BASE_URL is the worker's own: the dashboard's is not applied)"
            self.report(Check("ok", "model choice", detail))
            return
        if not self.board_ok:
            self.report(Check("skip", "model choice", "(board not usable)"))
            return
        async with self._probe_client() as client:
            try:
                config = await client.llm.read()
            except BoardError as exc:
                self.report(Check("warn", "model choice unknown", f"GET /llm-config: {exc}"))
                return
        if config is None:
            detail = "(not the current release: runs use the worker's own model settings)"
            self.report(Check("ok", "no llm-config route", detail))
            return
        for token in config.tokens():
            self.redact.add(token)
        choices = [c for c in config.session_configs if c.session_type == TASK_SESSION]
        problems = [
            problem
            for choice in choices
            if (problem := resolve(self.settings, config, choice.task_list_id, TASK_SESSION)[1])
        ]
        if problems:
            self.report(Check("warn", "model choice", "; ".join(problems)))
            return
        workspace = next((c for c in choices if c.task_list_id is None), None)
        workspace_choice = "none"
        if workspace is not None:
            workspace_choice = f"{workspace.model or 'default model'} on {workspace.provider}"
        projects = len(choices) - (workspace is not None)
        said = [f"the workspace: {workspace_choice}", f"{projects} project choice(s)"]
        if self.settings.model:
            said.append(f"MODEL={self.settings.model} wins over their models")
        self.report(Check("ok", "model choice", f"({'; '.join(said)})"))

    async def check_chat(self) -> None:
        """Whether people's messages on tasks will be answered (the current release's chat)."""
        if not self.board_ok:
            self.report(Check("skip", "chat", "(board not usable)"))
            return
        async with self._probe_client() as client:
            try:
                pending = await client.chat.pending()
            except BoardError as exc:
                detail = f"GET /tasks/pending-messages failed: {exc}"
                self.report(Check("warn", "chat unknown", detail))
                return
        if pending is None:
            detail = "(an earlier release without /tasks/pending-messages: chat is off)"
            self.report(Check("ok", "no chat route", detail))
        elif self.settings.chat:
            detail = f"({len(pending)} waiting: people's messages on tasks are answered)"
            self.report(Check("ok", "chat on", detail))
        else:
            detail = "(CHAT=false: people's messages on this board's tasks are not answered)"
            self.report(Check("ok", "chat off", detail))

    # --- agent ------------------------------------------------------------------------------
    async def check_agent(self) -> None:
        settings = self.settings
        if settings.agent == "command":
            self.report(Check("skip", "claude CLI", "(AGENT=command)"))
            try:
                command = shlex.split(settings.agent_command or "")
            except ValueError as exc:
                self.report(Check("FAIL", "agent command", f"AGENT_COMMAND: {exc}"))
                return
            found = shutil.which(command[0]) if command else None
            if found is None:
                name = command[0] if command else "(empty)"
                self.report(
                    Check("FAIL", "agent command found", f"{name} is not an executable on PATH")
                )
            else:
                self.report(Check("ok", "agent command found", f"({found})"))
            return
        found = shutil.which(settings.claude_bin)
        if found is None:
            self.report(
                Check(
                    "FAIL",
                    "claude CLI found",
                    f"{settings.claude_bin} is not an executable on PATH: install "
                    "@anthropic-ai/claude-code or set CLAUDE_BIN",
                )
            )
            return
        ok, output = await _version(found, self._child_env())
        if ok:
            self.report(Check("ok", f"claude CLI {output}", f"({found})"))
        else:
            self.report(Check("FAIL", "claude CLI runs", f"{found} --version: {output}"))

    async def check_credentials(self) -> None:
        if self.settings.agent != "claude":
            return
        if self.settings.anthropic_api_key is not None:
            self.report(Check("ok", "Claude credentials", f"({env_var('anthropic_api_key')})"))
            return
        source = self.settings.claude_config_source
        credentials = source / ".credentials.json"
        if credentials.is_file():
            self.report(Check("ok", "Claude credentials", f"({credentials})"))
            return
        self.report(
            Check(
                "warn",
                "Claude credentials",
                f"no ANTHROPIC_API_KEY and no {credentials}: Claude Code must find "
                "another way to log in",
            )
        )

    async def check_sandbox(self) -> None:
        state = await sandbox_state(self.settings)
        outcome: Outcome = "FAIL" if state.refused else "warn" if state.fell_back else "ok"
        label = "agent sandbox on" if state.enabled else "agent sandbox off"
        self.report(Check(outcome, label, state.reason))

    async def check_git(self) -> None:
        found = shutil.which("git")
        if found is None:
            self.report(Check("FAIL", "git found", "git is not on PATH"))
            return
        ok, output = await _version(found, self._child_env())
        if ok:
            self.report(Check("ok", output.removesuffix("."), f"({found})"))
        else:
            self.report(Check("FAIL", "git runs", f"{found} --version: {output}"))
        self.report(self._push_check())

    def _push_check(self) -> Check:
        """What delivering the work needs: said before the first task, not found after."""
        kept = "every result is also kept in the worker's mirror (refs/taskinfa/*)"
        mode = self.settings.push
        if mode == "off":
            return Check("warn", "push off", f"(PUSH=off: results stay on this host; {kept})")
        needs = (
            "write access to each project's repository: GITHUB_TOKEN for https on "
            f"{', '.join(self.settings.git_token_hosts)}, or an ssh key for ssh URLs"
        )
        refused = "fails the attempt" if mode == "on" else "goes to review, saying so"
        return Check("ok", f"push {mode}", f"(needs {needs}; a refused push {refused}; {kept})")

    def _child_env(self) -> dict[str, str]:
        # `--version` needs none of the worker's secrets.
        secrets = {env_var(name) for name in Settings.model_fields if is_secret(name)}
        return {key: value for key, value in os.environ.items() if key not in secrets}

    # --- folders ----------------------------------------------------------------------------
    async def check_workspace(self) -> None:
        self.report(_writable("workspace writable", self.settings.workspace_dir))

    async def check_log_dir(self) -> None:
        self.report(_writable("log dir writable", self.settings.bot_log_dir))

    async def check_health_port(self) -> None:
        s = self.settings
        if s.health_port is None:
            self.report(Check("skip", "health port", "(HEALTH_PORT unset)"))
            return
        problem = port_problem(s)
        if problem is None:
            self.report(Check("ok", "health port free", f"({s.health_host}:{s.health_port})"))
        elif self.for_run:
            self.report(Check("FAIL", "health port free", str(problem)))
        else:
            detail = f"{problem} (a worker running here may be holding it)"
            self.report(Check("warn", "health port free", detail))


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, UnicodeDecodeError):
        return False


async def _version(executable: str, env: dict[str, str]) -> tuple[bool, str]:
    """Run ``executable --version``: (True, first line) or (False, what went wrong)."""
    try:
        done = await run_process(
            [executable, "--version"], cwd=None, env=env, timeout=VERSION_TIMEOUT
        )
    except TimeoutError:  # before OSError, of which it is a subclass
        return False, f"no answer within {VERSION_TIMEOUT:g} s"
    except OSError as exc:
        return False, f"cannot start: {exc}"
    stdout, stderr = done.stdout, done.stderr
    lines = stdout.decode(errors="replace").strip().splitlines()
    first_line = excerpt(lines[0]) if lines else ""
    if done.returncode != 0:
        reason = excerpt(stderr) or first_line or "no output"
        return False, f"exit status {done.returncode}: {reason}"
    if not first_line:
        return False, "printed no version"
    return True, first_line


def _writable(label: str, directory: Path) -> Check:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-") as handle:
            handle.write(b"ok")
            handle.flush()
    except OSError as exc:
        return Check("FAIL", label, f"{directory}: {exc.strerror or exc}")
    return Check("ok", label, f"({directory})")


async def run_checks(settings: Settings, *, out: TextIO | None = None) -> int:
    """Run every check, print one line each to ``out`` (stdout); 1 if any failed, else 0."""
    return await _Checks(settings, out if out is not None else sys.stdout).run()


async def preflight(settings: Settings) -> None:
    """The local checks of ``check``, for ``run`` before it claims anything.

    Raises ``PreflightError`` with the first failure in one sentence: a worker that cannot
    run its agent or git, or write its folders, would only fail (or release) every task,
    and one that cannot serve its health port would never be seen ready.
    """
    checks = _Checks(settings, None, for_run=True)
    for step in checks.local_steps():
        await step()
    failed = [check for check in checks.results if check.outcome == "FAIL"]
    if failed:
        first = failed[0]
        raise PreflightError(
            f"Start-up check failed: {first.label}: {first.detail.rstrip('.')}"
            " (`taskinfa-worker check` runs every check)."
        )


async def show_status(
    settings: Settings, *, out: TextIO | None = None, watch: float | None = None
) -> int:
    """Print what each slot does: from the health port if it answers, else the status file.

    Says plainly when the worker that wrote the file no longer runs (its pid is gone on this
    host). Returns 1 when no worker with these settings is running. With ``watch``, prints
    again every ``watch`` seconds until interrupted.
    """
    stream = out if out is not None else sys.stdout
    while True:
        if watch is not None and stream.isatty():
            print("\x1b[H\x1b[2J", end="", file=stream)  # clear the screen, like watch(1)
        code = await _show_status_once(settings, stream, sys.stderr if out is None else stream)
        if watch is None:
            return code
        await anyio.sleep(watch)


async def _show_status_once(settings: Settings, stream: TextIO, errors: TextIO) -> int:
    note = ""
    if settings.health_port:
        url = f"{_local_url(settings.health_host, settings.health_port)}/status"
        data = await _fetch_status(url)
        if isinstance(data, dict):
            print(render(data), end="", file=stream, flush=True)
            print(f"# from {url}", file=stream, flush=True)
            return 0
        note = f"# {url} did not answer ({data}); "
    status = StatusFile(settings.status_file)
    try:
        text = status.read()
        age = status.age()
    except FileNotFoundError:
        print(
            f"{note.removeprefix('# ')}no status file at {status.path}: is a worker with "
            f"BOT_NAME={settings.bot_name} and LOG_DIR={settings.log_dir} running?",
            file=errors,
            flush=True,
        )
        return 1
    snapshot = status.read_data()
    gone = _gone(snapshot)
    if gone:
        print(f"# NOT RUNNING: {gone}; below is what it last wrote, {age:.0f} s ago", file=stream)
    if snapshot is not None:
        text = render(snapshot, None if gone else time.time())
    print(text, end="", file=stream, flush=True)
    print(f"{note or '# '}from {status.path}, written {age:.0f} s ago", file=stream, flush=True)
    return 1 if gone else 0


def _gone(data: dict[str, Any] | None) -> str:
    """Why the worker that wrote this snapshot is known not to run, or "" (it may run)."""
    if data is None or data.get("host") != socket.gethostname():
        return ""  # written elsewhere (a shared volume): its pid means nothing here
    pid = data.get("pid")
    if not isinstance(pid, int) or _alive(pid):
        return ""
    return f"the worker {data.get('bot_name', '?')} (pid {pid}) is no longer running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def _local_url(host: str, port: int) -> str:
    # A wildcard bind address is reached through loopback.
    if host in ("", "0.0.0.0", "::"):  # noqa: S104
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _fetch_status(url: str) -> dict[str, Any] | str:
    """The /status JSON, or a short reason it could not be had."""
    timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                return f"status {response.status}"
            data = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return excerpt(str(exc)) or type(exc).__name__
    return data if isinstance(data, dict) else "not a JSON object"
