"""Limits and concurrency of the loop: max turns, cancellation, parallel tool calls."""

from __future__ import annotations

import anyio
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    EngineError,
    ModelReply,
    ModelRequest,
    Price,
    RunConflictError,
    RunResult,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    EventStore,
    MemoryEventStore,
    RecordedEvent,
    RunCancelled,
    RunFailed,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
)


class CityArgs(BaseModel):
    city: str


class EmailArgs(BaseModel):
    to: str
    body: str


class Empty(BaseModel):
    pass


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


def engine_for(store: EventStore) -> Engine:
    return Engine(store, clock=FakeClock(), ids=SequentialIds())


@tool
async def weather(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
    """The weather in a city."""
    return {"sky": "grey"}


async def test_a_run_without_an_answer_fails_at_max_turns() -> None:
    def always_a_tool(request: ModelRequest) -> ModelReply:
        turn = sum(1 for m in request.messages if m.role == "assistant") + 1
        return reply(tool_calls=[call("weather", {"city": f"city {turn}"})])

    model = ScriptedModel(always_a_tool)
    agent = Agent(name="a", model=model, tools=[weather], max_turns=2)
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(agent, "Weather?", run_id="r1")
        events = await store.read_stream("run-r1")
    turn = [
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "tool_call_intended",
        "tool_call_succeeded",
    ]
    assert types(events) == ["run_started", *turn, *turn, "run_failed"]
    failed = events[-1].event
    assert isinstance(failed, RunFailed) and failed.error_type == "max_turns"
    assert (result.status, result.turns, result.output) == ("failed", 2, None)
    assert result.error == "max_turns: no answer after 2 turns"
    assert len(model.requests) == 2


async def test_cancel_from_another_task_stops_a_blocked_tool_and_records_the_cancel() -> None:
    entered = anyio.Event()
    body_cancelled: list[bool] = []

    @tool(side_effect=True)
    async def send_email(args: EmailArgs, ctx: ToolContext) -> dict[str, object]:
        """Send an email."""
        entered.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            body_cancelled.append(True)
            raise
        return {"sent": True}

    model = ScriptedModel([reply(tool_calls=[call("send_email", {"to": "a@b.c", "body": "hi"})])])
    agent = Agent(name="mailer", model=model, tools=[send_email])
    results: list[RunResult] = []
    async with MemoryEventStore() as store, engine_for(store) as engine:

        async def drive() -> None:
            results.append(await engine.run(agent, "Mail a@b.c", run_id="r1"))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(drive)
                await entered.wait()
                await engine.cancel("r1", reason="the user pressed stop")
        events = await store.read_stream("run-r1")
        # Ended runs stay ended: resume and cancel change nothing.
        assert (await engine.resume("r1")).status == "cancelled"
        await engine.cancel("r1")
        assert await store.read_stream("run-r1") == events

    assert body_cancelled == [True]
    assert types(events) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "tool_call_intended",
        "tool_outcome_unknown",
        "run_cancelled",
    ]
    intended, unknown, cancelled = (r.event for r in events[-3:])
    assert isinstance(intended, ToolCallIntended) and isinstance(unknown, ToolOutcomeUnknown)
    assert unknown.call_id == intended.call_id
    assert unknown.idempotency_key == intended.idempotency_key is not None
    assert isinstance(cancelled, RunCancelled) and cancelled.reason == "the user pressed stop"
    (result,) = results
    assert (result.status, result.error) == ("cancelled", "the user pressed stop")


async def test_cancelling_a_paused_run_records_it_and_refuses_later_approvals() -> None:
    @tool(confirm=True)
    async def launch(args: Empty, ctx: ToolContext) -> str:
        """Launch the rocket."""
        return "launched"

    model = ScriptedModel([reply(tool_calls=[call("launch", {}, id="c1")])])
    agent = Agent(name="a", model=model, tools=[launch])
    async with MemoryEventStore() as store, engine_for(store) as engine:
        paused = await engine.run(agent, "Launch", run_id="r1")
        assert (paused.status, paused.pending_confirmations) == ("paused", ("c1",))
        await engine.cancel("r1", reason="changed my mind")
        with pytest.raises(EngineError):
            await engine.approve("r1", "c1")
        with pytest.raises(EngineError):
            await engine.deny("r1", "c1")
        result = await engine.result("r1")
        events = await store.read_stream("run-r1")
    assert types(events)[-3:] == ["confirmation_requested", "run_paused", "run_cancelled"]
    assert (result.status, result.error, result.pending_confirmations) == (
        "cancelled",
        "changed my mind",
        (),
    )


async def test_the_tool_calls_of_one_turn_run_concurrently_and_are_logged_in_call_order() -> None:
    ping_started, pong_started, pong_done = anyio.Event(), anyio.Event(), anyio.Event()
    finished: list[str] = []

    # Each waits for the other to have started: run one after the other, they would deadlock.
    @tool
    async def ping(args: Empty, ctx: ToolContext) -> str:
        """Ping."""
        ping_started.set()
        await pong_started.wait()
        await pong_done.wait()
        finished.append("ping")
        return "ping"

    @tool
    async def pong(args: Empty, ctx: ToolContext) -> str:
        """Pong."""
        pong_started.set()
        await ping_started.wait()
        finished.append("pong")
        pong_done.set()
        return "pong"

    model = ScriptedModel(
        [
            reply(tool_calls=[call("ping", {}, id="c1"), call("pong", {}, id="c2")]),
            reply("Both answered."),
        ]
    )
    agent = Agent(name="a", model=model, tools=[ping, pong])
    async with MemoryEventStore() as store, engine_for(store) as engine:
        with anyio.fail_after(5):
            result = await engine.run(agent, "Ping and pong", run_id="r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    assert finished == ["pong", "ping"]
    tool_events = [
        (r.event.type, r.event.call_id)
        for r in events
        if isinstance(r.event, ToolCallIntended | ToolCallSucceeded)
    ]
    # Both are cleared to run, then both outcomes, each in call order though c2 finished first.
    assert tool_events == [
        ("tool_call_intended", "c1"),
        ("tool_call_intended", "c2"),
        ("tool_call_succeeded", "c1"),
        ("tool_call_succeeded", "c2"),
    ]
    # And the model gets the results in the order it made the calls.
    assert [m.tool_call_id for m in model.requests[1].messages if m.role == "tool"] == ["c1", "c2"]


class HangingModel:
    """A provider that accepts the request and never answers."""

    name = "hanging"
    price = Price.free()

    def __init__(self) -> None:
        self.called = anyio.Event()

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.called.set()
        await anyio.Event().wait()
        raise AssertionError("unreachable")


async def test_cancel_during_a_model_call_records_only_the_cancel() -> None:
    model = HangingModel()
    agent = Agent(name="a", model=model)
    results: list[RunResult] = []
    async with MemoryEventStore() as store, engine_for(store) as engine:

        async def drive() -> None:
            results.append(await engine.run(agent, "Hello", run_id="r1"))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(drive)
                await model.called.wait()
                await engine.cancel("r1")
        events = await store.read_stream("run-r1")
    # The request that was in flight is recorded, then the cancellation.
    assert types(events) == ["run_started", "turn_started", "model_call_requested", "run_cancelled"]
    assert results[0].status == "cancelled"


async def test_a_run_driven_by_two_engines_at_once_stops_one_with_a_conflict() -> None:
    entered = anyio.Event()
    both_in = anyio.Event()
    inside = 0

    @tool(name="weather")
    async def blocking_weather(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
        """The weather in a city."""
        nonlocal inside
        inside += 1
        entered.set()
        if inside == 3:
            both_in.set()
        await both_in.wait()
        return {"sky": "grey"}

    model = ScriptedModel(
        [reply(tool_calls=[call("weather", {"city": "Oslo"}, id="c1")])]
        + [reply("Grey.") for _ in range(2)]
    )
    agent = Agent(name="a", model=model, tools=[blocking_weather])
    async with MemoryEventStore() as store:
        async with Engine(store, clock=FakeClock(), ids=SequentialIds("crashed")) as engine:
            with anyio.CancelScope() as crash:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: engine.run(agent, "Oslo?", run_id="r1"))
                    await entered.wait()
                    crash.cancel()
        outcomes: list[str] = []

        async def resume(prefix: str) -> None:
            ids = SequentialIds(prefix)
            async with Engine(store, agents=[agent], clock=FakeClock(), ids=ids) as engine:
                try:
                    outcomes.append((await engine.resume("r1")).status)
                except RunConflictError:
                    outcomes.append("conflict")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(resume, "a")
                tg.start_soon(resume, "b")
        events = await store.read_stream("run-r1")
    assert sorted(outcomes) == ["completed", "conflict"]
    assert types(events) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "run_resumed",
        "run_resumed",
        "tool_call_intended",
        "tool_call_succeeded",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
