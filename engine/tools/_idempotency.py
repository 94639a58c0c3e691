"""The idempotency ledger: one stream per key holding intents and outcomes of side effects.

A side-effecting call appends its intent to its run's stream *and* to ``idem-<key>`` in one atomic
append, expecting the key stream's version it read. Two runs (in one process or many) racing on
one key cannot both intend it; the loser re-reads and finds the winner's intent or outcome. The
outcome is appended to both streams too, so a lookup is one short stream read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from agentledger.events import (
    RecordedEvent,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
)


def key_stream(key: str) -> str:
    """The stream id of an idempotency key's ledger."""
    return f"idem-{key}"


Outcome = ToolCallSucceeded | ToolCallDegraded | ToolOutcomeUnknown


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The newest intent on a key and the outcome recorded for it, if any."""

    version: int = 0
    intent: ToolCallIntended | None = None
    outcome: Outcome | None = None


def fold_key(events: Sequence[RecordedEvent]) -> KeyRecord:
    """The state of one key from its ledger stream."""
    record = KeyRecord()
    for recorded in events:
        event = recorded.event
        if isinstance(event, ToolCallIntended):
            record = KeyRecord(recorded.version, event, None)
        elif isinstance(event, ToolCallSucceeded | ToolCallDegraded | ToolOutcomeUnknown):
            record = KeyRecord(recorded.version, record.intent, event)
        else:
            record = KeyRecord(recorded.version, record.intent, record.outcome)
    return record


Verdict = Literal["run", "reuse", "conflict", "in_doubt"]


def judge(
    record: KeyRecord,
    *,
    same_arguments: bool,
    now: datetime,
    retention: timedelta,
) -> Verdict:
    """What a new call with this key must do, given what the ledger holds.

    - ``run``: nothing usable is recorded (no intent, an expired one, or a recorded failure):
      intend and execute.
    - ``reuse``: a success within the retention: return it without executing.
    - ``conflict``: a success within the retention, but for other arguments: refuse.
    - ``in_doubt``: an intent whose outcome is unknown (interrupted elsewhere, or reported
      unknown): executing again could repeat the side effect, so the model is told.
    """
    intent = record.intent
    if intent is None or now - intent.at > retention:
        return "run"
    outcome = record.outcome
    if isinstance(outcome, ToolCallSucceeded):
        return "reuse" if same_arguments else "conflict"
    if isinstance(outcome, ToolCallDegraded):
        return "run"  # every tier failed before: the model asked again, so try again
    return "in_doubt"
