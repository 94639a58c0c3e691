"""Pattern 5 through real runs: reservations, caps, settlement, release, and spend queries."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime
from decimal import Decimal

import anyio
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
    UnknownPriceError,
    UnknownSurfaceError,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, call, reply
from agentledger.events import (
    BudgetExceeded,
    BudgetReserved,
    BudgetSettled,
    EventStore,
    MemoryEventStore,
    NewEvent,
    StreamAppend,
    Usage,
)
from agentledger.projections import fold_ledger

StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = date(2026, 3, 1)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
"""Dear enough that one call costs a visible fraction of a cent."""


def answering(text: str = "Done.", output_tokens: int = 5) -> ScriptedModel:
    usage = Usage(input_tokens=10, output_tokens=output_tokens)
    return ScriptedModel(lambda request: reply(text, usage=usage), name="priced", price=PRICE)


def budgets(per_run: str | None = None, per_day: str | None = None) -> Budgets:
    policy = BudgetPolicy(
        per_run_usd=Decimal(per_run) if per_run else None,
        per_user_day_usd=Decimal(per_day) if per_day else None,
    )
    return Budgets({"free": policy})


async def _prior_spend(store: EventStore, user: str, amount: Decimal) -> None:
    """Spend already on the user's ledger today (an earlier run, settled)."""
    common = {"run_id": "earlier", "span_id": "earlier", "at": T0}
    reserved = BudgetReserved(
        **common, reservation_id="old", user_id=user, day=DAY, model="priced", amount_usd=amount
    )
    settled = BudgetSettled(
        **common,
        reservation_id="old",
        user_id=user,
        day=DAY,
        reserved_usd=amount,
        actual_usd=amount,
    )
    stream = f"budget-{user}-{DAY.isoformat()}"
    await store.append(StreamAppend(stream, [NewEvent(reserved, "p1"), NewEvent(settled, "p2")]))


async def test_a_call_reserves_then_settles_the_real_cost_in_both_ledgers() -> None:
    async with (
        MemoryEventStore() as store,
        Engine(store, clock=FakeClock(T0), budgets=budgets(per_run="1", per_day="5")) as engine,
    ):
        agent = Agent(name="a", model=answering())
        result = await engine.run(agent, "hello", user_id="ada", surface="free")
        events = await store.read_stream(f"run-{result.run_id}")
        types = [e.event.type for e in events]
        assert types == [
            "run_started",
            "turn_started",
            "model_call_requested",
            "budget_reserved",
            "model_call_responded",
            "budget_settled",
            "run_completed",
        ]
        reserved = next(e.event for e in events if isinstance(e.event, BudgetReserved))
        settled = next(e.event for e in events if isinstance(e.event, BudgetSettled))
        # Reply usage is 10 input and 5 output tokens: 10 * 2 + 5 * 8 dollars per million.
        assert settled.actual_usd == Decimal("0.00006")
        assert result.cost_usd == settled.actual_usd
        assert reserved.amount_usd > settled.actual_usd  # the worst case bounds the real cost
        day = await engine.spend_for_user("ada", DAY)
        run = await engine.spend_for_run(result.run_id)
        assert day.settled == run.settled == Decimal("0.00006")
        assert day.outstanding == {} and run.outstanding == {}


async def test_64_concurrent_runs_of_one_user_never_settle_more_than_the_daily_cap(
    store_factory: StoreFactory,
) -> None:
    cap = Decimal("0.05")
    async with store_factory() as seed:
        # Nearly spent: what is left covers a handful of worst-case reservations, not 64.
        await _prior_spend(seed, "ada", cap - Decimal("0.03"))
    results = []
    # Two engines on two store objects: like two processes sharing the database.
    async with store_factory() as one, store_factory() as two:
        engines = [
            Engine(one, clock=FakeClock(T0), budgets=budgets(per_day=str(cap))),
            Engine(two, clock=FakeClock(T0), budgets=budgets(per_day=str(cap))),
        ]
        # Each answer costs 0.012 (1,500 output tokens); each reservation is about 0.017.
        agent = Agent(name="a", model=answering(output_tokens=1_500), max_tokens=2_000)
        async with engines[0], engines[1], anyio.create_task_group() as tg:

            async def one_run(index: int) -> None:
                engine = engines[index % 2]
                results.append(
                    await engine.run(agent, f"task {index}", user_id="ada", surface="free")
                )

            for index in range(64):
                tg.start_soon(one_run, index)
        ledger = fold_ledger(await one.read_stream(f"budget-ada-{DAY.isoformat()}"))
    statuses = sorted({r.status for r in results})
    assert statuses == ["budget_exceeded", "completed"]
    assert ledger.outstanding == {}
    assert ledger.settled <= cap
    completed = [r for r in results if r.status == "completed"]
    assert ledger.settled == cap - Decimal("0.03") + sum(r.cost_usd for r in completed)


class Query(BaseModel):
    q: str


@tool
async def look(args: Query, ctx: ToolContext) -> str:
    """Look something up."""
    return "found"


async def test_the_run_cap_ends_the_run_with_its_best_answer() -> None:
    expensive = Usage(input_tokens=100, output_tokens=900)  # 0.0074 of the 0.012 cap

    def script(request: ModelRequest) -> ModelReply:
        if any(m.role == "tool" for m in request.messages):
            return reply("never sent")
        return reply(
            "Draft: checking.", tool_calls=[call("look", {"q": "x"}, id="c1")], usage=expensive
        )

    model = ScriptedModel(script, name="priced", price=PRICE)
    agent = Agent(name="a", model=model, tools=[look], max_tokens=1_000)
    async with (
        MemoryEventStore() as store,
        Engine(store, clock=FakeClock(T0), budgets=budgets(per_run="0.012")) as engine,
    ):
        result = await engine.run(agent, "task", user_id="ada", surface="free")
        events = await store.read_stream(f"run-{result.run_id}")
        run_ledger = await engine.spend_for_run(result.run_id)
    assert run_ledger.settled <= Decimal("0.012")
    assert run_ledger.outstanding == {}
    assert result.status == "budget_exceeded"
    assert result.output == "Draft: checking."
    exceeded = events[-1].event
    assert isinstance(exceeded, BudgetExceeded)
    assert exceeded.scope == "run"
    assert exceeded.committed_usd + exceeded.requested_usd > exceeded.cap_usd
    assert len(model.requests) == 1  # the second call was never made


async def test_a_cancelled_run_leaks_no_reservation() -> None:
    entered = anyio.Event()

    class Hanging:
        name = "priced"
        price = PRICE

        async def complete(self, request: ModelRequest) -> ModelReply:
            entered.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    agent = Agent(name="a", model=Hanging())
    async with (
        MemoryEventStore() as store,
        Engine(store, clock=FakeClock(T0), budgets=budgets(per_day="1")) as engine,
    ):
        result = None
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                nonlocal result
                result = await engine.run(agent, "t", user_id="ada", surface="free", run_id="r1")

            tg.start_soon(run)
            await entered.wait()
            assert (await engine.spend_for_user("ada", DAY)).outstanding != {}
            await engine.cancel("r1")
        assert result is not None and result.status == "cancelled"
        day = await engine.spend_for_user("ada", DAY)
        run = await engine.spend_for_run("r1")
        assert day.outstanding == {} and run.outstanding == {}
        assert day.settled == Decimal(0)
        types = [e.event.type for e in await store.read_stream("run-r1")]
        assert types[-2:] == ["budget_released", "run_cancelled"]


async def test_an_interrupted_run_releases_its_reservation_when_resumed() -> None:
    entered = anyio.Event()
    hang = True

    class Flaky:
        name = "priced"
        price = PRICE

        async def complete(self, request: ModelRequest) -> ModelReply:
            if hang:
                entered.set()
                await anyio.sleep_forever()
            return reply("Back.")

    agent = Agent(name="a", model=Flaky())
    async with MemoryEventStore() as store:
        async with Engine(store, clock=FakeClock(T0), budgets=budgets(per_day="1")) as engine:
            with anyio.CancelScope() as scope:  # the process "dies" mid-call

                async def kill() -> None:
                    await entered.wait()
                    scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill)
                    await engine.run(agent, "t", user_id="ada", surface="free", run_id="r1")
        assert (await Engine(store).spend_for_user("ada", DAY)).outstanding != {}
        hang = False
        async with Engine(
            store, agents=[agent], clock=FakeClock(T0), budgets=budgets(per_day="1")
        ) as engine:
            result = await engine.resume("r1")
            day = await engine.spend_for_user("ada", DAY)
    assert result.status == "completed"
    assert day.outstanding == {}
    assert day.settled == result.cost_usd


async def test_an_unpriced_model_is_an_error_when_the_agent_is_built() -> None:
    class Unpriced:
        name = "my-local-model"

        async def complete(self, request: ModelRequest) -> ModelReply:
            return reply("x")

    with pytest.raises(UnknownPriceError, match="my-local-model"):
        Agent(name="a", model=Unpriced())
    agent = Agent(name="a", model=Unpriced(), prices={"my-local-model": Price.free()})
    assert agent.price_of(agent.model) == Price.free()


async def test_an_unknown_surface_fails_before_the_run_exists() -> None:
    async with MemoryEventStore() as store, Engine(store, budgets=budgets(per_day="1")) as engine:
        with pytest.raises(UnknownSurfaceError):
            await engine.run(Agent(name="a", model=answering()), "t", surface="enterprise")
        assert await store.read_all() == []
