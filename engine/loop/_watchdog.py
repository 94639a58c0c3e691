"""A watchdog for the event loop: it reports when something held the loop (a blocking call in
an ``async`` tool, a long computation) so that every other run of the process stood still.

It sleeps a short interval and measures how late it wakes up: a late wake-up is time the loop
could not run anything. It only observes and logs; nothing decides on what it measures (the log
of each run is the truth, and a lag reading is not in it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import anyio

logger = logging.getLogger("agentledger.engine.loop")

INTERVAL = 0.1
"""Seconds between two looks at the loop: ten cheap wake-ups a second."""


async def watch_loop(
    threshold: float,
    running_between: Callable[[float, float], Sequence[str]],
    *,
    interval: float = INTERVAL,
) -> None:
    """Log a warning whenever the loop woke this task more than ``threshold`` seconds late,
    naming the tool calls that were running meanwhile (``running_between(start, end)``, in
    ``time.monotonic`` seconds). Runs until cancelled."""
    while True:
        before = time.monotonic()
        await anyio.sleep(interval)
        after = time.monotonic()
        lag = after - before - interval
        if lag >= threshold:
            tools = running_between(before, after)
            logger.warning(
                "the event loop was blocked for %.2fs (warning at %gs): no run of this process "
                "could go on meanwhile; tool calls running then: %s",
                lag,
                threshold,
                "; ".join(tools) if tools else "none",
            )
