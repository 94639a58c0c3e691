"""Ports for time and identity: the only places the engine meets the clock and randomness.

Everything the engine does with time or ids goes through a ``Clock`` and an ``IdSource`` given to
the ``Engine``, and every value they produce is recorded in an event, so a run folds to the same
state in any process. ``SystemClock`` and ``RandomIds`` are the production implementations;
``agentledger.engine.testing`` has deterministic ones.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Protocol

import anyio


class Clock(Protocol):
    """Tells the time and waits; injectable so tests can skip waits."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (retry back-off); a fake clock advances instead."""
        ...


class IdSource(Protocol):
    """Makes unique ids for runs, spans, calls, reservations and events."""

    def new_id(self) -> str:
        """A new id, unique across processes for production sources."""
        ...


def elapsed_ms(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end``, two readings of a ``Clock``."""
    return (end - start).total_seconds() * 1000


class SystemClock:
    """The machine's clock in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class RandomIds:
    """Unique ids: 64 random bits drawn once per source, then a counter (32 hex characters).

    Unique across processes and hosts (two sources share a prefix with odds of 2**-64), sortable
    by creation within one source, and cheap: an id costs no system call, which matters at
    several ids per event.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"
