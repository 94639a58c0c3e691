"""Values the command line checks as it parses: counts, times."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from agentledger.events._time import utc_now

_AGO = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def positive_int(value: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def when(value: str) -> datetime:
    """An argparse type: an ISO date or time (UTC unless it says otherwise), or an age such as
    ``30m``, ``2h``, ``7d`` (that long before now)."""
    ago = _AGO.match(value.strip())
    if ago:
        return utc_now() - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {value!r} (e.g. 2026-11-29, 2026-11-29T14:00, 2h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
