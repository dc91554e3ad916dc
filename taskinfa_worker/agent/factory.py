"""Choosing the agent implementation from the settings."""

from __future__ import annotations

from taskinfa_worker.agent.claude import ClaudeAgent
from taskinfa_worker.agent.command import CommandAgent
from taskinfa_worker.agent.job import Agent
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings


def make_agent(settings: Settings, redactor: Redactor) -> Agent:
    """``AGENT=claude`` (default): Claude Code; ``AGENT=command``: ``AGENT_COMMAND``."""
    if settings.agent == "command":
        return CommandAgent(settings, redactor)
    return ClaudeAgent(settings, redactor)
