"""What the pool hands an agent, and what it gets back.

An agent is one async call: ``await agent.run(job) -> AgentOutcome``. The pool stops an agent
by cancelling that call (anyio cancel scope); an implementation must then stop its process
tree (terminate, grace, kill, reap) before the cancellation propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from taskinfa_worker.client.models import Comment, Project, Task


@dataclass(frozen=True)
class Activity:
    """Something the agent did, for the throttled progress comments."""

    tool: str | None = None
    files: tuple[str, ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class ModelRoute:
    """The model a run uses and where its requests go (``pool/model_choice.py`` decides).

    Empty: the worker's own settings (``MODEL``, ``ANTHROPIC_*``). With ``auth_token``, the
    run goes to the dashboard's provider at ``base_url`` with that token as its one
    credential. The token never shows in a repr.
    """

    model: str | None = None
    base_url: str | None = None
    auth_token: SecretStr | None = None
    provider: str | None = None
    """The dashboard's provider name, when a dashboard choice applies."""
    origin: str = ""
    """Whose choice it is, for logs and transcripts ("project web", "the workspace")."""


@dataclass(frozen=True)
class AgentJob:
    task: Task
    project: Project | None
    workspace: Path
    branch: str | None
    slot: str
    attempt: int  # 1-based: error_count + 1
    transcript_path: Path
    previous_error: str | None = None
    # What people wrote on the task since its last run ended (oldest first); for an answer
    # to a person's message, the conversation before that message.
    messages: tuple[Comment, ...] = ()
    # A person's message to answer (the dashboard's chat): the run answers it rather than
    # doing the task afresh, and changes code only if the message asks for it.
    question: Comment | None = None
    # The branch holds an earlier round's work (the task came back from review or failed).
    continues: bool = False
    resume_session_id: str | None = None
    route: ModelRoute = field(default_factory=ModelRoute)
    on_activity: Callable[[Activity], None] = field(default=lambda _activity: None)


@dataclass(frozen=True)
class AgentOutcome:
    success: bool
    reason: str = ""  # why it failed, one or a few lines for the error comment
    result_text: str = ""
    exit_code: int | None = None
    num_turns: int | None = None
    cost_usd: float | None = None
    duration_ms: int | None = None
    session_id: str | None = None
    stderr_tail: str = ""
    # The agent's own credentials were refused: every task would fail the same way, so the
    # pool pauses claiming instead of burning attempts.
    auth_failed: bool = False
    # Set when the worker, not the task, is at fault (refused agent key, missing executable,
    # git or disk or network trouble): what the operator should fix. The task then goes
    # back to todo without an attempt counted, and the pool stops claiming for a while.
    worker_fault: str = ""
    # Resuming the given session failed because it no longer exists; retry fresh.
    resume_not_found: bool = False
    # Stopped for printing nothing for STALL_TIMEOUT: the dashboard shows the run as stuck.
    stalled: bool = False


class Agent(Protocol):
    name: str

    async def run(self, job: AgentJob) -> AgentOutcome:
        """Run the agent on one task to its end. Cancellation stops the process tree."""
        ...
