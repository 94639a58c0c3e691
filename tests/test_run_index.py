"""The run index as a pure fold: properties over random multi-run logs, status rules, queries.

Logs are built as ``RecordedEvent``s directly (no store): several runs interleaved at random,
with model calls, pauses, budget stops, noise events the index must ignore, and budget ledger
events in per-user budget streams that carry a run id but must not be counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.events import (
    BudgetExceeded,
    BudgetReserved,
    BudgetSettled,
    Event,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunResumed,
    RunStarted,
    ToolCallSucceeded,
    TurnStarted,
    Usage,
)
from agentledger.projections import (
    KeyedFold,
    RunIndex,
    RunSummary,
    fold,
    get_run,
    list_runs,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
INDEX = RunIndex()


def record(items: list[tuple[str, Event]]) -> list[RecordedEvent]:
    """``(stream_id, event)`` pairs as the store would record them, positions from 1."""
    versions: Counter[str] = Counter()
    recorded = []
    for position, (stream_id, event) in enumerate(items, start=1):
        versions[stream_id] += 1
        recorded.append(
            RecordedEvent(
                stream_id=stream_id,
                version=versions[stream_id],
                position=position,
                event_id=f"e{position}",
                recorded_at=event.at,
                schema_version=1,
                event=event,
            )
        )
    return recorded


@dataclass
class Expected:
    """What a run's summary must say, worked out from the script that generated it."""

    status: str = "running"
    turns: int = 0
    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    flagged: bool = False
    ended: bool = False
    user_id: str = ""
    events: list[tuple[str, Event]] = field(default_factory=list)


_costs = st.decimals(min_value=0, max_value=Decimal("2.5"), places=6)
_steps = st.sampled_from(["turn", "turn", "turn", "pause", "resume", "budget", "noise"])
_ends = st.sampled_from([None, "completed", "failed", "cancelled"])


@st.composite
def run_logs(draw: st.DrawFn) -> tuple[list[RecordedEvent], dict[str, Expected]]:
    """A well-formed log of 1-4 runs interleaved at random, and what each run must sum to."""
    scripts: dict[str, Expected] = {}
    for n in range(draw(st.integers(1, 4))):
        run_id = f"run-{n}"
        stream = f"run-{run_id}"
        user = draw(st.sampled_from(["ann", "bob"]))
        exp = Expected(user_id=user)
        clock = iter(T0 + timedelta(minutes=n, seconds=s) for s in range(10_000))

        def base(
            span: str, *, run_id: str = run_id, clock: Iterator[datetime] = clock
        ) -> dict[str, Any]:
            return {"run_id": run_id, "span_id": span, "at": next(clock)}

        exp.events.append(
            (
                stream,
                RunStarted(
                    **base("root"),
                    agent=draw(st.sampled_from(["support", "research"])),
                    model="m-1",
                    task="t",
                    user_id=user,
                    forked_from=draw(st.none() | st.just("run-0")),
                ),
            )
        )
        for step in draw(st.lists(_steps, max_size=8)):
            if step == "turn":
                exp.turns += 1
                cost = draw(_costs)
                usage = Usage(input_tokens=draw(st.integers(0, 5000)), output_tokens=7)
                call = f"call-{exp.turns}"
                reservation = f"{run_id}-{call}"
                day = date(2025, 3, 1)
                exp.events += [
                    (stream, TurnStarted(**base(f"turn-{exp.turns}"), turn=exp.turns)),
                    (
                        f"budget-{user}",
                        BudgetReserved(
                            **base(call),
                            reservation_id=reservation,
                            user_id=user,
                            day=day,
                            model="m-1",
                            amount_usd=Decimal(3),
                        ),
                    ),
                    (stream, ModelCallRequested(**base(call), call_id=call, model="m-1")),
                    (
                        stream,
                        ModelCallResponded(
                            **base(call), call_id=call, model="m-1", usage=usage, cost_usd=cost
                        ),
                    ),
                    (
                        f"budget-{user}",
                        BudgetSettled(
                            **base(call),
                            reservation_id=reservation,
                            user_id=user,
                            day=day,
                            reserved_usd=Decimal(3),
                            actual_usd=cost,
                        ),
                    ),
                ]
                exp.cost += cost
                exp.input_tokens += usage.input_tokens
                exp.output_tokens += 7
            elif step == "pause":
                exp.events.append((stream, RunPaused(**base("root"), reason="confirm")))
                exp.status, exp.ended = "paused", False
            elif step == "resume":
                exp.events.append((stream, RunResumed(**base("root"))))
                exp.status, exp.ended = "running", False
            elif step == "budget":
                exp.events.append(
                    (
                        stream,
                        BudgetExceeded(
                            **base("root"),
                            scope="run",
                            cap_usd=Decimal(1),
                            committed_usd=Decimal(1),
                            requested_usd=Decimal("0.5"),
                        ),
                    )
                )
                exp.status, exp.ended = "budget_exceeded", True
            else:
                exp.events.append(
                    (stream, ToolCallSucceeded(**base("tool"), call_id="c", tool_name="search"))
                )
        end = draw(_ends)
        if end == "completed":
            exp.flagged = draw(st.booleans())
            exp.events.append(
                (stream, RunCompleted(**base("root"), output="ok", flagged=exp.flagged))
            )
            exp.status = "completed"
        elif end == "failed":
            exp.events.append((stream, RunFailed(**base("root"), error_type="E", message="m")))
            if exp.status != "budget_exceeded":
                exp.status = "failed"
        elif end == "cancelled":
            exp.events.append((stream, RunCancelled(**base("root"))))
            exp.status = "cancelled"
        exp.ended = exp.ended or end is not None
        scripts[run_id] = exp
    # Interleave the runs, keeping each run's own order.
    order = draw(st.permutations([run_id for run_id, exp in scripts.items() for _ in exp.events]))
    queues = {run_id: iter(exp.events) for run_id, exp in scripts.items()}
    return record([next(queues[run_id]) for run_id in order]), scripts


class PureRunIndex:
    """The run index without its accumulator fast path: only ``evolve_row``."""

    name = "run_index_pure"

    def key(self, recorded: RecordedEvent) -> str | None:
        return INDEX.key(recorded)

    def evolve_row(self, row: RunSummary | None, recorded: RecordedEvent) -> RunSummary | None:
        return INDEX.evolve_row(row, recorded)

    def encode_row(self, row: RunSummary) -> bytes:
        return INDEX.encode_row(row)

    def decode_row(self, data: bytes) -> RunSummary:
        return INDEX.decode_row(data)


COUNTED = {"run_started", "turn_started", "model_call_responded", "budget_exceeded"} | {
    f"run_{end}" for end in ("completed", "failed", "cancelled", "paused", "resumed")
}
PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(run_logs(), st.data())
def test_fold_of_concatenation_is_fold_of_folds(
    log: tuple[list[RecordedEvent], dict[str, Expected]], data: st.DataObject
) -> None:
    events, _ = log
    split = data.draw(st.integers(0, len(events)))
    xs, ys = events[:split], events[split:]
    assert fold(INDEX, xs + ys) == fold(INDEX, ys, fold(INDEX, xs))


@PROPERTY
@given(run_logs())
def test_summaries_match_the_scripts(log: tuple[list[RecordedEvent], dict[str, Expected]]) -> None:
    events, scripts = log
    rows = fold(INDEX, events)
    assert set(rows) == set(scripts)
    for run_id, exp in scripts.items():
        row = rows[run_id]
        assert (row.run_id, row.user_id, row.status) == (run_id, exp.user_id, exp.status)
        assert (row.turns, row.cost_usd, row.flagged) == (exp.turns, exp.cost, exp.flagged)
        assert (row.input_tokens, row.output_tokens) == (exp.input_tokens, exp.output_tokens)
        assert (row.ended_at is not None) == exp.ended
        assert row.started_at == exp.events[0][1].at
        counted = [e.at for s, e in exp.events if s.startswith("run-") and e.type in COUNTED]
        assert row.last_event_at == max(counted)
        assert type(row.cost_usd) is Decimal


@PROPERTY
@given(run_logs())
def test_every_fold_path_agrees(log: tuple[list[RecordedEvent], dict[str, Expected]]) -> None:
    events, _ = log
    batched = fold(INDEX, events)
    # evolve_row only (a new frozen row per event), and KeyedFold.evolve one event at a time.
    assert fold(PureRunIndex(), events) == batched
    keyed = KeyedFold(INDEX)
    state = keyed.initial()
    for recorded in events:
        state = keyed.evolve(state, recorded)
    assert state == batched
    # Rows survive their encoding exactly.
    assert {k: INDEX.decode_row(INDEX.encode_row(r)) for k, r in batched.items()} == batched


@PROPERTY
@given(run_logs(), st.data())
def test_evolve_and_fold_leave_their_input_state_alone(
    log: tuple[list[RecordedEvent], dict[str, Expected]], data: st.DataObject
) -> None:
    events, _ = log
    split = data.draw(st.integers(0, len(events)))
    state = fold(INDEX, events[:split])
    snapshot = dict(state)
    encoded = {k: INDEX.encode_row(r) for k, r in state.items()}
    keyed = KeyedFold(INDEX)
    for recorded in events[split:]:
        keyed.evolve(state, recorded)
        if state.get(INDEX.key(recorded) or ""):
            INDEX.evolve_row(state[INDEX.key(recorded) or ""], recorded)
    fold(INDEX, events[split:], state)
    assert state == snapshot
    assert all(state[k] is snapshot[k] for k in state)
    assert {k: INDEX.encode_row(r) for k, r in state.items()} == encoded


# -- status rules and edge cases ---------------------------------------------------------------


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(run_id: str = "r", *, user: str = "ann", seconds: int = 0) -> RunStarted:
    return RunStarted(
        run_id=run_id, span_id="root", at=at(seconds), agent="a", model="m", task="t", user_id=user
    )


def responded(cost: str, run_id: str = "r", seconds: int = 1) -> ModelCallResponded:
    return ModelCallResponded(
        run_id=run_id,
        span_id="c",
        at=at(seconds),
        call_id="c",
        model="m",
        usage=Usage(input_tokens=10, output_tokens=3),
        cost_usd=Decimal(cost),
    )


def one_run(*events: Event) -> RunSummary:
    rows = fold(INDEX, record([("run-r", e) for e in events]))
    return rows["r"]


def budget_exceeded(seconds: int) -> BudgetExceeded:
    return BudgetExceeded(
        run_id="r",
        span_id="root",
        at=at(seconds),
        scope="user_day",
        cap_usd=Decimal(5),
        committed_usd=Decimal(5),
        requested_usd=Decimal(1),
    )


def test_a_run_failed_after_its_budget_ran_out_stays_budget_exceeded() -> None:
    row = one_run(
        started(),
        budget_exceeded(2),
        RunFailed(run_id="r", span_id="root", at=at(3), error_type="BudgetExceeded", message="cap"),
    )
    assert (row.status, row.ended_at) == ("budget_exceeded", at(3))


def test_resume_reopens_a_budget_stop_and_clears_its_end() -> None:
    row = one_run(started(), budget_exceeded(2), RunResumed(run_id="r", span_id="root", at=at(3)))
    assert (row.status, row.ended_at, row.last_event_at) == ("running", None, at(3))


def test_nothing_after_the_end_of_a_run_counts() -> None:
    row = one_run(
        started(),
        responded("0.10"),
        RunCancelled(run_id="r", span_id="root", at=at(2)),
        responded("0.20", seconds=3),
        RunResumed(run_id="r", span_id="root", at=at(4)),
    )
    assert (row.status, row.cost_usd, row.ended_at) == ("cancelled", Decimal("0.10"), at(2))


def test_cost_is_exact_decimal_sum_of_model_responses_only() -> None:
    events = [started()] + [responded("0.1") for _ in range(10)]
    completed = RunCompleted(
        run_id="r", span_id="root", at=at(9), output="x", turns=4, cost_usd=Decimal(99)
    )
    row = one_run(*events, completed)
    assert row.cost_usd == Decimal("1.0")
    assert (row.input_tokens, row.output_tokens, row.turns) == (100, 30, 4)


def test_events_of_a_run_never_started_and_second_starts_are_ignored() -> None:
    log = record(
        [
            ("run-x", responded("1", run_id="x")),
            ("run-r", started()),
            ("run-r", started(user="mallory", seconds=5)),
        ]
    )
    rows = fold(INDEX, log)
    assert list(rows) == ["r"]
    assert (rows["r"].user_id, rows["r"].last_event_at) == ("ann", at(0))


# -- queries -----------------------------------------------------------------------------------


@pytest.fixture
def six_runs() -> dict[str, RunSummary]:
    items: list[tuple[str, Event]] = []
    for n, (user, end) in enumerate(
        [
            ("ann", None),
            ("bob", "done"),
            ("ann", "done"),
            ("ann", "pause"),
            ("bob", None),
            ("ann", "done"),
        ]
    ):
        run_id = f"r{n}"
        # Started in reverse order of their ids, and r4 at the same time as r5.
        items.append((f"run-{run_id}", started(run_id, user=user, seconds=100 - 10 * min(n, 4))))
        if end == "done":
            items.append(
                (
                    f"run-{run_id}",
                    RunCompleted(run_id=run_id, span_id="root", at=at(200), output=""),
                )
            )
        elif end == "pause":
            paused = RunPaused(run_id=run_id, span_id="root", at=at(200), reason="confirm")
            items.append((f"run-{run_id}", paused))
    return fold(INDEX, record(items))


def ids(rows: list[RunSummary]) -> list[str]:
    return [row.run_id for row in rows]


def test_list_runs_sorts_by_start_then_id_and_filters(six_runs: dict[str, RunSummary]) -> None:
    assert ids(list_runs(six_runs)) == ["r4", "r5", "r3", "r2", "r1", "r0"]
    assert ids(list_runs(six_runs, newest_first=True)) == ["r0", "r1", "r2", "r3", "r5", "r4"]
    assert ids(list_runs(six_runs, user_id="ann")) == ["r5", "r3", "r2", "r0"]
    assert ids(list_runs(six_runs, status="completed")) == ["r5", "r2", "r1"]
    assert ids(list_runs(six_runs, status=["running", "paused"], user_id="ann")) == ["r3", "r0"]
    assert ids(list_runs(six_runs, limit=2)) == ["r4", "r5"]
    assert ids(list_runs(six_runs, limit=None, user_id="bob")) == ["r4", "r1"]
    assert list_runs(six_runs, agent="nobody") == []
    assert get_run(six_runs, "r3") == six_runs["r3"]
    assert get_run(six_runs, "nope") is None


def test_time_windows_are_half_open(six_runs: dict[str, RunSummary]) -> None:
    # Starts: r4 and r5 at 60 s, r3 at 70, r2 at 80, r1 at 90, r0 at 100.
    early = list_runs(six_runs, started_before=at(80))
    late = list_runs(six_runs, started_after=at(80))
    assert ids(early) == ["r4", "r5", "r3"]
    assert ids(late) == ["r2", "r1", "r0"]
    assert ids(list_runs(six_runs, started_after=at(70), started_before=at(90))) == ["r3", "r2"]
