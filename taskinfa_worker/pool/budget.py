"""How background traffic shares the board's request budget with the work that matters.

The board allows one budget per key (100 requests a minute). Finishing, failing and
releasing tasks, claims and comments go first (the rate limiter's lanes see to that);
the periodic loops here do not queue up behind them: each computes its interval from the
number of requests one cycle costs and the share of the budget it may use, so the
intervals stretch as the number of busy slots grows and the total stays under the limit.

Shares of the learned rate per minute (below; they sum to under 1, leaving room for
claims, polls and completions). A run's session (where the board has sessions) costs about
4 requests besides: its start and claim event, its outcome event and its end, sent with
the run's own start and end, out of the reserve. So does the dashboard's model choice
(``/llm-config``): at most one read a minute for the whole process (``model_choice.py``).
"""

from __future__ import annotations

import random
from typing import Protocol

HEARTBEAT_SHARE = 0.40  # heartbeats, or sessions' keep-alives where there are no heartbeats
PROGRESS_SHARE = 0.20  # progress comments, and the progress events that go with them
WATCH_SHARE = 0.10  # cancellation checks and lease sweeps
RESERVE_SHARE = 0.25  # never used by the loops: polls, claims, starts, endings, sessions' ends
# Polls while no task is waiting, out of the reserve, for the whole key: the processes on
# one key divide it by their share of the key's traffic (the board's X-RateLimit-Remaining
# says how much the key used), so ten idle replicas poll as often together as one alone.
# 18 % of 100 requests a minute is a poll every 3.3 s: a new task waits under 2 s on
# average (15 % gave a poll every ~4.5 s with jitter, and a median pickup of 2.9-3.1 s).
IDLE_POLL_SHARE = 0.18
# Polls of the chat's pending messages, out of the reserve beside the idle polls: 5 % (5
# requests a minute of a 100 key, one every 12 s, divided among the processes on the key
# like the idle polls). Taking up and answering a message is a claim's and an ending's
# traffic, out of the reserve too; the loops above stay untouched.
CHAT_SHARE = 0.05

# The board shows a worker offline after 120 s without a heartbeat; stay well under it even
# when one heartbeat round is slow to get through the limiter.
HEARTBEAT_CEILING = 100.0


class BudgetSource(Protocol):
    @property
    def rate_per_minute(self) -> float: ...

    def own_share(self) -> float: ...


def _per_second(share: float, budget: BudgetSource) -> float:
    """Requests a second that ``share`` of this process's part of the key allows.

    The part is the learned rate times the process's share of the key's traffic (the
    rate limiter reads it off the board's X-RateLimit-Remaining): ten processes on one key
    each stretch their loops tenfold, so together they stay inside what one alone would
    use (before, ten idle replicas spent 75 of a key's 100 requests a minute on
    heartbeats).
    """
    return max(budget.rate_per_minute * budget.own_share(), 1e-6) / 60.0 * share


def stretched(base: float, requests_per_cycle: int, share: float, budget: BudgetSource) -> float:
    """The interval at which ``requests_per_cycle`` requests use at most ``share`` of the budget."""
    return max(base, requests_per_cycle / _per_second(share, budget))


def heartbeat_interval(
    server_interval: float, requests_per_cycle: int, budget: BudgetSource
) -> float:
    interval = stretched(server_interval, requests_per_cycle, HEARTBEAT_SHARE, budget)
    return min(interval, max(server_interval, HEARTBEAT_CEILING))


def progress_interval(
    base: float, busy_slots: int, budget: BudgetSource, requests_per_post: int = 1
) -> float:
    # Each busy slot posts at most one progress comment per interval (and, with a session,
    # one progress event with it).
    return stretched(base, max(busy_slots, 1) * requests_per_post, PROGRESS_SHARE, budget)


def keepalive_interval(lease_timeout: float) -> float:
    """How often a live session must show a sign of life: three times per lease, so one
    late keep-alive never lets another worker take the task of a live one."""
    return lease_timeout / 3


def keepalive_share(heartbeats_too: bool) -> float:
    """The keep-alives' share. Where the board has no heartbeats, theirs and what the other
    loops leave above the reserve (their interval is fixed by the lease, so they cannot
    stretch as heartbeats do); half the heartbeats' where a board has both."""
    if heartbeats_too:
        return HEARTBEAT_SHARE / 2
    return 1.0 - PROGRESS_SHARE - WATCH_SHARE - RESERVE_SHARE


def keepalives_fit(
    sessions: int, lease_timeout: float, budget: BudgetSource, heartbeats_too: bool = False
) -> bool:
    """Whether ``sessions`` keep-alives per ``keepalive_interval`` stay inside their share."""
    interval = keepalive_interval(lease_timeout)
    return stretched(interval, sessions, keepalive_share(heartbeats_too), budget) <= interval


def watch_interval(base: float, requests_per_cycle: int, budget: BudgetSource) -> float:
    return stretched(base, requests_per_cycle, WATCH_SHARE, budget)


def idle_poll_interval(floor: float, ceiling: float, budget: BudgetSource) -> float:
    """Seconds between polls of an idle process: its part of the key's idle-poll share."""
    return min(max(floor, 1.0 / _per_second(IDLE_POLL_SHARE, budget)), ceiling)


def chat_poll_interval(floor: float, budget: BudgetSource) -> float:
    """Seconds between two looks at the chat's pending messages."""
    return stretched(floor, 1, CHAT_SHARE, budget)


def jittered(seconds: float, spread: float = 0.1) -> float:
    """Spread periodic requests of many processes so they do not arrive in step."""
    return seconds * random.uniform(1.0 - spread, 1.0 + spread)  # noqa: S311 - not crypto
