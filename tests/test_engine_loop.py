"""The agent loop end to end: the events of a run, its span tree, resume, streaming and sinks.

Every assertion reads the log back from the store: the events are the contract, not the calls
the engine happened to make.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from decimal import Decimal
from typing import Any, cast

import anyio
import orjson
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    DEGRADED_TOOL_INSTRUCTION,
    Agent,
    Engine,
    EngineError,
    InvalidInputError,
    JsonLinesSink,
    ModelReply,
    ModelRequest,
    RunNotFoundError,
    RunResult,
    Sink,
    Tool,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    EventStore,
    MemoryEventStore,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunCompleted,
    RunResumed,
    RunStarted,
    ToolCallIntended,
    ToolCallSucceeded,
    TurnStarted,
    Usage,
)
from agentledger.projections._messages import AssistantMessage, ToolResultMessage
from agentledger.projections._run_state import RunState, fold_run

StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]


class CityArgs(BaseModel):
    city: str


def weather_tool(seen: list[str]) -> Tool[CityArgs]:
    @tool(name="weather")
    async def weather(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
        """The weather in a city."""
        seen.append(args.city)
        return {"city": args.city, "sky": "sunny"}

    return weather


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


async def run_log(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}")


_SPAN_KIND = {
    "turn_started": "turn",
    "model_call_requested": "model_call",
    "tool_tier_failed": "tier",
    "tool_tier_skipped": "tier",
}
_PARENT_KIND = {"turn": "run", "model_call": "turn", "tool_call": "turn", "tier": "tool_call"}


def assert_span_tree(events: list[RecordedEvent]) -> dict[str, str]:
    """Every event hangs under a span of its own run: run -> turn -> model/tool call -> tier.

    A span keeps one parent across all its events. Returns the kind of every span.
    """
    run_id = events[0].event.run_id
    parent: dict[str, str | None] = {}
    kind: dict[str, str] = {}
    for recorded in events:
        event = recorded.event
        assert event.run_id == run_id
        span = event.span_id
        known = parent.setdefault(span, event.parent_span_id)
        assert known == event.parent_span_id, f"{event.type}: span {span} changed parent"
        if span == run_id:
            kind[span] = "run"
        else:
            kind.setdefault(span, _SPAN_KIND.get(event.type, "tool_call"))
    assert parent[run_id] is None
    for span, span_kind in kind.items():
        if span_kind != "run":
            above = parent[span]
            assert above in kind, f"span {span} hangs under {above}, not a span of the run"
            assert kind[above] == _PARENT_KIND[span_kind], (span, span_kind, kind[above])
    return kind


def engine_for(
    store: EventStore, prefix: str = "id", *, agents: Sequence[Agent] = (), sink: Sink | None = None
) -> Engine:
    return Engine(store, clock=FakeClock(), ids=SequentialIds(prefix), agents=agents, sink=sink)


async def interrupt_when(
    entered: anyio.Event, work: Callable[[], Coroutine[Any, Any, object]]
) -> None:
    """Run ``work`` and cut it off, like a process dying, once ``entered`` is set."""
    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await entered.wait()
            crash.cancel()


BASIC_RUN = [
    "run_started",
    "turn_started",
    "model_call_requested",
    "model_call_responded",
    "tool_call_intended",
    "tool_call_succeeded",
    "turn_started",
    "model_call_requested",
    "model_call_responded",
    "run_completed",
]


async def test_a_tool_call_then_an_answer_is_recorded_event_by_event(store: EventStore) -> None:
    seen: list[str] = []
    weather = weather_tool(seen)
    model = ScriptedModel(
        [reply(tool_calls=[call("weather", {"city": "Paris"}, id="c1")]), reply("Sunny in Paris.")]
    )
    agent = Agent(name="forecaster", model=model, system_prompt="Be brief.", tools=[weather])
    async with engine_for(store) as engine:
        result = await engine.run(agent, "Weather in Paris?", user_id="u1", run_id="r1")

    usage = Usage(input_tokens=20, output_tokens=10)
    assert result == RunResult(
        run_id="r1",
        status="completed",
        output="Sunny in Paris.",
        cost_usd=Decimal(0),
        usage=usage,
        turns=2,
    )
    assert seen == ["Paris"]
    events = await run_log(store, "r1")
    assert types(events) == BASIC_RUN
    assert [r.version for r in events] == list(range(1, 11))
    started, turn1, req1, resp1, intended, succeeded, turn2, req2, resp2, completed = (
        r.event for r in events
    )
    assert isinstance(started, RunStarted)
    assert (started.agent, started.model, started.task, started.user_id) == (
        "forecaster",
        "scripted",
        "Weather in Paris?",
        "u1",
    )
    assert started.system_prompt == f"Be brief.\n\n{DEGRADED_TOOL_INSTRUCTION}"
    assert isinstance(turn1, TurnStarted) and turn1.turn == 1
    assert isinstance(turn2, TurnStarted) and turn2.turn == 2
    assert isinstance(req1, ModelCallRequested) and isinstance(req2, ModelCallRequested)
    assert (req1.attempt, req1.message_count, req2.message_count) == (1, 2, 4)
    assert req1.request_digest != req2.request_digest
    assert isinstance(resp1, ModelCallResponded)
    assert resp1.call_id == req1.call_id and resp1.span_id == req1.span_id
    assert [c.name for c in resp1.tool_calls] == ["weather"]
    assert isinstance(intended, ToolCallIntended)
    assert (intended.call_id, intended.arguments, intended.idempotency_key) == (
        "c1",
        {"city": "Paris"},
        None,
    )
    assert isinstance(succeeded, ToolCallSucceeded)
    assert (succeeded.call_id, succeeded.tier, succeeded.result) == (
        "c1",
        "primary",
        {"city": "Paris", "sky": "sunny"},
    )
    assert isinstance(resp2, ModelCallResponded) and resp2.text == "Sunny in Paris."
    assert isinstance(completed, RunCompleted)
    assert (completed.output, completed.turns, completed.usage) == ("Sunny in Paris.", 2, usage)

    # What the model was sent on turn 2 is the projection of the log: the call and its result.
    sent = model.requests[1]
    assert sent.messages[-2] == AssistantMessage(tool_calls=resp1.tool_calls)
    assert sent.messages[-1] == ToolResultMessage(
        tool_call_id="c1",
        tool_name="weather",
        content='{"result":{"city":"Paris","sky":"sunny"},"status":"ok"}',
    )
    assert [t.name for t in sent.tools] == ["weather"]


async def test_every_event_hangs_in_the_runs_span_tree(store: EventStore) -> None:
    model = ScriptedModel(
        [
            reply(
                tool_calls=[
                    call("weather", {"city": "Paris"}, id="c1"),
                    call("weather", {"city": 7}, id="c2"),  # rejected: a span of its own
                ]
            ),
            reply("Done."),
        ]
    )
    agent = Agent(name="forecaster", model=model, tools=[weather_tool([])])
    async with engine_for(store) as engine:
        await engine.run(agent, "Paris?", run_id="r1")
    events = await run_log(store, "r1")
    kinds = assert_span_tree(events)
    assert sorted(kinds.values()) == sorted(
        ["run", "turn", "turn", "model_call", "model_call", "tool_call", "tool_call"]
    )
    by_type = {r.event.type: r.event for r in events}
    assert by_type["tool_call_succeeded"].span_id == by_type["tool_call_intended"].span_id
    assert by_type["tool_arguments_rejected"].span_id != by_type["tool_call_intended"].span_id


async def test_an_interrupted_run_resumes_in_a_new_engine_on_a_reopened_store(
    store_factory: StoreFactory,
) -> None:
    entered = anyio.Event()
    attempts: list[str] = []

    @tool(name="weather")
    async def weather(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
        """The weather in a city."""
        attempts.append(ctx.run_id)
        if len(attempts) == 1:
            entered.set()
            await anyio.Event().wait()  # the process dies here
        return {"sky": "sunny"}

    model = ScriptedModel(
        [reply(tool_calls=[call("weather", {"city": "Paris"}, id="c1")]), reply("Sunny.")]
    )
    agent = Agent(name="forecaster", model=model, tools=[weather])

    async with store_factory() as first, engine_for(first, "a") as engine:
        await interrupt_when(entered, lambda: engine.run(agent, "Paris?", run_id="r1"))
        assert types(await run_log(first, "r1")) == BASIC_RUN[:4]

    async with store_factory() as second, engine_for(second, "b", agents=[agent]) as engine:
        assert (await engine.result("r1")).status == "running"
        result = await engine.resume("r1")
        events = await run_log(second, "r1")
        assert result.status == "completed" and result.output == "Sunny."
        assert attempts == ["r1", "r1"]
        assert types(events) == [*BASIC_RUN[:4], "run_resumed", *BASIC_RUN[4:]]
        resumed = events[4].event
        assert isinstance(resumed, RunResumed) and resumed.reason == "interrupted"
        assert_span_tree(events)
        # A fresh fold of what is stored agrees with what the resuming engine returned.
        assert RunResult.of(await engine.load("r1")) == result

        # Resuming an ended run changes nothing.
        assert await engine.resume("r1") == result
        assert len(await run_log(second, "r1")) == len(events)


async def test_resume_needs_the_agent_and_an_existing_run() -> None:
    model = ScriptedModel([reply("Hi.")])
    agent = Agent(name="greeter", model=model)
    async with MemoryEventStore() as store:
        async with engine_for(store) as engine:
            await engine.run(agent, "Hello", run_id="r1")
        async with engine_for(store, "b") as engine:
            with pytest.raises(RunNotFoundError):
                await engine.resume("nope")
            with pytest.raises(RunNotFoundError):
                await engine.result("nope")
            with pytest.raises(EngineError, match="greeter"):
                await engine.resume("r1")
            assert (await engine.resume("r1", agent=agent)).output == "Hi."
            with pytest.raises(EngineError, match="already exists"):
                await engine.run(agent, "Hello again", run_id="r1")


async def test_a_fresh_engine_folds_the_run_to_the_writers_state() -> None:
    """Resume equivalence: the state a new process folds from the log is the writer's state,
    and at every model call the fold of the log so far is exactly what the model was sent."""
    seen: list[ModelRequest] = []

    def script(request: ModelRequest) -> ModelReply:
        seen.append(request)
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if turn == 0:
            return reply(
                "Looking.",
                tool_calls=[
                    call("weather", {"city": "Paris"}, id="c1"),
                    call("weather", {"town": "Oslo"}, id="c2"),
                ],
            )
        if turn == 1:
            return reply(tool_calls=[call("weather", {"city": "Oslo"}, id="c3")])
        return reply("Sunny in both.")

    model = ScriptedModel(script)
    agent = Agent(name="forecaster", model=model, tools=[weather_tool([])])
    final: list[RunState] = []
    async with MemoryEventStore() as store:

        def capture(recorded: RecordedEvent) -> None:
            # The sink runs inside the driver's append, after the driver folded the batch.
            if recorded.event.type == "run_completed":
                final.append(engine._active[recorded.event.run_id].recorder.state)

        async with engine_for(store, sink=capture) as engine:
            result = await engine.run(agent, "Paris and Oslo?", run_id="r1")
        async with engine_for(store, "fresh") as fresh:
            loaded = await fresh.load("r1")
        events = await run_log(store, "r1")

    assert loaded == final[0]
    assert RunResult.of(loaded) == result
    assert loaded.messages[-1] == AssistantMessage(content="Sunny in both.")
    requested = [i for i, r in enumerate(events) if r.event.type == "model_call_requested"]
    assert len(requested) == len(seen) == 3
    for index, request in zip(requested, seen, strict=True):
        assert fold_run(events[:index]).messages == tuple(request.messages)
    # Folding in two pieces is folding at once, wherever the log is cut.
    for cut in range(len(events) + 1):
        assert fold_run(events[cut:], fold_run(events[:cut])) == loaded


async def test_stream_yields_the_runs_events_in_order_up_to_the_terminal_one() -> None:
    model = ScriptedModel(
        [reply(tool_calls=[call("weather", {"city": "Paris"}, id="c1")]), reply("Sunny.")]
    )
    agent = Agent(name="forecaster", model=model, tools=[weather_tool([])])
    async with MemoryEventStore() as store, engine_for(store) as engine:
        streamed = [e async for e in engine.stream(agent, "Paris?", run_id="r1")]
        assert streamed == await run_log(store, "r1")
    assert types(streamed) == BASIC_RUN


async def test_leaving_a_stream_early_does_not_stop_the_run() -> None:
    model = ScriptedModel(
        [reply(tool_calls=[call("weather", {"city": "Paris"}, id="c1")]), reply("Sunny.")]
    )
    agent = Agent(name="forecaster", model=model, tools=[weather_tool([])])
    ended = anyio.Event()

    def watch(recorded: RecordedEvent) -> None:
        if recorded.event.type == "run_completed":
            ended.set()

    async with MemoryEventStore() as store, engine_for(store, sink=watch) as engine:
        stream = cast(
            AsyncGenerator[RecordedEvent, None], engine.stream(agent, "Paris?", run_id="r1")
        )
        async with aclosing(stream) as events:
            async for first in events:
                assert first.event.type == "run_started"
                break
        with anyio.fail_after(5):
            await ended.wait()
        assert types(await run_log(store, "r1")) == BASIC_RUN


async def test_stream_raises_what_the_run_raised() -> None:
    agent = Agent(name="mute", model=ScriptedModel([]))
    async with MemoryEventStore() as store, engine_for(store) as engine:
        got: list[str] = []
        with pytest.raises(InvalidInputError, match="task is not valid Unicode"):
            async for recorded in engine.stream(agent, "Hello \ud800", run_id="r1"):
                got.append(recorded.event.type)
        # Nothing is written: the task is refused before the run exists.
        assert got == []
        assert await store.read_all() == []


async def test_a_model_that_raises_anything_fails_its_attempts_not_the_caller() -> None:
    agent = Agent(name="mute", model=ScriptedModel([]))  # runs out of replies at once
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(agent, "Hello", run_id="r1")
        events = await run_log(store, "r1")
    assert result.status == "failed"
    assert result.error is not None and "ran out of replies" in result.error
    failures = [e.event for e in events if e.event.type == "model_call_failed"]
    assert [f.error_type for f in failures] == ["ModelResponseError"] * 3  # retried, like any


async def test_json_lines_sink_writes_one_parseable_line_per_appended_event() -> None:
    buffer = io.BytesIO()
    model = ScriptedModel(
        [reply(tool_calls=[call("weather", {"city": "Paris"}, id="c1")]), reply("Sunny.")]
    )
    agent = Agent(name="forecaster", model=model, tools=[weather_tool([])])
    async with MemoryEventStore() as store, engine_for(store, sink=JsonLinesSink(buffer)) as e:
        await e.run(agent, "Paris?", run_id="r1")
        stored = await store.read_all()
    lines = buffer.getvalue().splitlines()
    assert buffer.getvalue().endswith(b"\n")
    parsed = [orjson.loads(line) for line in lines]
    assert len(parsed) == len(stored) == len(BASIC_RUN)
    for line, recorded in zip(parsed, stored, strict=True):
        assert (line["stream_id"], line["version"], line["position"], line["event_id"]) == (
            recorded.stream_id,
            recorded.version,
            recorded.position,
            recorded.event_id,
        )
        assert line["event"]["type"] == recorded.event.type
        assert line["event"]["span_id"] == recorded.event.span_id
    assert parsed[-1]["event"]["output"] == "Sunny."


async def test_two_thousand_concurrent_runs_complete() -> None:
    runs = 2000

    def script(request: ModelRequest) -> ModelReply:
        last = request.messages[-1]
        if last.role == "tool":
            return reply("Sunny.")
        return reply(tool_calls=[call("weather", {"city": "Paris"}, id="c1")])

    seen: list[str] = []
    agent = Agent(name="forecaster", model=ScriptedModel(script), tools=[weather_tool(seen)])
    results: dict[str, RunResult] = {}
    async with MemoryEventStore() as store, engine_for(store) as engine:

        async def one(index: int) -> None:
            results[f"r{index}"] = await engine.run(agent, "Paris?", run_id=f"r{index}")

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for index in range(runs):
                    tg.start_soon(one, index)
        assert await store.head_position() == runs * len(BASIC_RUN)
        assert types(await run_log(store, "r1234")) == BASIC_RUN
    assert len(results) == runs and len(seen) == runs
    assert {r.status for r in results.values()} == {"completed"}
