"""Recorded runs for the OpenTelemetry tests: every kind of span and how each one ends."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelServerError,
    Price,
    Sink,
    Tool,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import EventStore, Usage


class CityArgs(BaseModel):
    city: str


class TransferArgs(BaseModel):
    to: str
    cents: int


def weather_tool() -> Tool[CityArgs]:
    """A tool whose first tier always fails and whose second answers."""

    @tool(name="weather")
    async def weather(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
        """The weather in a city."""
        raise RuntimeError("the weather service is down")

    @weather.tier("cache")
    async def cached(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
        return {"city": args.city, "sky": "sunny"}

    return weather


def clock() -> FakeClock:
    # Every reading moves 5 ms on, so spans have lengths and every event its own time.
    return FakeClock(tick=timedelta(milliseconds=5))


def engine(
    store: EventStore, sink: Sink | None = None, budgets: Budgets | None = None, ids: str = "id"
) -> Engine:
    return Engine(store, clock=clock(), ids=SequentialIds(ids), sink=sink, budgets=budgets)


def rich_agent() -> Agent:
    """Turn 1: a server error, a retry, then two tool calls (one rejected, one whose first tier
    fails). Turn 2: three server errors, a fallback to another model, the answer."""
    primary = ScriptedModel(
        [
            ModelServerError("gpt-4o", "overloaded", status_code=503),
            reply(
                tool_calls=[
                    call("weather", {"city": "Paris"}, id="c1"),
                    call("weather", {"city": 7}, id="c2"),
                ],
                usage=Usage(input_tokens=120, output_tokens=30, cached_input_tokens=100),
            ),
            *[ModelServerError("gpt-4o", "overloaded", status_code=503)] * 3,
        ],
        name="gpt-4o",
        price=Price(input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10")),
    )
    fallback = ScriptedModel(
        [reply("Sunny in Paris.", usage=Usage(input_tokens=200, output_tokens=8))],
        name="claude-3-5-sonnet-latest",
    )
    return Agent(
        name="forecaster", model=primary, fallback_models=[fallback], tools=[weather_tool()]
    )


async def rich_run(store: EventStore, sink: Sink | None = None, run_id: str = "r1") -> None:
    async with engine(store, sink, ids=run_id) as running:
        await rich_run_in(running, run_id)


async def rich_run_in(running: Engine, run_id: str) -> None:
    result = await running.run(rich_agent(), "Weather in Paris?", run_id=run_id, user_id="u1")
    assert result.status == "completed"


async def refused_run(store: EventStore, run_id: str = "r2") -> None:
    """A run whose first request would pass its cap: the request is refused, the run ends."""
    model = ScriptedModel(
        [reply("never sent")],
        name="gpt-4o",
        price=Price(input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000)),
    )
    budgets = Budgets({"default": BudgetPolicy(per_run_usd=Decimal("0.001"))})
    async with engine(store, budgets=budgets, ids=run_id) as running:
        result = await running.run(Agent(name="spender", model=model), "hi", run_id=run_id)
    assert result.status == "budget_exceeded"


def transfer_agent() -> Agent:
    @tool(confirm=True, side_effect=True)
    async def transfer(args: TransferArgs, ctx: ToolContext) -> dict[str, object]:
        """Send money."""
        return {"transfer_id": "t-1"}

    model = ScriptedModel(
        [reply(tool_calls=[call("transfer", {"to": "bob", "cents": 1250}, id="t1")])],
        name="gpt-4o",
    )
    return Agent(name="bank", model=model, tools=[transfer])


async def paused_run(store: EventStore, run_id: str = "r3") -> Engine:
    """A run paused on a tool call waiting for a person's yes; returns its (closed) engine."""
    running = engine(store, ids=run_id)
    async with running:
        result = await running.run(transfer_agent(), "Pay bob", run_id=run_id)
    assert result.status == "paused"
    return running
