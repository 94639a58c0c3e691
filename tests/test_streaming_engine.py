"""Streaming through the engine, over real local HTTP: deltas reach the caller in order, the log
holds each whole reply once, a broken stream is a failed attempt that is retried, the output
cut-off keeps a server that ignores its limit within the caps, and replay calls nothing."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel
from sse_server import (
    Stream,
    anthropic_stream,
    openai_endless,
    openai_stream,
    recorded,
    sse_provider,
)

from agentledger.engine import (
    Agent,
    AnthropicModel,
    BudgetPolicy,
    Budgets,
    Delta,
    Engine,
    ModelReply,
    ModelRequest,
    OpenAIChatModel,
    Price,
    TextDelta,
    ToolCallDelta,
    ToolContext,
    tool,
)
from agentledger.engine.testing import (
    FakeClock,
    ScriptedModel,
    ScriptedRun,
    SequentialIds,
    call,
    check_invariants,
    reply,
)
from agentledger.engine.testing.strategies import scripted_runs
from agentledger.events import (
    BudgetExceeded,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    EventStore,
    MemoryEventStore,
    ModelCallFailed,
    ModelCallResponded,
    ModelCallRetried,
    RecordedEvent,
)
from agentledger.projections._streams import run_stream

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))


def load(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text())


class Weather(BaseModel):
    city: str
    unit: str = "celsius"


@tool
async def get_weather(args: Weather, ctx: ToolContext) -> dict[str, str]:
    """Current weather for a city."""
    return {"city": args.city, "forecast": "sunny"}


class Order(BaseModel):
    order_id: int


@tool
async def lookup_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up."""
    return {"order_id": args.order_id, "status": "shipped"}


def openai_agent(url: str, **settings: Any) -> Agent:
    model = OpenAIChatModel("gpt-4o-mini", base_url=f"{url}/v1", api_key="sk-test")
    settings = {"tools": [get_weather], "prices": {"gpt-4o-mini": PRICE}} | settings
    return Agent(name="streamer", model=model, **settings)


async def collect(
    engine: Engine, agent: Agent, task: str = "Weather in Paris and Tokyo?", **options: Any
) -> list[RecordedEvent | Delta]:
    return [item async for item in engine.stream(agent, task, deltas=True, **options)]


def check_deltas_make_the_replies(
    items: list[RecordedEvent | Delta], *, parsed: bool = False
) -> list[ModelCallResponded]:
    """Every recorded reply is what its call's deltas add up to, and they all came before it.
    ``parsed``: tool arguments are compared as JSON values (Anthropic's are re-serialised)."""
    pieces: dict[str, list[Delta]] = defaultdict(list)
    answered: list[ModelCallResponded] = []
    for item in items:
        if isinstance(item, Delta):
            assert item.call_id not in {r.call_id for r in answered}, "a delta after its reply"
            pieces[item.call_id].append(item)
            continue
        event = item.event
        if isinstance(event, ModelCallResponded):
            answered.append(event)
            deltas = [d.delta for d in pieces[event.call_id]]
            text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
            assert text == event.text
            arguments: dict[int, str] = defaultdict(str)
            ids: dict[int, str | None] = {}
            for d in deltas:
                if isinstance(d, ToolCallDelta):
                    arguments[d.index] += d.arguments
                    ids.setdefault(d.index, d.id)
            recorded_calls = event.tool_calls
            assert [ids[i] for i in sorted(ids)] == [c.id for c in recorded_calls]
            load = json.loads if parsed else str
            assert [load(arguments[i]) for i in sorted(arguments)] == [
                load(c.arguments) for c in recorded_calls
            ]
    return answered


async def test_an_openai_stream_reaches_the_caller_and_the_log_holds_the_whole_reply(
    store: EventStore,
) -> None:
    script = [
        lambda: Stream(openai_stream(load("openai/tool_calls.response.json"))),
        lambda: Stream(openai_stream(load("openai/after_tools.response.json"))),
    ]
    with sse_provider(script) as (url, asked, _):
        agent = openai_agent(url)
        async with Engine(store, clock=FakeClock(), ids=SequentialIds()) as engine:
            items = await collect(engine, agent, run_id="r1")
            answered = check_deltas_make_the_replies(items)
            assert [len(r.tool_calls) for r in answered] == [2, 0]
            deltas = [i for i in items if isinstance(i, Delta)]
            assert {(d.run_id, d.attempt, d.purpose) for d in deltas} == {("r1", 1, "agent")}
            assert len(deltas) > 20  # pieces, not whole replies
            result = await engine.result("r1")
            assert result.status == "completed"
            assert (
                result.output
                == load("openai/after_tools.response.json")["choices"][0]["message"]["content"]
            )
            logged = [
                e.event
                for e in await engine.store.read_stream(run_stream("r1"))
                if isinstance(e.event, ModelCallResponded)
            ]
            assert logged == answered
            calls_before = len(asked)
            report = await engine.replay("r1")
            assert report.matches, report.divergence
            assert len(asked) == calls_before == 2  # replay sent nothing


async def test_an_anthropic_stream_through_the_engine() -> None:
    script = [
        lambda: Stream(anthropic_stream(load("anthropic/tool_use.response.json"))),
        lambda: Stream(anthropic_stream(load("anthropic/after_tools.response.json"))),
    ]
    with sse_provider(script) as (url, asked, _):
        model = AnthropicModel("claude-sonnet-4-20250514", base_url=url, api_key="test")
        agent = Agent(
            name="claude",
            model=model,
            tools=[get_weather],
            prices={"claude-sonnet-4-20250514": PRICE},
        )
        async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
            items = await collect(engine, agent, run_id="a1")
            answered = check_deltas_make_the_replies(items, parsed=True)
            assert [len(r.tool_calls) for r in answered] == [2, 0]
            assert answered[1].usage.cached_input_tokens == 1536
            assert (await engine.result("a1")).output == (
                "Paris: 18 °C with light rain. Tokyo: 24 °C and clear. "
                "Tokyo is the better city for a walk right now."
            )
            assert (await engine.replay("a1")).matches
        assert [path for path, _ in asked] == ["/v1/messages"] * 2


async def test_llama_cpp_tool_call_stream_runs_the_tool_once() -> None:
    script = [
        lambda: Stream(recorded("wire/llama-cpp-server/07-stream-forced-tool-call.response.sse")),
        lambda: Stream(recorded("wire/llama-cpp-server/06-stream-include-usage.response.sse")),
    ]
    with sse_provider(script) as (url, asked, _):
        model = OpenAIChatModel("smollm2-135m", base_url=f"{url}/v1")
        agent = Agent(
            name="orders", model=model, tools=[lookup_order], prices={"smollm2-135m": Price.free()}
        )
        async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
            items = await collect(engine, agent, "Look up order 123456.", run_id="o1")
            first, second = check_deltas_make_the_replies(items)
            (tool_call,) = first.tool_calls
            assert tool_call.name == "lookup_order"
            assert json.loads(tool_call.arguments) == {"order_id": 123456}
            # No usage chunk from this server: the counted pieces are recorded as output.
            assert (second.finish_reason, second.usage.output_tokens) == ("length", 12)
            assert second.usage.input_tokens > 0
        follow_up = asked[1][1]["messages"]
        assert follow_up[-1]["role"] == "tool" and "shipped" in follow_up[-1]["content"]


async def test_a_stream_cut_midway_is_a_failed_attempt_and_the_retry_streams_again() -> None:
    answer = load("openai/after_tools.response.json")
    script = [
        lambda: Stream(openai_stream(answer), drop_after=4),
        lambda: Stream(openai_stream(answer)),
    ]
    caps = Budgets({"default": BudgetPolicy(per_run_usd=Decimal("1"))})
    with sse_provider(script) as (url, asked, _):
        agent = openai_agent(url, tools=[])
        async with (
            MemoryEventStore() as store,
            Engine(store, clock=FakeClock(), budgets=caps) as engine,
        ):
            items = await collect(engine, agent, run_id="c1")
            events = [i.event for i in items if not isinstance(i, Delta)]
            (failed,) = [e for e in events if isinstance(e, ModelCallFailed)]
            (retried,) = [e for e in events if isinstance(e, ModelCallRetried)]
            (answered,) = check_deltas_make_the_replies(items)
            assert failed.error_type == "ModelConnectionError" and failed.retryable
            assert "broke off" in failed.message
            deltas = [i for i in items if isinstance(i, Delta)]
            broken = [d for d in deltas if d.call_id == failed.call_id]
            assert [d.attempt for d in broken] == [1] * len(broken) and len(broken) == 3
            # The failed attempt's pieces come first; the retry starts over under a new id.
            assert deltas[: len(broken)] == broken
            assert {d.call_id for d in deltas[len(broken) :]} == {answered.call_id}
            assert answered.call_id != failed.call_id and retried.attempt == 2
            assert {d.attempt for d in deltas[len(broken) :]} == {2}
            # The failed attempt's reservation is given back; the second one settles.
            assert any(isinstance(e, BudgetReleased) for e in events)
            assert any(isinstance(e, BudgetSettled) for e in events)
            result = await engine.result("c1")
            assert result.status == "completed" and result.output == answered.text
            assert (await engine.replay("c1")).matches
        assert len(asked) == 2


async def test_a_server_ignoring_the_limit_cannot_pass_a_cap() -> None:
    """Without a listener (``stream_models=True``), each call is cut at ``max_tokens`` and
    settled within its reservation, so the user's day cap holds against an endless server."""
    with sse_provider([lambda: Stream(openai_endless())]) as (url, asked, _):
        agent = openai_agent(url, tools=[], max_tokens=50)
        # What one call reserves, measured on a store of its own with a cap far away.
        roomy = Budgets({"default": BudgetPolicy(per_user_day_usd=Decimal("100"))})
        async with (
            MemoryEventStore() as store,
            Engine(store, clock=FakeClock(), budgets=roomy, stream_models=True) as engine,
        ):
            measured = await engine.run(agent, "Talk.", user_id="u")
            (reserved,) = [
                e.event
                for e in await store.read_stream(run_stream(measured.run_id))
                if isinstance(e.event, BudgetReserved)
            ]
        cap = reserved.amount_usd * 3
        caps = Budgets({"default": BudgetPolicy(per_user_day_usd=cap)})
        async with (
            MemoryEventStore() as store,
            Engine(store, clock=FakeClock(), budgets=caps, stream_models=True) as engine,
        ):
            results = []
            while len(results) < 30 and "budget_exceeded" not in [r.status for r in results]:
                results.append(await engine.run(agent, "Talk.", user_id="u"))
            events = [
                e.event for r in results for e in await store.read_stream(run_stream(r.run_id))
            ]
            ledger = await engine.spend_for_user("u", reserved.day)
    *spent, stopped = results
    assert len(spent) >= 3 and {r.status for r in spent} == {"completed"}
    assert stopped.status == "budget_exceeded"
    replies = [e for e in events if isinstance(e, ModelCallResponded)]
    assert len(replies) == len(spent)
    assert all(r.finish_reason == "length" and r.usage.output_tokens == 50 for r in replies)
    assert all(r.text == " tok" * 50 for r in replies)
    settled = [e for e in events if isinstance(e, BudgetSettled)]
    assert len(settled) == len(spent) and all(s.actual_usd <= s.reserved_usd for s in settled)
    assert any(isinstance(e, BudgetExceeded) for e in events)
    assert ledger.committed <= cap
    assert len(asked) == 1 + len(spent)  # the measuring run and the capped ones that fit


async def test_the_scripted_model_streams_in_pieces() -> None:
    model = ScriptedModel(
        [
            reply(tool_calls=[call("get_weather", {"city": "Paris"}, id="w1")]),
            reply("It is sunny in Paris today."),
        ],
        chunk=5,
    )
    agent = Agent(name="scripted", model=model, tools=[get_weather])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        items = await collect(engine, agent, "Paris?")
        check_deltas_make_the_replies(items)
    deltas = [i.delta for i in items if isinstance(i, Delta)]
    assert deltas[0] == ToolCallDelta(0, "w1", "get_weather", '{"cit')
    assert deltas[1:3] == [
        ToolCallDelta(0, None, None, 'y":"P'),
        ToolCallDelta(0, None, None, 'aris"'),
    ]
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == [
        "It is",
        " sunn",
        "y in ",
        "Paris",
        " toda",
        "y.",
    ]


async def test_a_model_that_cannot_stream_still_answers_a_listener() -> None:
    class Plain:
        name = "plain"
        price = Price.free()

        async def complete(self, request: ModelRequest) -> ModelReply:
            return reply("Whole.")

    agent = Agent(name="plain", model=Plain())
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        items = await collect(engine, agent, "Hi")
    assert not [i for i in items if isinstance(i, Delta)]
    assert [i.event.text for i in items if isinstance(i.event, ModelCallResponded)] == ["Whole."]


async def test_without_deltas_nothing_streams() -> None:
    model = ScriptedModel([reply("Hello there.")])
    agent = Agent(name="quiet", model=model)
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        items = [item async for item in engine.stream(agent, "Hi")]
    assert all(isinstance(item, RecordedEvent) for item in items)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(run=scripted_runs([get_weather, lookup_order], max_turns=3))
def test_a_streamed_run_logs_what_an_unstreamed_one_logs(run: ScriptedRun) -> None:
    """Streaming changes what the caller sees, never the log: the same scripted run, with the
    same clock and ids, records the same events streamed or not, and keeps every invariant."""

    async def play(streamed: bool) -> tuple[list[Any], list[RecordedEvent | Delta]]:
        agent = Agent(name="drawn", model=run.model(chunk=3), tools=[get_weather, lookup_order])
        async with (
            MemoryEventStore() as store,
            Engine(store, clock=FakeClock(), ids=SequentialIds()) as engine,
        ):
            items = [
                item async for item in engine.stream(agent, "Go.", run_id="p1", deltas=streamed)
            ]
            result = await engine.result("p1")
            await check_invariants(engine, "p1", agent=agent, result=result)
            logged = [(e.version, e.event) for e in await store.read_stream(run_stream("p1"))]
        return logged, items

    async def check() -> None:
        plain, _ = await play(False)
        streamed, items = await play(True)
        assert streamed == plain
        answered = check_deltas_make_the_replies(items)
        assert len(answered) == sum(isinstance(e, ModelCallResponded) for _, e in plain)
        failed = {e.call_id for _, e in plain if isinstance(e, ModelCallFailed)}
        # Scripted failures happen before a reply is streamed: no failed call has pieces.
        assert not {i.call_id for i in items if isinstance(i, Delta)} & failed

    anyio.run(check)
