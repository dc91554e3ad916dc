"""Any other command-line agent: ``AGENT=command`` with an ``AGENT_COMMAND`` template.

The template is split with ``shlex`` first and ``{prompt}``, ``{workspace}`` and
``{task_id}`` are replaced inside each argument afterwards, in one pass, so that task text
always stays inside the argument it was put in: it can add no arguments and reach no shell.
Its output lines (stdout and stderr) are the transcript; exit 0 is success and the result
text is the end of the output. Exit 126 or 127 (a program it runs could not be found or
executed: the shell's and the exec shim's convention) is the worker's fault, not the
task's: every task would fail the same way. The prompt is also in a file named by
``$TASKINFA_PROMPT_FILE``, for prompts too long for an argument.
"""

from __future__ import annotations

import re
import shlex
from collections import deque
from collections.abc import Mapping

from loguru import logger

from taskinfa_worker.agent.environment import AgentRuntime
from taskinfa_worker.agent.job import Activity, AgentJob, AgentOutcome
from taskinfa_worker.agent.launch import SupervisedAgent
from taskinfa_worker.agent.process import MAX_ARG_BYTES, ProcessEnd, ProcessRun
from taskinfa_worker.agent.prompt import build_prompt
from taskinfa_worker.agent.transcript import Transcript
from taskinfa_worker.errors import AgentError, AgentUnavailableError, ConfigError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings

PLACEHOLDER = re.compile(r"\{(prompt|workspace|task_id)\}")
# The result text is the end of the output: this many lines, at most this many characters.
TAIL_LINES = 40
TAIL_CHARS = 4000
# One very long output line is cut to its end in the tail.
LINE_CHARS = 2000
# "found but not executable" and "not found", from a shell or from the exec shim.
CANNOT_RUN_CODES = frozenset({126, 127})
CANNOT_RUN_FIX = (
    "make every program AGENT_COMMAND runs available to the agent: name real executables "
    "(not a version manager's shim), install what it calls on this worker; under the "
    "sandbox the agent sees the system folders and the files AGENT_COMMAND names, not "
    "the worker's home"
)


def parse_template(template: str) -> list[str]:
    """The template's arguments, placeholders still in them (raises ConfigError)."""
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        raise ConfigError(f"Invalid setting AGENT_COMMAND: {exc}.") from None
    if not argv:
        raise ConfigError("Invalid setting AGENT_COMMAND: it is empty.")
    return argv


def literal_args(argv: list[str]) -> list[str]:
    """The template's arguments that no placeholder fills: the operator's words alone."""
    return [arg for arg in argv[1:] if not PLACEHOLDER.search(arg)]


def fill_template(argv: list[str], values: Mapping[str, str]) -> list[str]:
    """Each argument with its placeholders replaced; replaced text is never re-scanned."""
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in argv]


class OutputTail:
    """The last lines of the output, bounded in lines and characters."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)

    def add(self, line: str) -> None:
        self._lines.append(line if len(line) <= LINE_CHARS else "…" + line[-LINE_CHARS:])

    def text(self) -> str:
        text = "\n".join(self._lines).strip()
        return text if len(text) <= TAIL_CHARS else "…" + text[-TAIL_CHARS:]


class CommandAgent(SupervisedAgent):
    """Runs ``AGENT_COMMAND`` once per task; see the module docstring."""

    name = "command"

    def __init__(
        self,
        settings: Settings,
        redactor: Redactor,
        *,
        parent_env: Mapping[str, str] | None = None,
    ) -> None:
        if not settings.agent_command:
            raise ConfigError("AGENT_COMMAND must be set when AGENT=command")
        super().__init__(settings, redactor, parent_env=parent_env)
        self._template = parse_template(settings.agent_command)

    def command_line(self, prompt: str, job: AgentJob) -> list[str]:
        """The argv list for this job (raises AgentError when the prompt cannot fit)."""
        values = {"prompt": prompt, "workspace": str(job.workspace), "task_id": job.task.id}
        argv = fill_template(self._template, values)
        if any(len(arg.encode()) > MAX_ARG_BYTES for arg in argv):
            raise AgentError(
                "the prompt is too long for a command-line argument; let the agent read "
                "$TASKINFA_PROMPT_FILE instead of {prompt}"
            )
        return argv

    async def run(self, job: AgentJob) -> AgentOutcome:
        """Run the command on the task (raises AgentError when it cannot start)."""
        prompt = build_prompt(job)
        argv = self.command_line(prompt, job)
        spec = await self._process_spec(
            job,
            argv,
            setup=lambda runtime: _job_environment(runtime, job, prompt),
            operator_args=literal_args(self._template),
        )
        tail = OutputTail()

        def output(stream: str, transcript: Transcript, line: bytes) -> None:
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            transcript.note("output", stream=stream, text=text)
            tail.add(text)
            if stream == "stdout" and text.strip():
                try:
                    job.on_activity(Activity(text=text.strip()[:500]))
                except Exception:
                    # The progress reporter is the pool's; its bug must not fail the task.
                    logger.exception("activity callback failed")

        with self._transcript(job) as transcript:
            supervisor = self._supervisor(
                spec,
                on_stdout=lambda line: output("stdout", transcript, line),
                on_stderr=lambda line: output("stderr", transcript, line),
            )
            run = await self._supervise(supervisor, transcript)
            outcome = self._judge(run, tail.text())
            self._note_end(transcript, outcome, run)
        if run.ending is ProcessEnd.EXITED and run.exit_code in CANNOT_RUN_CODES:
            said = outcome.stderr_tail.strip().splitlines()
            raise AgentUnavailableError(
                f"the agent command exited with code {run.exit_code}: a program it runs "
                "was not found or could not be executed" + (f" ({said[-1][:300]})" if said else ""),
                fix=CANNOT_RUN_FIX,
            )
        return outcome

    def _judge(self, run: ProcessRun, tail: str) -> AgentOutcome:
        success = run.ending is ProcessEnd.EXITED and run.exit_code == 0
        stopped = self._stop_reason(run, "the agent")
        if success:
            reason = ""
        elif stopped:
            reason = stopped
        elif run.exit_code is not None and run.exit_code < 0:
            reason = f"The agent command was killed by signal {-run.exit_code}."
        else:
            reason = f"The agent command exited with code {run.exit_code}."
        return AgentOutcome(
            success=success,
            reason=self._redact(reason),
            result_text=self._redact(tail),
            exit_code=run.exit_code,
            duration_ms=int(run.duration * 1000),
            stderr_tail=self._redact(run.stderr_tail),
            stalled=run.ending is ProcessEnd.STALL,
        )


def _job_environment(runtime: AgentRuntime, job: AgentJob, prompt: str) -> dict[str, str]:
    """The command's own variables; the prompt goes to a file in the run's TMPDIR."""
    prompt_file = runtime.tmp_dir / "prompt.md"
    prompt_file.write_text(prompt, encoding="utf-8")
    return {
        "TASKINFA_TASK_ID": job.task.id,
        "TASKINFA_WORKSPACE": str(job.workspace),
        "TASKINFA_PROMPT_FILE": str(prompt_file),
    }
