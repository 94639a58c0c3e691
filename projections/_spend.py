"""Spend (pattern 5): budget ledgers as pure folds, and the spend index users query.

Every reservation, settlement and release is recorded twice by the engine, in one atomic
append: in the run's stream (``run-<id>``) and in the user's day stream (``budget-<user>-<day>``).
So ``fold_ledger`` over either stream gives that scope's ledger: what was settled, and which
reservations are still outstanding. The engine reserves against ``LedgerState.committed`` and
appends at ``LedgerState.version``, so two runs that read the same day ledger cannot both
commit past the cap.

``SpendIndex`` keeps the totals for queries: user rows from day streams only, run rows from run
streams only, so no amount is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from types import MappingProxyType

import orjson

from agentledger.events import (
    BudgetOvershot,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    RecordedEvent,
)

from ._streams import DAY_PREFIX, RUN_PREFIX

_ZERO = Decimal(0)

_BUDGET_EVENT_TYPES = frozenset(
    {"budget_reserved", "budget_settled", "budget_released", "budget_overshot"}
)


def _no_reservations() -> Mapping[str, Decimal]:
    return MappingProxyType({})


def _apply(outstanding: dict[str, Decimal], recorded: RecordedEvent) -> tuple[Decimal, int]:
    """Fold one budget event into ``outstanding`` in place; the settled amount and calls added.

    Repeats and strangers are no-ops: a reservation id seen again while outstanding is not
    reserved twice, and a settle or release of an id that is not outstanding (unknown, or
    already closed) changes nothing.
    """
    event = recorded.event
    if isinstance(event, BudgetReserved):
        outstanding.setdefault(event.reservation_id, event.amount_usd)
    elif isinstance(event, BudgetSettled):
        if outstanding.pop(event.reservation_id, None) is not None:
            return event.actual_usd, 1
    elif isinstance(event, BudgetReleased):
        outstanding.pop(event.reservation_id, None)
    return _ZERO, 0


@dataclass(frozen=True, slots=True)
class LedgerState:
    """One budget ledger (a run's or a user's day): settled cost and open reservations.

    ``version`` is the version of the last event folded from the ledger's stream (0: none), the
    expected version of the next append to it. ``outstanding`` maps reservation ids to amounts
    set aside and not yet settled or released.

    ``overshoots`` counts the calls that cost more than their reservation (``BudgetOvershot``)
    and ``overshot_usd`` by how much in all; ``settled`` already holds their real cost.
    ``closed_by`` is the reservation id of the first one: from then on the ledger is closed and
    no capped model call is reserved against it (for a day ledger: no run of that user that
    day). A closed ledger is never reopened; the next day is a new ledger.
    """

    version: int = 0
    settled: Decimal = _ZERO
    outstanding: Mapping[str, Decimal] = field(default_factory=_no_reservations)
    overshoots: int = 0
    overshot_usd: Decimal = _ZERO
    closed_by: str | None = None

    @property
    def closed(self) -> bool:
        """Whether an overshoot closed this ledger to further reservations."""
        return self.closed_by is not None

    @property
    def reserved(self) -> Decimal:
        """The total of the outstanding reservations."""
        return sum(self.outstanding.values(), _ZERO)

    @property
    def committed(self) -> Decimal:
        """Settled plus outstanding: what a cap is checked against."""
        return self.settled + self.reserved


def fold_ledger(events: Sequence[RecordedEvent], state: LedgerState | None = None) -> LedgerState:
    """The ledger after ``events`` (one stream's, in order), from ``state`` or an empty one.

    Budget events change the amounts; every event moves ``version``. ``state`` is left as it
    was, so ``fold_ledger(xs + ys) == fold_ledger(ys, fold_ledger(xs))``.
    """
    current = LedgerState() if state is None else state
    if not events:
        return current
    outstanding = dict(current.outstanding)
    settled = current.settled
    overshoots, overshot, closed_by = current.overshoots, current.overshot_usd, current.closed_by
    for recorded in events:
        if recorded.type in _BUDGET_EVENT_TYPES:
            event = recorded.event
            if isinstance(event, BudgetOvershot):
                overshoots += 1
                overshot += event.over_usd
                if closed_by is None:
                    closed_by = event.reservation_id
                continue
            amount, _ = _apply(outstanding, recorded)
            settled += amount
    return LedgerState(
        events[-1].version,
        settled,
        MappingProxyType(outstanding),
        overshoots,
        overshot,
        closed_by,
    )


class LedgerProjection:
    """``fold_ledger`` as a ``Projection[LedgerState]``, for ``fold`` and the replayer."""

    def initial(self) -> LedgerState:
        """An empty ledger at version 0."""
        return LedgerState()

    def evolve(self, state: LedgerState, recorded: RecordedEvent) -> LedgerState:
        """The ledger after ``recorded``."""
        return fold_ledger((recorded,), state)

    def evolve_all(self, state: LedgerState, events: Iterable[RecordedEvent]) -> LedgerState:
        """The ledger after all of ``events`` (one dict copy for the batch)."""
        return fold_ledger(list(events), state)


# -- the spend index -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Spend of one user-day or one run: settled dollars, open reservations, settled calls,
    and the overshoots among them (calls that cost more than reserved: how many, by how much)."""

    settled_usd: Decimal = _ZERO
    outstanding: Mapping[str, Decimal] = field(default_factory=_no_reservations)
    calls: int = 0
    overshoots: int = 0
    overshot_usd: Decimal = _ZERO

    @property
    def reserved_usd(self) -> Decimal:
        """The total of the reservations not yet settled or released."""
        return sum(self.outstanding.values(), _ZERO)


_NO_SPEND = SpendRow()


def user_day_key(user_id: str, day: date) -> str:
    """The ``SpendIndex`` key of a user's day."""
    return f"user:{user_id}:{day.isoformat()}"


def run_key(run_id: str) -> str:
    """The ``SpendIndex`` key of a run."""
    return f"run:{run_id}"


class SpendIndex:
    """Spend per user and day, and per run, as a ``KeyedProjection`` (saved under ``name``).

    Rows are keyed ``user:<user_id>:<day>`` (fed by budget events of ``budget-`` day streams)
    and ``run:<run_id>`` (fed by those of ``run-`` streams). The engine writes each budget
    event to both kinds of stream; taking each kind of row from one kind of stream counts every
    amount once. Fold it over ``read_all`` with ``fold(SpendIndex(), events)`` or keep it saved
    with a ``ProjectionRunner``; query the rows with ``spend_for_user_day``, ``spend_for_run``
    and ``spend_by_day``.
    """

    def __init__(self, *, name: str = "spend") -> None:
        self.name = name

    def key(self, recorded: RecordedEvent) -> str | None:
        """The row a budget event touches, by the kind of stream it is in; else ``None``."""
        if recorded.type not in _BUDGET_EVENT_TYPES:
            return None
        event = recorded.event
        if not isinstance(event, BudgetReserved | BudgetSettled | BudgetReleased | BudgetOvershot):
            return None
        stream = recorded.stream_id
        if stream.startswith(DAY_PREFIX):
            return user_day_key(event.user_id, event.day)
        if stream.startswith(RUN_PREFIX):
            return run_key(event.run_id)
        return None

    def evolve_row(self, row: SpendRow | None, recorded: RecordedEvent) -> SpendRow | None:
        """The row after ``recorded``; the same row when the event changes nothing."""
        current = _NO_SPEND if row is None else row
        event = recorded.event
        if isinstance(event, BudgetOvershot):
            return replace(
                current,
                overshoots=current.overshoots + 1,
                overshot_usd=current.overshot_usd + event.over_usd,
            )
        outstanding = dict(current.outstanding)
        amount, calls = _apply(outstanding, recorded)
        if calls == 0 and outstanding == current.outstanding:
            return row
        return replace(
            current,
            settled_usd=current.settled_usd + amount,
            outstanding=MappingProxyType(outstanding),
            calls=current.calls + calls,
        )

    def encode_row(self, row: SpendRow) -> bytes:
        """The row as JSON, amounts as exact decimal strings."""
        return orjson.dumps(
            [
                str(row.settled_usd),
                {rid: str(amount) for rid, amount in row.outstanding.items()},
                row.calls,
                row.overshoots,
                str(row.overshot_usd),
            ]
        )

    def decode_row(self, data: bytes) -> SpendRow:
        """A row back from ``encode_row`` bytes (rows saved before overshoots were counted
        have three fields: no overshoots)."""
        settled, outstanding, calls, *overshoots = orjson.loads(data)
        count, over = overshoots if overshoots else (0, "0")
        return SpendRow(
            settled_usd=Decimal(settled),
            outstanding=MappingProxyType(
                {str(rid): Decimal(amount) for rid, amount in outstanding.items()}
            ),
            calls=int(calls),
            overshoots=int(count),
            overshot_usd=Decimal(over),
        )


def spend_for_user_day(rows: Mapping[str, SpendRow], user_id: str, day: date) -> SpendRow:
    """What ``user_id`` spent on ``day`` (an empty row if nothing)."""
    return rows.get(user_day_key(user_id, day), _NO_SPEND)


def spend_for_run(rows: Mapping[str, SpendRow], run_id: str) -> SpendRow:
    """What run ``run_id`` spent (an empty row if nothing)."""
    return rows.get(run_key(run_id), _NO_SPEND)


def spend_by_day(rows: Mapping[str, SpendRow], user_id: str) -> list[tuple[date, Decimal]]:
    """``(day, settled dollars)`` for every day ``user_id`` has a ledger, oldest first."""
    return [(day, row.settled_usd) for day, row in spend_rows_by_day(rows, user_id)]


def spend_rows_by_day(rows: Mapping[str, SpendRow], user_id: str) -> list[tuple[date, SpendRow]]:
    """``(day, row)`` for every day ``user_id`` has a ledger, oldest first (the whole row:
    settled, reserved, calls and overshoots)."""
    found: list[tuple[date, SpendRow]] = []
    for key, row in rows.items():
        if not key.startswith("user:"):
            continue
        # The day is the last part and has no colon, so a user id with colons still splits right.
        owner, _, day = key[len("user:") :].rpartition(":")
        if owner == user_id:
            found.append((date.fromisoformat(day), row))
    found.sort(key=lambda pair: pair[0])
    return found
