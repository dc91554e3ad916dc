"""The pool's upkeep loops, declared as data and run by one helper.

Each loop is a round (one heartbeat round, one takeaway check, one lease sweep) and an
interval asked anew before every round, because the shared budget stretches it as slots get
busy. The period counts from the start of a round: a round that spends a while in the rate
limiter must not push the next one past what the board expects (a heartbeat past the
board's offline threshold). A round that returns False says the board lacks its route; the
loop then ends with one line in the log. A round that meets a board error is logged and the
loop goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from loguru import logger

from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool.budget import jittered


@dataclass(frozen=True)
class Upkeep:
    name: str
    round: Callable[[], Awaitable[bool]]
    interval: Callable[[], float]
    unsupported: str  # logged when a round says the board lacks the route ("": said elsewhere)


async def run_upkeep(loop: Upkeep) -> None:
    """Run ``loop``'s rounds for ever: an interval first, then a round, and so on."""
    next_round = anyio.current_time() + jittered(loop.interval())
    while True:
        await anyio.sleep(max(0.0, next_round - anyio.current_time()))
        started = anyio.current_time()
        try:
            supported = await loop.round()
        except BoardError as exc:
            # A board in trouble (a 5xx storm, the network down) is the next round's: no
            # upkeep loop may end the process on it. A refused key is no BoardError.
            logger.warning("{} failed: {}", loop.name, exc)
            supported = True
        if not supported:
            if loop.unsupported:
                logger.info("{}", loop.unsupported)
            return
        next_round = started + jittered(loop.interval())
