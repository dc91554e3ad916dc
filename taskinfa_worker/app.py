"""``taskinfa-worker run``: builds every part from the settings once and runs the pool."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from loguru import logger

from taskinfa_worker.agent import become_subreaper, make_agent
from taskinfa_worker.agent.nondumpable import make_non_dumpable
from taskinfa_worker.agent.sandbox import SandboxState, sandbox_state
from taskinfa_worker.check import preflight
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.errors import PreflightError
from taskinfa_worker.health import serve_health
from taskinfa_worker.logs import setup_logging
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.identity import hold_name
from taskinfa_worker.pool.worker_pool import WorkerPool
from taskinfa_worker.processes import watch_children_with_pidfd
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from taskinfa_worker.status_file import StatusFile, StatusWriter
from taskinfa_worker.workspace import make_workspaces


def make_redactor(settings: Settings) -> Redactor:
    return Redactor([settings.taskinfa_api_key, settings.anthropic_api_key, settings.github_token])


def build_pool(
    settings: Settings,
    client: BoardClient,
    metrics: Metrics,
    redactor: Redactor,
    *,
    handle_signals: bool = True,
    on_change: Callable[[], None] = lambda: None,
) -> WorkerPool:
    """The pool with the agent and workspaces the settings ask for (tests build it too)."""
    return WorkerPool(
        settings,
        client,
        make_agent(settings, redactor),
        make_workspaces(settings, redactor),
        metrics=metrics,
        redactor=redactor,
        handle_signals=handle_signals,
        on_change=on_change,
    )


def log_sandbox(state: SandboxState) -> None:
    """The start line that says whether agents run sandboxed and why (a warning when
    SANDBOX=auto found no usable sandbox: the operator should know the agents see more)."""
    if not state.fell_back:
        logger.info("agent sandbox {}: {}", "on" if state.enabled else "off", state.reason)
    else:
        logger.warning("agent sandbox off: {}", state.reason)


async def run_worker(settings: Settings) -> int:
    """Run the pool until it drains; returns the process exit status.

    Whatever an operator can get wrong here (a second process under our name, an unusable
    log folder, a health port in use) ends as a ``FatalError``: one sentence, no traceback,
    before any task is claimed.
    """
    # Before anything reads a secret into memory that an agent could then read from /proc.
    make_non_dumpable()
    name_lock = hold_name(settings)  # nothing of a live namesake is touched before this
    watch_children_with_pidfd()
    try:
        redactor = make_redactor(settings)
        try:
            setup_logging(settings, redactor)
        except OSError as exc:
            raise PreflightError.unusable_folder("LOG_DIR", settings.log_dir, exc) from None
        # Orphans of the agents (Bash-tool children in their own session) re-parent to us,
        # so they can be found and killed when their task ends.
        become_subreaper()
        return await _run_pool(settings, redactor)
    finally:
        name_lock.release()


async def _run_pool(settings: Settings, redactor: Redactor) -> int:
    metrics = Metrics()
    status = StatusWriter(StatusFile(settings.status_file), lambda: pool.state)
    async with BoardClient.from_settings(settings, metrics) as client:
        pool = build_pool(settings, client, metrics, redactor, on_change=status.changed)
        # After the pool is built (its agent has checked AGENT_COMMAND's form), before any
        # claim: a worker that cannot run its agent or git would only release every task,
        # and one whose health port is taken would never turn ready.
        await preflight(settings)
        async with serve_health(settings, pool.state, metrics):
            # Next to the pool's own start line, once nothing can stop the start any more.
            log_sandbox(await sandbox_state(settings))
            try:
                code = await _with_status(status, pool)
            finally:
                status.flush()  # the last state: idle slots, the final counts
    logger.debug("{!r}", pool)
    return code


async def _with_status(status: StatusWriter, pool: WorkerPool) -> int:
    """``pool.run()`` with the status writer beside it; the pool's errors come out as they
    are (a task group would wrap them, and the CLI maps each to its exit status)."""
    failure: Exception | None = None
    code = 0
    async with anyio.create_task_group() as group:
        group.start_soon(status.run)
        try:
            code = await pool.run()
        except Exception as exc:
            failure = exc
        finally:
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return code
