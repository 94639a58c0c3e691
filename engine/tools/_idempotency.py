"""What a new side-effecting call must do, given its key's ledger (pattern 7).

The ledger itself is a fold of the key's stream (``agentledger.projections.fold_key``); this
module holds the decision, which is the engine's policy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from agentledger.events import ToolCallDegraded, ToolCallSucceeded
from agentledger.projections._keys import KeyRecord

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
