"""Claude Code in headless mode, supervised: ``claude -p ... --output-format stream-json``.

The outcome is judged by the result event's ``is_error`` together with the exit code, not by
its ``subtype``: an auth failure ends ``subtype: "success"``, ``is_error: true``, exit 1.
A run that printed no result failed, and stderr's end says why.
"""

from __future__ import annotations

import json
import re

from taskinfa_worker.agent.job import AgentJob, AgentOutcome
from taskinfa_worker.agent.launch import SupervisedAgent
from taskinfa_worker.agent.process import MAX_ARG_BYTES, ProcessEnd, ProcessRun
from taskinfa_worker.agent.prompt import build_prompt
from taskinfa_worker.agent.stream import ClaudeStream, ResultEvent

AUTH_FAILURE = re.compile(
    r"not logged in|please run /login|invalid api key|authentication_error|"
    r"oauth token (?:has )?expired|invalid x-api-key|\b401\b.*(?:unauthori[sz]ed|auth)",
    re.IGNORECASE,
)
AUTH_STATUSES = frozenset({401, 403})
AUTH_FIX = "check ANTHROPIC_API_KEY, or the Claude login in CLAUDE_CONFIG_SOURCE"

RESUME_MISSING = "No conversation found"


def stdin_message(prompt: str) -> bytes:
    """The prompt as one ``--input-format stream-json`` user message line."""
    message = {
        "type": "user",
        "session_id": "",
        "message": {"role": "user", "content": [{"type": "text", "text": prompt}]},
        "parent_tool_use_id": None,
    }
    return (json.dumps(message, ensure_ascii=False) + "\n").encode()


class ClaudeAgent(SupervisedAgent):
    """Runs Claude Code once per task; see the module docstring."""

    name = "claude"

    def command_line(self, prompt: str, job: AgentJob) -> tuple[list[str], bytes | None]:
        """The argv list, and what goes to stdin (None: nothing, stdin is /dev/null)."""
        s = self._settings
        argv = [s.claude_bin, "-p"]
        stdin: bytes | None = None
        if len(prompt.encode()) > MAX_ARG_BYTES:
            # Too long for one argument: the prompt goes in on stdin as a user message.
            argv += ["--input-format", "stream-json"]
            stdin = stdin_message(prompt)
        else:
            # A positional argument: the prompt starts with fixed text, never with "-".
            argv.append(prompt)
        argv += ["--output-format", "stream-json", "--verbose"]
        argv += ["--max-turns", str(s.max_turns), "--permission-mode", s.permission_mode]
        model = job.route.model or s.model
        if model:
            argv += ["--model", model]
        if s.max_budget_usd is not None:
            argv += ["--max-budget-usd", f"{s.max_budget_usd:g}"]
        if s.allowed_tools:
            argv += ["--allowedTools", ",".join(s.allowed_tools)]
        if s.disallowed_tools:
            argv += ["--disallowedTools", ",".join(s.disallowed_tools)]
        if s.append_system_prompt:
            argv += ["--append-system-prompt", s.append_system_prompt]
        if job.resume_session_id:
            argv += ["--resume", job.resume_session_id]
        return argv, stdin

    async def run(self, job: AgentJob) -> AgentOutcome:
        """Run Claude Code on the task (raises AgentError when it cannot start)."""
        prompt = build_prompt(job)
        argv, stdin = self.command_line(prompt, job)
        spec = await self._process_spec(job, argv, stdin=stdin)
        with self._transcript(
            job,
            workspace=str(job.workspace),
            prompt_bytes=len(prompt.encode()),
            prompt_on_stdin=stdin is not None,
            resume=job.resume_session_id,
        ) as transcript:
            stream = ClaudeStream(
                transcript,
                workspace=job.workspace,
                on_activity=job.on_activity,
                # Bound late: the supervisor below starts the result grace period.
                on_result=lambda: supervisor.result_seen(),
            )
            supervisor = self._supervisor(
                spec,
                on_stdout=stream.feed_line,
                on_stderr=lambda line: transcript.note("stderr", text=_decode(line)),
            )
            run = await self._supervise(supervisor, transcript)
            outcome = self._judge(stream, run, job)
            self._note_end(transcript, outcome, run, duration_s=round(run.duration, 3))
        return outcome

    def _judge(self, stream: ClaudeStream, run: ProcessRun, job: AgentJob) -> AgentOutcome:
        result = stream.result
        redact = self._redact
        clues = [run.stderr_tail, *stream.api_errors]
        if result is not None:
            clues.append(result.text)
        success = False
        if result is None:
            reason = self._no_result_reason(run)
        else:
            # Stopped by us after the result (it hung, or a limit struck just then): the
            # result says how the task went.
            exited_ok = run.exit_code == 0 or run.ending is not ProcessEnd.EXITED
            success = not result.is_error and exited_ok
            if success:
                reason = ""
            elif result.is_error:
                reason = self._result_reason(result)
            else:
                reason = f"Claude Code reported success but exited with code {run.exit_code}."
        auth_failed = not success and (
            (result is not None and result.api_error_status in AUTH_STATUSES)
            or any(AUTH_FAILURE.search(clue) for clue in clues if clue)
        )
        if auth_failed:
            reason = f"Claude Code's credentials were refused: {reason}"
        resume_not_found = (
            not success
            and job.resume_session_id is not None
            and any(RESUME_MISSING in clue for clue in clues if clue)
        )
        return AgentOutcome(
            success=success,
            reason=redact(reason),
            result_text=redact(result.text) if result is not None else "",
            exit_code=run.exit_code,
            num_turns=result.num_turns if result is not None else None,
            cost_usd=result.cost_usd if result is not None else None,
            duration_ms=(
                result.duration_ms
                if result is not None and result.duration_ms is not None
                else int(run.duration * 1000)
            ),
            session_id=(result.session_id if result is not None else None) or stream.session_id,
            stderr_tail=redact(run.stderr_tail),
            auth_failed=auth_failed,
            worker_fault=AUTH_FIX if auth_failed else "",
            resume_not_found=resume_not_found,
            stalled=run.ending is ProcessEnd.STALL,
        )

    def _result_reason(self, result: ResultEvent) -> str:
        s = self._settings
        if result.subtype == "error_max_turns":
            turns = f"{result.num_turns} turns" if result.num_turns else "the turn limit"
            return f"Claude Code stopped after {turns} (MAX_TURNS={s.max_turns})."
        if result.subtype == "error_max_budget_usd":
            spent = f"${result.cost_usd:.2f}" if result.cost_usd is not None else "the budget"
            limit = f"MAX_BUDGET_USD={s.max_budget_usd}"
            return f"Claude Code stopped after spending {spent} ({limit})."
        detail = result.text.strip() or result.subtype or "no details"
        status = f" (API status {result.api_error_status})" if result.api_error_status else ""
        return f"Claude Code reported an error{status}: {_first_lines(detail)}"

    def _no_result_reason(self, run: ProcessRun) -> str:
        stopped = self._stop_reason(run, "Claude Code")
        if stopped:
            return stopped
        last = _last_line(run.stderr_tail)
        why = f": {last}" if last else " and printed nothing on stderr"
        if run.exit_code is not None and run.exit_code < 0:
            return f"Claude Code was killed by signal {-run.exit_code} before its result{why}"
        return f"Claude Code exited with code {run.exit_code} without a result{why}"


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace")


def _first_lines(text: str, lines: int = 5, limit: int = 1000) -> str:
    cut = "\n".join(text.strip().splitlines()[:lines])
    return cut if len(cut) <= limit else cut[:limit] + "…"


def _last_line(text: str, limit: int = 500) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else "…" + line[-limit:]
    return ""
