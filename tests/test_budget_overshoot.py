"""Budget overshoot (issue 10): a reply that costs more than its reservation.

A server that ignores the output limit (llama.cpp's server ignores ``max_completion_tokens``)
can answer with far more tokens than were reserved. The engine records the overshoot with the
settlement, in the run's stream and the user's day ledger, and closes both: no further capped
model call for that run, nor for any run of that user on that day.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import orjson
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelReply,
    ModelRequest,
    Price,
    ToolContext,
    check_reservation,
    tool,
)
from agentledger.engine.cli import main
from agentledger.engine.otel import build_spans
from agentledger.engine.testing import FakeClock, ScriptedModel, call, reply
from agentledger.engine.testing._invariants import check_spend_within_caps
from agentledger.events import (
    BudgetExceeded,
    BudgetOvershot,
    BudgetReserved,
    BudgetSettled,
    Event,
    MemoryEventStore,
    NewEvent,
    RecordedEvent,
    RunStarted,
    SqliteEventStore,
    StreamAppend,
    Usage,
)
from agentledger.projections import (
    LedgerState,
    SpendIndex,
    fold,
    fold_ledger,
    fold_run,
    spend_for_run,
    spend_for_user_day,
    spend_rows_by_day,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = date(2026, 3, 1)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
D = Decimal


def budgets(per_run: str | None = None, per_day: str | None = None) -> Budgets:
    policy = BudgetPolicy(
        per_run_usd=D(per_run) if per_run else None,
        per_user_day_usd=D(per_day) if per_day else None,
    )
    return Budgets({"free": policy, "open": BudgetPolicy(per_run_usd=D("1"))})


# -- the folds -------------------------------------------------------------------------------


def _recorded(events: list[Event], stream: str) -> list[RecordedEvent]:
    """``events`` as one stream's store would record them."""
    return [RecordedEvent(stream, i, i, f"e{i}", T0, 1, event) for i, event in enumerate(events, 1)]


def _overshooting_call(rid: str, reserved: str, actual: str) -> list[Event]:
    common = {"run_id": "r1", "span_id": f"call-{rid}", "at": T0}
    money = {"reservation_id": rid, "user_id": "ada", "day": DAY}
    return [
        BudgetReserved(**common, **money, model="m", surface="free", amount_usd=D(reserved)),
        BudgetSettled(**common, **money, reserved_usd=D(reserved), actual_usd=D(actual)),
        BudgetOvershot(
            **common,
            **money,
            surface="free",
            model="m",
            reserved_usd=D(reserved),
            actual_usd=D(actual),
            over_usd=D(actual) - D(reserved),
        ),
    ]


def test_the_day_ledger_holds_the_real_cost_and_is_closed_by_the_first_overshoot() -> None:
    events = _recorded(
        [*_overshooting_call("a", "0.0001", "0.0008"), *_overshooting_call("b", "0.1", "0.3")],
        "budget-ada-2026-03-01",
    )
    ledger = fold_ledger(events)
    assert ledger.settled == D("0.3008")  # the actual costs, not the reservations
    assert ledger.outstanding == {}
    assert ledger.overshoots == 2
    assert ledger.overshot_usd == D("0.2007")
    assert ledger.closed and ledger.closed_by == "a"
    # Any split folds the same: a ledger read in pieces is the ledger read whole.
    for cut in range(len(events) + 1):
        assert fold_ledger(events[cut:], fold_ledger(events[:cut])) == ledger
    # Before the overshoot the ledger is open; settled alone does not close it.
    assert fold_ledger(events[:2]) == LedgerState(2, D("0.0008"), {})
    assert not fold_ledger(events[:2]).closed


def test_the_run_state_knows_its_caps_are_closed() -> None:
    started = RunStarted(
        run_id="r1", span_id="r1", at=T0, agent="a", model="m", task="t", user_id="ada"
    )
    events = _recorded([started, *_overshooting_call("a", "0.0001", "0.0008")], "run-r1")
    before = fold_run(events[:3])
    assert before.budget_closed_by is None and before.spent_usd == D("0.0008")
    state = fold_run(events)
    assert state.budget_closed_by == "a"
    assert [o.over_usd for o in state.overshoots] == [D("0.0007")]
    assert state.spent_usd == D("0.0008") and state.committed_usd == D("0.0008")
    assert state.status == "running"  # closed to capped calls, not ended: the next one ends it


def test_the_spend_index_counts_overshoots_per_day_and_per_run_and_keeps_them_saved() -> None:
    calls = _overshooting_call("a", "0.0001", "0.0008")
    index = SpendIndex()
    rows = fold(index, [*_recorded(calls, "budget-ada-2026-03-01"), *_recorded(calls, "run-r1")])
    day = spend_for_user_day(rows, "ada", DAY)
    run = spend_for_run(rows, "r1")
    for row in (day, run):  # each counted once, from its own kind of stream
        assert (row.settled_usd, row.calls, row.overshoots, row.overshot_usd) == (
            D("0.0008"),
            1,
            1,
            D("0.0007"),
        )
    assert spend_rows_by_day(rows, "ada") == [(DAY, day)]
    assert index.decode_row(index.encode_row(day)) == day
    # A row saved before overshoots were counted reads back with none.
    old = index.decode_row(orjson.dumps(["0.5", {}, 3]))
    assert (old.settled_usd, old.calls, old.overshoots, old.overshot_usd) == (D("0.5"), 3, 0, 0)


# -- the reservation decision ----------------------------------------------------------------

BOTH = BudgetPolicy(per_run_usd=D("1"), per_user_day_usd=D("5"))


def test_a_closed_run_refuses_any_amount_against_its_run_cap() -> None:
    refused = check_reservation(
        amount=D(0), run_committed=D("0.1"), day_committed=D("0.1"), policy=BOTH, run_closed_by="a"
    )
    assert refused is not None
    assert (refused.scope, refused.cap, refused.closed_by) == ("run", D("1"), "a")
    assert (refused.committed, refused.requested) == (D("0.1"), D(0))


def test_a_closed_run_without_a_run_cap_is_refused_against_the_day_cap() -> None:
    day_only = BudgetPolicy(per_user_day_usd=D("5"))
    refused = check_reservation(
        amount=D("0.01"),
        run_committed=D(0),
        day_committed=D("0.2"),
        policy=day_only,
        run_closed_by="a",
    )
    assert refused is not None
    assert (refused.scope, refused.cap, refused.committed, refused.closed_by) == (
        "user_day",
        D("5"),
        D("0.2"),
        "a",
    )


def test_a_closed_day_refuses_every_run_whose_surface_has_a_day_cap() -> None:
    refused = check_reservation(
        amount=D("0.01"), run_committed=D(0), day_committed=D(0), policy=BOTH, day_closed_by="b"
    )
    assert refused is not None
    assert (refused.scope, refused.closed_by) == ("user_day", "b")
    # A surface without a day cap promised nothing for the day: its own caps still apply.
    run_only = BudgetPolicy(per_run_usd=D("1"))
    kw = {"run_committed": D(0), "day_committed": D(0), "policy": run_only, "day_closed_by": "b"}
    assert check_reservation(amount=D("0.01"), **kw) is None  # type: ignore[arg-type]
    over = check_reservation(amount=D("2"), **kw)  # type: ignore[arg-type]
    assert over is not None and over.closed_by is None and over.scope == "run"


def test_open_ledgers_decide_as_before() -> None:
    kw = {"run_committed": D("0.5"), "day_committed": D("4.5"), "policy": BOTH}
    assert check_reservation(amount=D("0.5"), **kw) is None  # type: ignore[arg-type]
    over = check_reservation(amount=D("0.6"), **kw)  # type: ignore[arg-type]
    assert over is not None and over.scope == "run" and over.closed_by is None


# -- through the engine ----------------------------------------------------------------------


class Query(BaseModel):
    q: str


@tool
async def look(args: Query, ctx: ToolContext) -> str:
    """Look something up."""
    return "found"


RUNAWAY = Usage(input_tokens=20, output_tokens=50_000)
"""What a server that ignores ``max_tokens=10`` may bill: 0.40004 USD at ``PRICE``."""


def runaway_model() -> ScriptedModel:
    def script(request: ModelRequest) -> ModelReply:
        if any(m.role == "tool" for m in request.messages):
            return reply("never sent: the run is closed")
        return reply("Checking.", tool_calls=[call("look", {"q": "x"}, id="c1")], usage=RUNAWAY)

    return ScriptedModel(script, name="priced", price=PRICE)


async def test_an_overshoot_is_recorded_and_closes_the_run_and_the_users_day(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0)
    model = runaway_model()
    # Caps far above the overshoot: what stops the run is the overshoot, not the amounts.
    agent = Agent(name="a", model=model, tools=[look], max_tokens=10)
    store = MemoryEventStore()
    policy = budgets(per_run="5", per_day="50")
    caplog.set_level(logging.WARNING, logger="agentledger.engine.budget")
    async with store, Engine(store, clock=clock, budgets=policy, agents=[agent]) as engine:
        result = await engine.run(agent, "task", user_id="ada", surface="free", run_id="r1")
        events = [e.event for e in await store.read_stream("run-r1")]
        assert [e.type for e in events] == [
            "run_started",
            "turn_started",
            "model_call_requested",
            "budget_reserved",
            "model_call_responded",
            "budget_settled",
            "budget_overshot",
            "tool_call_intended",
            "tool_call_succeeded",
            "turn_started",
            "model_call_requested",
            "budget_exceeded",
        ]
        reserved, settled, overshot, exceeded = events[3], events[5], events[6], events[-1]
        assert isinstance(reserved, BudgetReserved) and isinstance(settled, BudgetSettled)
        assert isinstance(overshot, BudgetOvershot) and isinstance(exceeded, BudgetExceeded)
        assert settled.actual_usd == D("0.40004") == overshot.actual_usd
        assert overshot.reserved_usd == reserved.amount_usd < D("0.01")
        assert overshot.over_usd == settled.actual_usd - reserved.amount_usd
        assert (overshot.reservation_id, overshot.surface, overshot.model) == (
            reserved.reservation_id,
            "free",
            "priced",
        )
        assert exceeded.scope == "run" and exceeded.closed_by == reserved.reservation_id
        assert len(model.requests) == 1  # the second request was never sent

        assert result.status == "budget_exceeded" and result.overshot
        assert result.overshoots == (overshot,)
        assert result.output == "Checking."
        [warning] = [r for r in caplog.records if r.name == "agentledger.engine.budget"]
        assert "r1" in warning.getMessage() and "0.40004" in warning.getMessage()

        # The trace carries it as a span event, with the amounts.
        spans = build_spans(await store.read_stream("run-r1"))
        [marked] = [e for span in spans for e in span.events if e.name == "budget_overshot"]
        assert marked.attributes["agentledger.over_usd"] == str(overshot.over_usd)

        # The day ledger got the same overshoot, in the settlement's append, and is closed.
        day = await engine.spend_for_user("ada", DAY)
        assert day.closed_by == reserved.reservation_id
        assert day.settled == D("0.40004") and day.outstanding == {}
        ledger_types = [e.event.type for e in await store.read_stream("budget-ada-2026-03-01")]
        assert ledger_types == ["budget_reserved", "budget_settled", "budget_overshot"]
        run_row = await engine.spend_for_run("r1")
        assert run_row.settled == D("0.40004") and run_row.closed

        # Another run of ada that day, well within every cap, is refused before any request.
        other = await engine.run(
            Agent(name="b", model=runaway_model(), tools=[look]), "t", user_id="ada", surface="free"
        )
        assert other.status == "budget_exceeded" and not other.overshot
        refused = (await store.read_stream(f"run-{other.run_id}"))[-1].event
        assert isinstance(refused, BudgetExceeded)
        assert refused.scope == "user_day" and refused.closed_by == reserved.reservation_id
        # Resuming the ended run changes nothing and warns no more.
        assert (await engine.resume("r1")).overshoots == result.overshoots
        assert len([r for r in caplog.records if r.name == "agentledger.engine.budget"]) == 1

        # Another user, and a surface without a day cap, are not closed by ada's day.
        bob = await engine.run(Agent(name="c", model=_cheap()), "t", user_id="bob", surface="free")
        assert bob.status == "completed"
        no_day_cap = await engine.run(
            Agent(name="d", model=_cheap()), "t", user_id="ada", surface="open"
        )
        assert no_day_cap.status == "completed"
        # The next day is a new ledger.
        clock.advance(timedelta(days=1))
        tomorrow = await engine.run(
            Agent(name="e", model=_cheap()), "t", user_id="ada", surface="free"
        )
        assert tomorrow.status == "completed"

        replay = await engine.replay("r1")
        assert replay.matches, replay.divergence
        # Every event compared (ids aside), the overshoot and the closed cap included.
        assert [e.type for e in replay.replayed] == [e.type for e in replay.recorded]
        assert replay.replayed_spend_usd == D("0.40004")
        again = await engine.replay(other.run_id)
        assert again.matches, again.divergence
        await check_spend_within_caps(store, policy)


def _cheap() -> ScriptedModel:
    return ScriptedModel([reply("ok")], name="priced", price=PRICE)


async def test_the_spend_invariant_refuses_a_reservation_after_the_overshoot() -> None:
    """The invariant the property tests use knows the rule too (so it can fail)."""
    policy = budgets(per_run="5", per_day="50")
    store = MemoryEventStore()
    async with store, Engine(store, clock=FakeClock(T0), budgets=policy) as engine:
        agent = Agent(name="a", model=runaway_model(), tools=[look], max_tokens=10)
        await engine.run(agent, "task", user_id="ada", surface="free", run_id="r1")
        await check_spend_within_caps(store, policy)
        late = BudgetReserved(
            run_id="r9",
            span_id="x",
            at=T0,
            reservation_id="late",
            user_id="ada",
            day=DAY,
            surface="free",
            model="priced",
            amount_usd=D("0.001"),
        )
        await store.append(StreamAppend("budget-ada-2026-03-01", [NewEvent(late, "late")]))
        with pytest.raises(AssertionError, match="after the overshoot"):
            await check_spend_within_caps(store, policy)


def test_the_cli_shows_overshoots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "events.db"

    async def record() -> tuple[str, Event]:
        async with (
            SqliteEventStore(db) as store,
            Engine(store, clock=FakeClock(T0), budgets=budgets(per_run="5", per_day="50")) as e,
        ):
            agent = Agent(name="a", model=runaway_model(), tools=[look], max_tokens=10)
            result = await e.run(agent, "task", user_id="ada", surface="free", run_id="r1")
            events = await store.read_stream("run-r1")
            return result.run_id, next(r.event for r in events if r.type == "budget_reserved")

    run_id, reserved = anyio.run(record)
    assert isinstance(reserved, BudgetReserved)
    over = D("0.40004") - reserved.amount_usd
    assert main(["--db", str(db), "spend", "ada", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == [
        {
            "day": "2026-03-01",
            "settled_usd": "0.40004000",
            "overshoots": 1,
            "overshot_usd": str(over),
        }
    ]
    assert main(["--db", str(db), "spend", "ada"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[2].split() == ["2026-03-01", "0.40004000", "1", str(over)]
    assert "overshoot" in table.splitlines()[-1]
    assert main(["--db", str(db), "show", run_id]) == 0
    shown = capsys.readouterr().out
    assert "budget_overshot" in shown and "OVERSHOOT" in shown
    assert f"closed by the overshoot of reservation {reserved.reservation_id}" in shown
