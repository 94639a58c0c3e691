"""The wall clock a store stamps ``recorded_at`` with; injectable so tests can fix it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware ``datetime``."""


def utc_now() -> datetime:
    """The machine's current time in UTC."""
    return datetime.now(UTC)
