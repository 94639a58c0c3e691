"""``RunIndex``: one summary row per run (who, what, status, turns, tokens, exact cost).

Only the event types that describe a run's life count (``RunStarted``, ``TurnStarted``, the
pause/resume and end events, ``BudgetExceeded``, ``ModelCallResponded``); each is recorded once,
in its run's stream. Budget ledger events carry a ``run_id`` too but may live in a per-user budget
stream, so cost and tokens come from ``ModelCallResponded`` alone and are never counted twice.

Status follows the latest status event, with two rules: nothing after ``RunCompleted``,
``RunFailed`` or ``RunCancelled`` belongs to the run (the catalog's contract), and a run stopped
by ``BudgetExceeded`` stays ``budget_exceeded`` when the engine then closes it with
``RunFailed``, because the budget is the reason it failed. ``RunResumed`` makes any non-final run
``running`` again.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, Literal

import orjson

from agentledger.events import (
    RecordedEvent,
)

RunStatus = Literal["running", "paused", "completed", "failed", "cancelled", "budget_exceeded"]
"""Where a run stands, as the run index sees it."""

_FINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

_RUN_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "run_started",
        "turn_started",
        "run_completed",
        "run_failed",
        "run_cancelled",
        "run_paused",
        "run_resumed",
        "model_call_responded",
        "budget_exceeded",
    }
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the run index.

    ``cost_usd`` and the token counts are sums over the run's ``ModelCallResponded`` events
    (every purpose: agent, summary, judge). ``turns`` is the highest turn started. ``ended_at``
    is the time of the event that ended the run (``None`` while it can still go on);
    ``last_event_at`` the time of the latest event counted.
    """

    run_id: str
    agent: str
    user_id: str
    surface: str
    model: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    last_event_at: datetime
    turns: int
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    flagged: bool
    forked_from: str | None
    parent_run_id: str | None = None


@dataclass(slots=True)
class _RunTally:
    # The mutable twin of RunSummary (same fields, same order) that a batch folds into.
    run_id: str
    agent: str
    user_id: str
    surface: str
    model: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    last_event_at: datetime
    turns: int
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    flagged: bool
    forked_from: str | None
    parent_run_id: str | None = None


_FIELD_NAMES = tuple(f.name for f in fields(RunSummary))
if tuple(f.name for f in fields(_RunTally)) != _FIELD_NAMES:  # pragma: no cover
    raise AssertionError("RunSummary and _RunTally must have the same fields in the same order")
_all_fields = attrgetter(*_FIELD_NAMES)


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _optional_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class RunIndex:
    """The run index projection: ``{run_id: RunSummary}``, saved under ``name``.

    Use with ``fold(RunIndex(), events)`` for a one-off state, or keep it saved with
    ``ProjectionRunner(store, RunIndex())``; query the rows with ``get_run`` and ``list_runs``.
    Folding batches goes through a mutable accumulator per run (``thaw``/``accumulate``/
    ``freeze``), so a long run costs one new ``RunSummary`` per batch, not one per event.
    """

    def __init__(self, *, name: str = "run_index") -> None:
        self.name = name

    def key(self, recorded: RecordedEvent) -> str | None:
        """The event's run id if it is one of the run events the index counts, else ``None``."""
        # The envelope's tag first: events the index skips are never decoded.
        return recorded.event.run_id if recorded.type in _RUN_EVENT_TYPES else None

    def evolve_row(self, row: RunSummary | None, recorded: RecordedEvent) -> RunSummary | None:
        """The run's summary after ``recorded`` (pure: ``row`` is frozen and left as it is)."""
        acc = self.accumulate(None if row is None else self.thaw(row), recorded)
        return None if acc is None else self.freeze(acc)

    def thaw(self, row: RunSummary) -> _RunTally:
        """A mutable copy of ``row`` to fold a batch into."""
        return _RunTally(*_all_fields(row))

    def freeze(self, acc: _RunTally) -> RunSummary:
        """The frozen summary for a tally."""
        return RunSummary(*_all_fields(acc))

    def accumulate(self, acc: _RunTally | None, recorded: RecordedEvent) -> _RunTally | None:
        """Fold one run event into the run's tally, in place."""
        event = recorded.event
        if acc is None:
            if event.type == "run_started":
                return _RunTally(
                    run_id=event.run_id,
                    agent=event.agent,
                    user_id=event.user_id,
                    surface=event.surface,
                    model=event.model,
                    status="running",
                    started_at=event.at,
                    ended_at=None,
                    last_event_at=event.at,
                    turns=0,
                    cost_usd=Decimal(0),
                    input_tokens=0,
                    output_tokens=0,
                    flagged=False,
                    forked_from=event.forked_from,
                    parent_run_id=event.parent_run_id,
                )
            # An event of a run whose start the log does not hold: there is nothing to attach
            # it to (who, which agent), so it is not indexed.
            return None
        if acc.status in _FINAL:
            return acc
        # Dispatch on the tag, not isinstance: pydantic's metaclass makes isinstance checks
        # cost more than the whole update. Ordered by how often each type occurs in a run.
        if event.type == "model_call_responded":
            acc.cost_usd += event.cost_usd
            usage = event.usage
            acc.input_tokens += usage.input_tokens
            acc.output_tokens += usage.output_tokens
        elif event.type == "turn_started":
            if event.turn > acc.turns:
                acc.turns = event.turn
        elif event.type == "run_completed":
            acc.status = "completed"
            acc.ended_at = event.at
            acc.flagged = event.flagged
            if event.turns > acc.turns:
                acc.turns = event.turns
        elif event.type == "run_failed":
            if acc.status != "budget_exceeded":
                acc.status = "failed"
            acc.ended_at = event.at
        elif event.type == "run_cancelled":
            acc.status = "cancelled"
            acc.ended_at = event.at
        elif event.type == "run_paused":
            acc.status = "paused"
            acc.ended_at = None
        elif event.type == "run_resumed":
            acc.status = "running"
            acc.ended_at = None
        elif event.type == "budget_exceeded":
            acc.status = "budget_exceeded"
            acc.ended_at = event.at
        else:
            # A second RunStarted for a run already started (the first one stands), or an
            # event the index does not count.
            return acc
        acc.last_event_at = event.at
        return acc

    def encode_row(self, row: RunSummary) -> bytes:
        """The row as a JSON object (money as a decimal string, times as ISO 8601)."""
        return orjson.dumps(row, default=_encode_default)

    def decode_row(self, data: bytes) -> RunSummary:
        """A row back from ``encode_row`` bytes."""
        raw = orjson.loads(data)
        return RunSummary(
            run_id=raw["run_id"],
            agent=raw["agent"],
            user_id=raw["user_id"],
            surface=raw["surface"],
            model=raw["model"],
            status=raw["status"],
            started_at=datetime.fromisoformat(raw["started_at"]),
            ended_at=_optional_time(raw["ended_at"]),
            last_event_at=datetime.fromisoformat(raw["last_event_at"]),
            turns=raw["turns"],
            cost_usd=Decimal(raw["cost_usd"]),
            input_tokens=raw["input_tokens"],
            output_tokens=raw["output_tokens"],
            flagged=raw["flagged"],
            forked_from=raw["forked_from"],
            parent_run_id=raw.get("parent_run_id"),  # rows saved before sub-agents lack it
        )


def get_run(rows: Mapping[str, RunSummary], run_id: str) -> RunSummary | None:
    """The summary of ``run_id`` in a run index state (a runner's ``rows`` or a ``fold``)."""
    return rows.get(run_id)


def _start_order(row: RunSummary) -> tuple[datetime, str]:
    return row.started_at, row.run_id


def list_runs(
    rows: Mapping[str, RunSummary],
    *,
    user_id: str | None = None,
    status: RunStatus | Collection[RunStatus] | None = None,
    agent: str | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    limit: int | None = 100,
    newest_first: bool = False,
) -> list[RunSummary]:
    """Runs of a run index state that match every filter given, by start time (then run id).

    ``status`` is one status or several. The time window is ``started_after <= started_at <
    started_before``, so consecutive windows neither overlap nor leave a gap. ``limit=None``
    returns all matches.
    """
    statuses: Collection[str] | None = (status,) if isinstance(status, str) else status
    matches = [
        row
        for row in rows.values()
        if (user_id is None or row.user_id == user_id)
        and (statuses is None or row.status in statuses)
        and (agent is None or row.agent == agent)
        and (started_after is None or row.started_at >= started_after)
        and (started_before is None or row.started_at < started_before)
    ]
    if limit is None:
        return sorted(matches, key=_start_order, reverse=newest_first)
    if newest_first:
        return heapq.nlargest(limit, matches, key=_start_order)
    return heapq.nsmallest(limit, matches, key=_start_order)
