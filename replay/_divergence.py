"""Comparing a replayed run with its recording, and the report when they part ways."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.events import EventBase, RecordedEvent

# Fields that differ between two faithful executions: fresh ids, clock readings, durations.
_VOLATILE = frozenset(
    {
        "run_id",
        "span_id",
        "parent_span_id",
        "at",
        "duration_ms",
        "reservation_id",
        "until",
        "expires_at",
    }
)
# In these events ``call_id`` is a fresh id of the engine's; in tool events it is the model's.
_FRESH_CALL_IDS = frozenset(
    {
        "model_call_requested",
        "model_call_responded",
        "model_call_failed",
        "model_call_interrupted",
        "model_call_retried",
        "model_fell_back",
    }
)


class ReplayError(Exception):
    """Raised for any failure of a replay (the root of ``agentledger.replay``'s errors)."""


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where a replay stopped matching its recording.

    ``version`` is the version in the recorded stream (``None`` when the replay went on past
    the end of the recording); ``expected`` and ``actual`` are the stable fields of the recorded
    and the replayed event (``None`` when one side has no event there).
    """

    version: int | None
    expected: Mapping[str, Any] | None
    actual: Mapping[str, Any] | None
    reason: str

    def __str__(self) -> str:
        where = f"at recorded version {self.version}" if self.version else "after the recording"
        return (
            f"replay diverged {where}: {self.reason}\n"
            f"  expected: {dict(self.expected) if self.expected else None}\n"
            f"  actual:   {dict(self.actual) if self.actual else None}"
        )


class NondeterminismError(ReplayError):
    """Raised by ``ReplayReport.check`` when a replay diverged from its recording: the code, the
    prompt or the model changed since the run was recorded."""

    def __init__(self, divergence: Divergence) -> None:
        self.divergence = divergence
        super().__init__(str(divergence))


_SET_OR_NOT = frozenset({"closed_by"})
"""Fields holding a fresh id (a reservation's) or ``None``: a replay makes other ids, but
whether the field is set (a cap closed by an overshoot, or not) it reproduces exactly."""


def stable_fields(event: EventBase) -> dict[str, Any]:
    """The fields of an event that a faithful replay reproduces exactly."""
    fresh = event.__dict__.get("type") in _FRESH_CALL_IDS
    volatile = _VOLATILE | ({"call_id"} if fresh else frozenset())
    return {
        k: (v is not None) if k in _SET_OR_NOT else v
        for k, v in event.__dict__.items()
        if k not in volatile
    }


def first_divergence(
    recorded: Sequence[RecordedEvent], replayed: Sequence[RecordedEvent]
) -> Divergence | None:
    """The first place where ``replayed`` differs from ``recorded``, or ``None``."""
    expected, actual = recorded, replayed
    for want, got in zip(expected, actual, strict=False):
        old, new = stable_fields(want.event), stable_fields(got.event)
        if old != new:
            if want.event.type == got.event.type:
                fields = ", ".join(
                    sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                )
                reason = f"{want.event.type} differs in {fields}"
            else:
                reason = f"recorded {want.event.type}, replayed {got.event.type}"
            return Divergence(version=want.version, expected=old, actual=new, reason=reason)
    if len(expected) > len(actual):
        missing = expected[len(actual)]
        return Divergence(
            missing.version, stable_fields(missing.event), None, "the replay ended early"
        )
    if len(actual) > len(expected):
        extra = actual[len(expected)]
        return Divergence(None, None, stable_fields(extra.event), "the replay went on further")
    return None
