"""Prometheus metrics of one worker process.

One ``Metrics`` object per process, made by the CLI and passed to the client and the pool.
It owns its own registry (not the global one) so that tests and benchmarks can run several
pools in one interpreter without clashing names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TASK_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))


class Metrics:
    """Counters a reader of ``/metrics`` needs to see what the pool is doing."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks_claimed = Counter(
            "taskinfa_tasks_claimed", "Tasks this process claimed.", registry=r
        )
        self.tasks_completed = Counter(
            "taskinfa_tasks_completed", "Tasks that reached review.", registry=r
        )
        self.tasks_failed = Counter(
            "taskinfa_tasks_failed", "Task attempts that failed.", registry=r
        )
        self.tasks_released = Counter(
            "taskinfa_tasks_released",
            "Tasks handed back to todo without an attempt counted (shutdown, recovery).",
            registry=r,
        )
        self.slots_busy = Gauge("taskinfa_slots_busy", "Slots running a task.", registry=r)
        self.slots_total = Gauge("taskinfa_slots", "Slots in this process.", registry=r)
        self.handover_wait_seconds = Counter(
            "taskinfa_handover_wait_seconds",
            "Seconds claimed tasks waited for an earlier run of theirs to stop.",
            registry=r,
        )
        self.api_requests = Counter(
            "taskinfa_api_requests",
            "Board API requests by endpoint and HTTP status (0 = no answer).",
            ["endpoint", "status"],
            registry=r,
        )
        self.api_rate_limited = Counter(
            "taskinfa_api_rate_limited", "429 answers from the board.", registry=r
        )
        self.rate_limit_pauses = Counter(
            "taskinfa_rate_limit_pauses",
            "Logged pauses of board requests, by cause: 429, board_budget (the board's "
            "window used up), own_budget (this process's RATE_LIMIT share).",
            ["cause"],
            registry=r,
        )
        self.rate_limit_pause_seconds = Counter(
            "taskinfa_rate_limit_pause_seconds",
            "Seconds of the logged pauses of board requests, by cause.",
            ["cause"],
            registry=r,
        )
        self.rate_limit_wait_seconds = Counter(
            "taskinfa_rate_limit_wait_seconds",
            "Seconds callers spent waiting on the shared rate limiter.",
            registry=r,
        )
        self.agent_cost_usd = Counter(
            "taskinfa_agent_cost_usd", "Cost reported by the agent, in USD.", registry=r
        )
        self.task_duration_seconds = Histogram(
            "taskinfa_task_duration_seconds",
            "Wall-clock time from claim to the task's end, by outcome.",
            ["outcome"],
            buckets=TASK_DURATION_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
