"""How background traffic shares the board's request budget with the work that matters.

The board allows one budget per key (100 requests a minute). Finishing, failing and
releasing tasks, claims and comments go first (the rate limiter's lanes see to that);
the periodic loops here do not queue up behind them: each computes its interval from the
number of requests one cycle costs and the share of the budget it may use, so the
intervals stretch as the number of busy slots grows and the total stays under the limit.

Shares of the learned rate per minute (they sum to under 1, leaving room for claims,
polls and completions):
"""

from __future__ import annotations

import random
from typing import Protocol

HEARTBEAT_SHARE = 0.40
PROGRESS_SHARE = 0.20
WATCH_SHARE = 0.10  # cancellation checks and lease sweeps
# Polls while no task is waiting, for the whole key: the processes on one key divide it
# by their share of the key's traffic (the board's X-RateLimit-Remaining says how much
# the key used), so ten idle replicas poll as often together as one alone. 15 % of 100
# requests a minute is a poll every 4 s: a new task waits 2 s on average.
IDLE_POLL_SHARE = 0.15

# The board shows a worker offline after 120 s without a heartbeat; stay well under it even
# when one heartbeat round is slow to get through the limiter.
HEARTBEAT_CEILING = 100.0


class BudgetSource(Protocol):
    @property
    def rate_per_minute(self) -> float: ...


class KeyBudgetSource(BudgetSource, Protocol):
    def own_share(self) -> float: ...


def stretched(base: float, requests_per_cycle: int, share: float, budget: BudgetSource) -> float:
    """The interval at which ``requests_per_cycle`` requests use at most ``share`` of the budget."""
    per_second = max(budget.rate_per_minute, 1e-6) / 60.0 * share
    return max(base, requests_per_cycle / per_second)


def heartbeat_interval(
    server_interval: float, requests_per_cycle: int, budget: BudgetSource
) -> float:
    interval = stretched(server_interval, requests_per_cycle, HEARTBEAT_SHARE, budget)
    return min(interval, max(server_interval, HEARTBEAT_CEILING))


def progress_interval(base: float, busy_slots: int, budget: BudgetSource) -> float:
    # Each busy slot posts at most one progress comment per interval.
    return stretched(base, max(busy_slots, 1), PROGRESS_SHARE, budget)


def watch_interval(base: float, requests_per_cycle: int, budget: BudgetSource) -> float:
    return stretched(base, requests_per_cycle, WATCH_SHARE, budget)


def idle_poll_interval(floor: float, ceiling: float, budget: KeyBudgetSource) -> float:
    """Seconds between polls of an idle process: its part of the key's idle-poll share."""
    per_second = max(budget.rate_per_minute, 1e-6) / 60.0 * IDLE_POLL_SHARE * budget.own_share()
    return min(max(floor, 1.0 / per_second), ceiling)


def jittered(seconds: float, spread: float = 0.1) -> float:
    """Spread periodic requests of many processes so they do not arrive in step."""
    return seconds * random.uniform(1.0 - spread, 1.0 + spread)  # noqa: S311 - not crypto
