"""The texts of a task's ending: the summary of a success, the report of a failure."""

from __future__ import annotations

import pytest

from taskinfa_worker.agent.job import AgentOutcome
from taskinfa_worker.pool.reporting import (
    RESULT_CHARS,
    failure_text,
    format_duration,
    summary_text,
)
from taskinfa_worker.redact import Redactor


def test_summary_text() -> None:
    outcome = AgentOutcome(
        success=True,
        result_text="Added the route.\n\nTests pass.",
        num_turns=12,
        cost_usd=0.4213,
        duration_ms=192_000,
    )
    text = summary_text(outcome, ["src/app.py", "tests/test_app.py"])
    assert text == (
        "Finished: 3m 12s, 12 turns, $0.42.\n\n"
        "Added the route.\n\nTests pass.\n\n"
        "Files changed (2): src/app.py, tests/test_app.py"
    )
    bare = summary_text(AgentOutcome(success=True), [])
    assert (
        bare == "Finished.\n\nNo changes: the agent changed no file, so there is nothing to review."
    )


def test_summary_trims_long_results_and_file_lists() -> None:
    result = "\n".join(f"paragraph {i} " + "x" * 80 for i in range(200))
    outcome = AgentOutcome(success=True, result_text=result, num_turns=1)
    text = summary_text(outcome, [f"f{i}" for i in range(100)])
    assert "1 turn," not in text
    assert "1 turn." in text
    assert "more characters in the transcript" in text
    assert "(+70 more)" in text
    assert len(text) < RESULT_CHARS + 1000


def test_failure_text() -> None:
    stderr = "\n".join(f"noise {i}" for i in range(100)) + "\nError: sk-ant-api03-secretsecret"
    outcome = AgentOutcome(
        success=False,
        reason="Claude Code exited with code 1 without a result",
        exit_code=1,
        duration_ms=5_000,
        stderr_tail=stderr,
    )
    text = failure_text(outcome, redactor=Redactor())
    assert text.startswith("Attempt failed: Claude Code exited with code 1 without a result")
    assert "(exit code 1, 5s)" in text
    assert "noise 99" in text
    assert "noise 10\n" not in text
    assert "sk-ant-api03" not in text
    assert "```text\n" in text
    assert failure_text(AgentOutcome(success=False)) == (
        "Attempt failed: The agent failed without saying why."
    )


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0s"), (59_400, "59s"), (61_000, "1m 01s"), (3_725_000, "1h 02m")]
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text
