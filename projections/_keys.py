"""The idempotency ledger of one key, as a fold of its stream (``idem-<key>``).

A side-effecting call appends its intent to its run's stream *and* to the key's stream in one
atomic append, expecting the key stream's version it read; its outcome goes to both streams
too. So two runs (in one process or many) racing on one key cannot both intend it, and a
lookup is one short stream read folded by ``fold_key``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentledger.events import (
    RecordedEvent,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
)

KeyOutcome = ToolCallSucceeded | ToolCallDegraded | ToolOutcomeUnknown
"""What a key's ledger may record as the outcome of its newest intent."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The newest intent on a key and the outcome recorded for it, if any.

    ``version`` is the key stream's version folded so far: the expected version of the next
    intent on the key.
    """

    version: int = 0
    intent: ToolCallIntended | None = None
    outcome: KeyOutcome | None = None


def fold_key(events: Sequence[RecordedEvent], record: KeyRecord | None = None) -> KeyRecord:
    """The state of one key after ``events`` of its ledger stream (from ``record``, or empty)."""
    current = KeyRecord() if record is None else record
    for recorded in events:
        event = recorded.event
        if isinstance(event, ToolCallIntended):
            current = KeyRecord(recorded.version, event, None)
        elif isinstance(event, ToolCallSucceeded | ToolCallDegraded | ToolOutcomeUnknown):
            current = KeyRecord(recorded.version, current.intent, event)
        else:
            current = KeyRecord(recorded.version, current.intent, current.outcome)
    return current
