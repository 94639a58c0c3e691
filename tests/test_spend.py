"""Spend: the budget ledger fold (properties over random reserve/settle/release logs) and the
spend index by user-day and by run, folded purely and kept by a ``ProjectionRunner`` on every store.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.engine.policies._budget import day_stream
from agentledger.events import (
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    Event,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    TurnStarted,
)
from agentledger.projections import KeyedProjection, Projection, ProjectionRunner, fold
from agentledger.projections._spend import (
    LedgerProjection,
    LedgerState,
    SpendIndex,
    SpendRow,
    fold_ledger,
    spend_by_day,
    spend_for_run,
    spend_for_user_day,
)

D = Decimal
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
DAY = date(2025, 3, 1)


def reserved(
    rid: str, amount: str, *, run: str = "r1", user: str = "ann", day: date = DAY
) -> Event:
    return BudgetReserved(
        run_id=run,
        span_id=f"s-{rid}",
        at=T0,
        reservation_id=rid,
        user_id=user,
        day=day,
        model="m",
        amount_usd=D(amount),
    )


def settled(
    rid: str, reserved_usd: str, actual: str, *, run: str = "r1", user: str = "ann", day: date = DAY
) -> Event:
    return BudgetSettled(
        run_id=run,
        span_id=f"s-{rid}",
        at=T0,
        reservation_id=rid,
        user_id=user,
        day=day,
        reserved_usd=D(reserved_usd),
        actual_usd=D(actual),
    )


def released(
    rid: str, amount: str, *, run: str = "r1", user: str = "ann", day: date = DAY
) -> Event:
    return BudgetReleased(
        run_id=run,
        span_id=f"s-{rid}",
        at=T0,
        reservation_id=rid,
        user_id=user,
        day=day,
        amount_usd=D(amount),
        reason="failed",
    )


def noise(run: str = "r1") -> Event:
    return TurnStarted(run_id=run, span_id="t", at=T0, turn=1)


def record(items: list[tuple[str, Event]]) -> list[RecordedEvent]:
    """``(stream_id, event)`` pairs as a store would record them."""
    versions: Counter[str] = Counter()
    out = []
    for position, (stream_id, event) in enumerate(items, start=1):
        versions[stream_id] += 1
        out.append(
            RecordedEvent(stream_id, versions[stream_id], position, f"e{position}", T0, 1, event)
        )
    return out


def ledger_of(*events: Event) -> LedgerState:
    return fold_ledger(record([("budget-ann-2025-03-01", e) for e in events]))


# -- the ledger fold -------------------------------------------------------------------------


def test_reserve_settle_release() -> None:
    state = ledger_of(
        reserved("a", "0.50"),
        reserved("b", "0.30"),
        noise(),
        settled("a", "0.50", "0.2"),
        reserved("c", "0.10"),
        released("c", "0.10"),
    )
    assert state.version == 6
    assert state.settled == D("0.2")
    assert dict(state.outstanding) == {"b": D("0.30")}
    assert state.reserved == D("0.30")
    assert state.committed == D("0.50")


def test_repeats_and_strangers_change_nothing() -> None:
    base = [reserved("a", "0.50"), settled("a", "0.50", "0.25")]
    once = ledger_of(*base)
    again = ledger_of(
        *base,
        settled("a", "0.50", "0.25"),  # a second settle of the same reservation
        released("a", "0.50"),  # a release after its settle
        settled("ghost", "9", "9"),  # never reserved
        released("ghost", "9"),
    )
    assert (again.settled, dict(again.outstanding)) == (once.settled, {}) == (D("0.25"), {})
    assert again.version == 6  # every event moves the version, even ignored ones
    twice = ledger_of(reserved("a", "0.50"), reserved("a", "0.70"))
    assert dict(twice.outstanding) == {"a": D("0.50")}


def test_the_settled_amount_is_the_actual_cost_even_above_the_reservation() -> None:
    state = ledger_of(reserved("a", "0.01"), settled("a", "0.01", "0.013"))
    assert (state.settled, state.reserved) == (D("0.013"), 0)


def test_fold_is_pure_and_empty_folds_are_identity() -> None:
    first = ledger_of(reserved("a", "1"))
    log = record([("budget-x", reserved("a", "1")), ("budget-x", settled("a", "1", "0.5"))])
    after = fold_ledger(log[1:], first)
    assert dict(first.outstanding) == {"a": D("1")}
    assert after.settled == D("0.5") and not after.outstanding
    assert fold_ledger([], first) is first
    assert fold_ledger([]) == LedgerState()


def test_ledger_projection_folds_like_fold_ledger() -> None:
    projection = LedgerProjection()
    assert isinstance(projection, Projection)
    log = record([("run-r1", e) for e in (reserved("a", "1"), noise(), settled("a", "1", "0.4"))])
    assert fold(projection, log) == fold_ledger(log)
    state = projection.initial()
    for one in log:
        state = projection.evolve(state, one)
    assert state == fold_ledger(log)


ids = st.sampled_from(["a", "b", "c", "d", "e"])
amounts = st.decimals(min_value=0, max_value=5, places=6).map(str)
ledger_events = st.one_of(
    st.builds(reserved, ids, amounts),
    st.builds(settled, ids, amounts, amounts),
    st.builds(released, ids, amounts),
    st.builds(noise),
)


def reference(events: list[Event]) -> tuple[Decimal, dict[str, Decimal]]:
    """The ledger the fold must give, worked out with no shared code."""
    total, open_ = D(0), {}
    for event in events:
        if isinstance(event, BudgetReserved) and event.reservation_id not in open_:
            open_[event.reservation_id] = event.amount_usd
        elif isinstance(event, BudgetSettled) and event.reservation_id in open_:
            del open_[event.reservation_id]
            total += event.actual_usd
        elif isinstance(event, BudgetReleased):
            open_.pop(event.reservation_id, None)
    return total, open_


@settings(max_examples=120, deadline=None)
@given(events=st.lists(ledger_events, max_size=40), cut=st.integers(0, 40))
def test_fold_of_a_concatenation_is_a_fold_of_folds(events: list[Event], cut: int) -> None:
    log = record([("budget-ann-2025-03-01", e) for e in events])
    whole = fold_ledger(log)
    assert fold_ledger(log[cut:], fold_ledger(log[:cut])) == whole
    total, open_ = reference(events)
    assert whole.settled == total
    assert dict(whole.outstanding) == open_
    assert whole.version == len(events)


@settings(max_examples=120, deadline=None)
@given(events=st.lists(ledger_events, max_size=40))
def test_committed_is_settled_plus_outstanding_and_never_negative(events: list[Event]) -> None:
    state = LedgerState()
    for one in record([("budget-ann-2025-03-01", e) for e in events]):
        state = fold_ledger([one], state)
        assert state.committed == state.settled + sum(state.outstanding.values(), D(0))
        assert state.settled >= 0 and state.reserved >= 0 and state.committed >= 0


# -- the spend index -------------------------------------------------------------------------


def both_streams(*events: Event) -> list[tuple[str, Event]]:
    """Each budget event in its run's stream and its user's day stream, as the engine appends."""
    out: list[tuple[str, Event]] = []
    for event in events:
        assert isinstance(event, BudgetReserved | BudgetSettled | BudgetReleased)
        out.append((f"run-{event.run_id}", event))
        out.append((day_stream(event.user_id, event.day), event))
    return out


DAY2 = DAY + timedelta(days=1)
LOG = record(
    [
        *both_streams(
            reserved("a", "0.5", run="r1"),
            reserved("b", "0.5", run="r2"),
            settled("a", "0.5", "0.125", run="r1"),
            reserved("c", "0.2", run="r1"),
            released("b", "0.5", run="r2"),
            reserved("d", "0.4", run="r3", day=DAY2),
            settled("d", "0.4", "0.3", run="r3", day=DAY2),
            reserved("e", "1", run="r4", user="bob:smith"),
            settled("e", "1", "1", run="r4", user="bob:smith"),
        ),
        ("run-r1", noise("r1")),
        # Budget events in a stream of another kind feed neither kind of row.
        ("idem-xyz", reserved("z", "7", run="r1")),
    ]
)


def test_spend_by_user_day_and_by_run_counts_each_amount_once() -> None:
    rows = fold(SpendIndex(), LOG)
    ann = spend_for_user_day(rows, "ann", DAY)
    assert (ann.settled_usd, ann.reserved_usd, ann.calls) == (D("0.125"), D("0.2"), 1)
    assert spend_for_user_day(rows, "ann", DAY2).settled_usd == D("0.3")
    r1 = spend_for_run(rows, "r1")
    assert (r1.settled_usd, dict(r1.outstanding), r1.calls) == (D("0.125"), {"c": D("0.2")}, 1)
    assert spend_for_run(rows, "r2") == SpendRow()  # reserved, then released
    assert spend_for_run(rows, "r3").settled_usd == D("0.3")
    assert spend_for_run(rows, "nope") == SpendRow()
    assert spend_for_user_day(rows, "ann", DAY + timedelta(days=9)) == SpendRow()
    assert spend_by_day(rows, "ann") == [(DAY, D("0.125")), (DAY2, D("0.3"))]
    assert spend_by_day(rows, "bob:smith") == [(DAY, D("1"))]
    assert spend_by_day(rows, "bob") == []
    assert sorted(rows) == [
        "run:r1",
        "run:r2",
        "run:r3",
        "run:r4",
        "user:ann:2025-03-01",
        "user:ann:2025-03-02",
        "user:bob:smith:2025-03-01",
    ]
    # Each settled dollar is counted once on each side.
    user_total = sum((r.settled_usd for k, r in rows.items() if k.startswith("user:")), D(0))
    run_total = sum((r.settled_usd for k, r in rows.items() if k.startswith("run:")), D(0))
    assert user_total == run_total == D("1.425")


def test_spend_index_is_a_pure_keyed_projection() -> None:
    index = SpendIndex()
    assert isinstance(index, KeyedProjection)
    assert index.name == "spend"
    first = fold(index, LOG[:6])
    snapshot = dict(first)
    assert fold(index, LOG[6:], first) == fold(index, LOG)
    assert first == snapshot
    # An event that changes nothing keeps the very same row object.
    row = first["run:r1"]
    ghost = record([("run-r1", settled("ghost", "1", "1", run="r1"))])[0]
    assert index.evolve_row(row, ghost) is row
    assert index.evolve_row(None, ghost) is None


@settings(max_examples=60, deadline=None)
@given(events=st.lists(ledger_events, max_size=30))
def test_rows_round_trip_and_agree_with_the_ledger(events: list[Event]) -> None:
    budget = [e for e in events if not isinstance(e, TurnStarted)]
    log = record(both_streams(*budget))
    index = SpendIndex()
    rows = fold(index, log)
    for row in rows.values():
        assert index.decode_row(index.encode_row(row)) == row
    ledger = fold_ledger([r for r in log if r.stream_id.startswith("budget-")])
    day = spend_for_user_day(rows, "ann", DAY)
    assert (day.settled_usd, dict(day.outstanding)) == (ledger.settled, dict(ledger.outstanding))
    run = spend_for_run(rows, "r1")
    assert (run.settled_usd, run.reserved_usd) == (ledger.settled, ledger.reserved)


async def test_a_runner_keeps_the_spend_index_saved(store: EventStore) -> None:
    # The engine's shape of append: run stream and day stream in one atomic batch.
    for n, event in enumerate(
        (reserved("a", "0.5"), settled("a", "0.5", "0.125"), reserved("b", "0.25", run="r2"))
    ):
        assert isinstance(event, BudgetReserved | BudgetSettled)
        await store.append(
            StreamAppend(f"run-{event.run_id}", [NewEvent(event, f"run-{n}")]),
            StreamAppend(day_stream(event.user_id, event.day), [NewEvent(event, f"day-{n}")]),
        )
    async with ProjectionRunner(store, SpendIndex()) as runner:
        assert await runner.catch_up() == 6
        rows = runner.rows
        assert spend_for_user_day(rows, "ann", DAY) == SpendRow(D("0.125"), {"b": D("0.25")}, 1)
        assert spend_for_run(rows, "r2").reserved_usd == D("0.25")
    async with ProjectionRunner(store, SpendIndex()) as reopened:
        assert dict(reopened.rows) == dict(rows)  # decoded from what was saved
        assert reopened.position == 6
