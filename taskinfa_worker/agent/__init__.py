"""Agents: Claude Code and any other command-line agent, supervised."""

from taskinfa_worker.agent.base import Activity, Agent, AgentJob, AgentOutcome

__all__ = ["Activity", "Agent", "AgentJob", "AgentOutcome"]
