"""What every supervised command-line agent does the same way around its own process.

An agent builds its command line and reads its output; ``SupervisedAgent`` does the rest of
a run the same way for all of them: the slot's runtime folders and environment, the run's
marker, sandbox and limits, the transcript's ``start`` and ``end`` notes around the Supervisor, and
the reason given when a limit stopped the process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import anyio

from taskinfa_worker.agent.environment import (
    MARKER_VAR,
    AgentRuntime,
    agent_environment,
    prepare_runtime,
    quick_to_prepare,
    runtime_paths,
)
from taskinfa_worker.agent.job import AgentJob, AgentOutcome
from taskinfa_worker.agent.process import (
    Limits,
    LineHandler,
    ProcessEnd,
    ProcessRun,
    ProcessSpec,
    Supervisor,
    interrupted,
)
from taskinfa_worker.agent.sandbox import SANDBOX_FIX, layout_for, sandbox_state
from taskinfa_worker.agent.transcript import Transcript
from taskinfa_worker.errors import AgentUnavailableError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings, environment_view

# Runs in a worker thread once the runtime folders are ready; returns variables to add to
# the run's environment (e.g. the path of a file it wrote into the run's TMPDIR).
RuntimeSetup = Callable[[AgentRuntime], Mapping[str, str]]


class SupervisedAgent:
    """Base of the agents that run one supervised process per task."""

    name: str

    def __init__(
        self,
        settings: Settings,
        redactor: Redactor,
        *,
        parent_env: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._redact = redactor
        # None: the worker's own environment, read at each run (tests pass a fixed one).
        self._parent_env = dict(parent_env) if parent_env is not None else None

    async def _process_spec(
        self,
        job: AgentJob,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        setup: RuntimeSetup | None = None,
        operator_args: Sequence[str] = (),
    ) -> ProcessSpec:
        """What to start for ``job``: the slot's runtime prepared, the environment with a
        fresh marker that identifies this run's processes (raises AgentError).
        ``operator_args``: the arguments the operator wrote, no task text in them (the
        sandbox binds back the files they name)."""
        s = self._settings

        def prepare() -> tuple[AgentRuntime, Mapping[str, str]]:
            runtime = prepare_runtime(s, job.slot)
            return runtime, (setup(runtime) if setup is not None else {})

        if quick_to_prepare(runtime_paths(s, job.slot)):
            # A few mkdirs and small writes: on the loop. A trip to a worker thread costs
            # more than that (the GIL goes back and forth at each of the thread's syscalls
            # while the loop is busy): ~1 ms per run of the worker's CPU in bench.dispatch.
            runtime, extra = prepare()
        else:
            runtime, extra = await anyio.to_thread.run_sync(prepare)
        marker = uuid.uuid4().hex
        parent = self._parent_env if self._parent_env is not None else environment_view()
        env = agent_environment(s, runtime, marker=marker, parent=parent, route=job.route)
        env.update(extra)
        sandbox = await sandbox_state(s)
        if sandbox.refused:
            # `run` refuses to start first; this keeps any other caller from running an
            # agent unsandboxed that SANDBOX=on promised would not be.
            raise AgentUnavailableError(sandbox.reason, fix=SANDBOX_FIX)
        slot_dirs = (runtime.config_dir, runtime.tmp_dir, runtime.run_dir)
        return ProcessSpec(
            argv=argv,
            env=env,
            cwd=job.workspace,
            marker=f"{MARKER_VAR}={marker}",
            stdin=stdin,
            sandbox=layout_for(
                sandbox, s, tree=job.workspace, slot_dirs=slot_dirs, operator_args=operator_args
            ),
        )

    def _supervisor(
        self, spec: ProcessSpec, *, on_stdout: LineHandler, on_stderr: LineHandler
    ) -> Supervisor:
        """A Supervisor for ``spec`` under the settings' time limits."""
        s = self._settings
        limits = Limits(
            timeout=s.task_timeout, stall_timeout=s.stall_timeout, kill_grace=s.kill_grace
        )
        return Supervisor(spec, limits, on_stdout=on_stdout, on_stderr=on_stderr)

    @contextmanager
    def _transcript(self, job: AgentJob, **start: Any) -> Iterator[Transcript]:
        """The job's transcript, opened with its ``start`` note (``start``: extra fields)."""
        with Transcript(job.transcript_path, self._redact) as transcript:
            route = job.route
            transcript.note(
                "start",
                agent=self.name,
                task_id=job.task.id,
                attempt=job.attempt,
                slot=job.slot,
                # Which model and provider, never the token.
                model=route.model or self._settings.model,
                provider=route.provider,
                model_choice=route.origin or None,
                **start,
            )
            yield transcript

    @staticmethod
    async def _supervise(supervisor: Supervisor, transcript: Transcript) -> ProcessRun:
        """Run the process to its end; a run that raises still gets its ``end`` note."""
        try:
            return await supervisor.run()
        except BaseException as exc:
            # Cancelled by the pool (the tree is already stopped), or could not start.
            transcript.note("end", success=False, ending=interrupted(exc), reason=str(exc))
            raise

    @staticmethod
    def _note_end(
        transcript: Transcript, outcome: AgentOutcome, run: ProcessRun, **extra: Any
    ) -> None:
        """The transcript's ``end`` note for a run that came back (``extra``: more fields)."""
        transcript.note(
            "end",
            success=outcome.success,
            reason=outcome.reason,
            exit_code=run.exit_code,
            ending=run.ending.value,
            leftovers=run.leftovers,
            **extra,
        )

    def _stop_reason(self, run: ProcessRun, who: str) -> str | None:
        """Why a time limit stopped the run (``who`` printed nothing), or None if none did."""
        s = self._settings
        if run.ending is ProcessEnd.TIMEOUT:
            return f"Stopped: the task took longer than TASK_TIMEOUT={s.task_timeout:g}s."
        if run.ending is ProcessEnd.STALL:
            return f"Stopped: {who} printed nothing for STALL_TIMEOUT={s.stall_timeout:g}s."
        return None
