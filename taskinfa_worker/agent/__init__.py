"""Agents: Claude Code and any other command-line agent, supervised."""

from taskinfa_worker.agent.claude import ClaudeAgent
from taskinfa_worker.agent.command import CommandAgent
from taskinfa_worker.agent.factory import make_agent
from taskinfa_worker.agent.job import Activity, Agent, AgentJob, AgentOutcome, ModelRoute
from taskinfa_worker.agent.reaper import become_subreaper

__all__ = [
    "Activity",
    "Agent",
    "AgentJob",
    "AgentOutcome",
    "ClaudeAgent",
    "CommandAgent",
    "ModelRoute",
    "become_subreaper",
    "make_agent",
]
