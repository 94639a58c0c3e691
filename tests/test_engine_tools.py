"""Tool calls in the loop: validation at the boundary (pattern 1), human confirmation, and
graceful degradation over tiers with a circuit breaker (pattern 4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    DEGRADED_TOOL_INSTRUCTION,
    Agent,
    BreakerPolicy,
    Engine,
    EngineError,
    ModelReply,
    ModelRequest,
    Tool,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    ConfirmationApproved,
    ConfirmationRequested,
    EventStore,
    MemoryEventStore,
    RecordedEvent,
    RunPaused,
    RunResumed,
    ToolArgumentsRejected,
    ToolCall,
    ToolCallDegraded,
    ToolCallSucceeded,
    ToolTierFailed,
    ToolTierSkipped,
)
from agentledger.projections._messages import ToolResultMessage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class CityArgs(BaseModel):
    city: str


class TransferArgs(BaseModel):
    to: str
    cents: int


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


def tool_call_ids(request: ModelRequest) -> list[str]:
    return [m.tool_call_id for m in request.messages if isinstance(m, ToolResultMessage)]


def tool_payloads(request: ModelRequest) -> list[dict[str, Any]]:
    """The tool results a model was sent, parsed."""
    return [json.loads(m.content) for m in request.messages if m.role == "tool"]


_SPAN_KIND = {
    "turn_started": "turn",
    "model_call_requested": "model_call",
    "tool_tier_failed": "tier",
    "tool_tier_skipped": "tier",
}
_PARENT_KIND = {"turn": "run", "model_call": "turn", "tool_call": "turn", "tier": "tool_call"}


def assert_span_tree(events: list[RecordedEvent]) -> None:
    """Every event hangs under a span of its own run: run -> turn -> model/tool call -> tier."""
    run_id = events[0].event.run_id
    parent: dict[str, str | None] = {}
    kind: dict[str, str] = {}
    for recorded in events:
        event = recorded.event
        assert event.run_id == run_id
        known = parent.setdefault(event.span_id, event.parent_span_id)
        assert known == event.parent_span_id, f"{event.type}: span {event.span_id} moved"
        default = "run" if event.span_id == run_id else _SPAN_KIND.get(event.type, "tool_call")
        kind.setdefault(event.span_id, default)
    assert parent[run_id] is None
    for span, span_kind in kind.items():
        if span_kind != "run":
            assert kind.get(parent[span] or "") == _PARENT_KIND[span_kind], (span, span_kind)


@tool
async def weather(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
    """The weather in a city."""
    return {"city": args.city, "sky": "sunny"}


# -- pattern 1: hallucinated arguments are corrected by the model ------------------------------

GOOD = call("weather", {"city": "Paris"}, id="fixed")


def corrector(
    first: ToolCall, received: list[dict[str, Any]]
) -> Callable[[ModelRequest], ModelReply]:
    """A model that makes ``first``, reads the error it gets back, and fixes its call."""

    def script(request: ModelRequest) -> ModelReply:
        last = request.messages[-1]
        if last.role == "user":
            return reply(tool_calls=[first])
        assert last.role == "tool"
        payload = json.loads(last.content)
        received.append(payload)
        if payload["status"] == "error":
            return reply(tool_calls=[GOOD])
        return reply(f"It is {payload['result']['sky']}.")

    return script


@pytest.mark.parametrize(
    ("bad", "error_type", "loc", "message"),
    [
        pytest.param(
            call("weather", {"city": 42}, id="bad"),
            "invalid_arguments",
            ["city"],
            "Input should be a valid string",
            id="wrong-type",
        ),
        pytest.param(
            call("weather", {"town": "Paris"}, id="bad"),
            "invalid_arguments",
            ["city"],
            "Field required",
            id="missing-field",
        ),
        pytest.param(
            call("wether", {"city": "Paris"}, id="bad"),
            "unknown_tool",
            [],
            "there is no tool named 'wether'; available tools: weather",
            id="unknown-tool",
        ),
        pytest.param(
            call("weather", '{"city": "Paris"', id="bad"),
            "invalid_json",
            [],
            "not valid JSON",
            id="broken-json",
        ),
        pytest.param(
            call("weather", {"city": "x" * 70_000}, id="bad"),
            "oversized_arguments",
            [],
            "accepts at most 65536",
            id="oversized",
        ),
    ],
)
async def test_a_hallucinated_call_is_rejected_and_corrected_on_the_next_turn(
    bad: ToolCall, error_type: str, loc: list[str], message: str
) -> None:
    received: list[dict[str, Any]] = []
    model = ScriptedModel(corrector(bad, received))
    agent = Agent(name="a", model=model, tools=[weather])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Weather in Paris?", run_id="r1")
        events = await store.read_stream("run-r1")

    assert (result.status, result.output) == ("completed", "It is sunny.")
    assert types(events) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "tool_arguments_rejected",
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
    rejected = events[4].event
    assert isinstance(rejected, ToolArgumentsRejected)
    assert (rejected.call_id, rejected.tool_name, rejected.error_type) == (
        "bad",
        bad.name,
        error_type,
    )
    assert rejected.raw_arguments == bad.arguments[:4096]
    assert [list(e.loc) for e in rejected.errors] == [loc]
    # The model got a structured error it can act on, then the good result.
    error, ok = received
    assert error["status"] == "error" and error["error_type"] == error_type
    assert [e["loc"] for e in error["errors"]] == [loc]
    assert message in error["errors"][0]["message"]
    assert ok == {"status": "ok", "result": {"city": "Paris", "sky": "sunny"}}
    assert tool_call_ids(model.requests[1]) == ["bad"]
    assert_span_tree(events)


async def test_a_rejected_call_does_not_stop_the_valid_calls_of_its_turn() -> None:
    model = ScriptedModel(
        [
            reply(tool_calls=[GOOD, call("weather", {"city": None}, id="bad")]),
            reply("Sunny."),
        ]
    )
    agent = Agent(name="a", model=model, tools=[weather])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Paris?", run_id="r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    assert types(events)[4:7] == [
        "tool_arguments_rejected",
        "tool_call_intended",
        "tool_call_succeeded",
    ]
    statuses = {
        m.tool_call_id: json.loads(m.content)["status"]
        for m in model.requests[1].messages
        if m.role == "tool"
    }
    assert statuses == {"fixed": "ok", "bad": "error"}


# -- confirmation --------------------------------------------------------------------------------


def transfer_tool(executed: list[TransferArgs]) -> Tool[TransferArgs]:
    @tool(confirm=True, side_effect=True, preview=lambda a: f"Send ${a.cents / 100:.2f} to {a.to}")
    async def transfer(args: TransferArgs, ctx: ToolContext) -> dict[str, object]:
        """Send money."""
        executed.append(args)
        return {"transfer_id": "t-1"}

    return transfer


TRANSFER = call("transfer", {"to": "bob", "cents": 1250}, id="c1")


async def test_a_confirm_tool_pauses_the_run_until_approved(store: EventStore) -> None:
    executed: list[TransferArgs] = []
    model = ScriptedModel([reply(tool_calls=[TRANSFER]), reply("Sent.")])
    agent = Agent(name="bank", model=model, tools=[transfer_tool(executed)])
    async with Engine(store, clock=FakeClock(), ids=SequentialIds("a")) as engine:
        paused = await engine.run(agent, "Pay bob 12.50", run_id="r1")
        assert (paused.status, paused.pending_confirmations, paused.output) == (
            "paused",
            ("c1",),
            None,
        )
        # Resuming while a person has not answered changes nothing.
        assert await engine.resume("r1") == paused
    before = await store.read_stream("run-r1")
    assert types(before) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "confirmation_requested",
        "run_paused",
    ]
    requested, pause = before[4].event, before[5].event
    assert isinstance(requested, ConfirmationRequested)
    assert (requested.call_id, requested.arguments, requested.preview) == (
        "c1",
        {"to": "bob", "cents": 1250},
        "Send $12.50 to bob",
    )
    assert isinstance(pause, RunPaused) and pause.call_ids == ("c1",)
    assert executed == []

    # The approval may come to another engine, in another process, much later.
    async with Engine(store, agents=[agent], clock=FakeClock(), ids=SequentialIds("b")) as later:
        with pytest.raises(EngineError):
            await later.approve("r1", "c2")
        await later.approve("r1", "c1", by="alice")
        with pytest.raises(EngineError):
            await later.approve("r1", "c1")  # approved already
        result = await later.resume("r1")
    events = await store.read_stream("run-r1")
    assert (result.status, result.output) == ("completed", "Sent.")
    assert executed == [TransferArgs(to="bob", cents=1250)]
    assert types(events)[6:] == [
        "confirmation_approved",
        "run_resumed",
        "tool_call_intended",
        "tool_call_succeeded",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    approved, resumed = events[6].event, events[7].event
    assert isinstance(approved, ConfirmationApproved) and approved.by == "alice"
    assert isinstance(resumed, RunResumed) and resumed.reason == "confirmed"
    assert tool_payloads(model.requests[1]) == [{"status": "ok", "result": {"transfer_id": "t-1"}}]
    assert_span_tree(events)


async def test_a_denied_call_is_reported_to_the_model_and_the_run_finishes() -> None:
    executed: list[TransferArgs] = []
    model = ScriptedModel([reply(tool_calls=[TRANSFER]), reply("I did not send it.")])
    agent = Agent(name="bank", model=model, tools=[transfer_tool(executed)])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        await engine.run(agent, "Pay bob 12.50", run_id="r1")
        await engine.deny("r1", "c1", by="alice", reason="too much")
        with pytest.raises(EngineError):
            await engine.approve("r1", "c1")  # denied already
        result = await engine.resume("r1")
        events = await store.read_stream("run-r1")
    assert (result.status, result.output) == ("completed", "I did not send it.")
    assert executed == []
    assert types(events)[5:] == [
        "run_paused",
        "confirmation_denied",
        "run_resumed",
        "turn_started",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    (denied,) = tool_payloads(model.requests[1])
    assert denied["status"] == "denied" and denied["reason"] == "too much"
    assert_span_tree(events)


async def test_only_the_unconfirmed_calls_of_a_turn_wait() -> None:
    executed: list[TransferArgs] = []
    model = ScriptedModel([reply(tool_calls=[TRANSFER, GOOD]), reply("Done.")])
    agent = Agent(name="bank", model=model, tools=[transfer_tool(executed), weather])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        paused = await engine.run(agent, "Pay bob, and the weather?", run_id="r1")
        assert paused.pending_confirmations == ("c1",)
        await engine.approve("r1", "c1")
        result = await engine.resume("r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    assert types(events)[4:12] == [
        "confirmation_requested",
        "tool_call_intended",  # the weather ran while the transfer waited
        "tool_call_succeeded",
        "run_paused",
        "confirmation_approved",
        "run_resumed",
        "tool_call_intended",
        "tool_call_succeeded",
    ]
    assert [p["status"] for p in tool_payloads(model.requests[1])] == ["ok", "ok"]


# -- pattern 4: tiers, degradation, circuit breaker --------------------------------------------


class Backend:
    """A tool with a primary and a cache tier, each of which can be switched off."""

    def __init__(self, *, primary_up: bool = True, cache_up: bool = True) -> None:
        self.primary_up = primary_up
        self.cache_up = cache_up
        self.primary_calls = 0
        self.cache_calls = 0

        @tool(name="lookup")
        async def primary(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
            """Look a city up."""
            self.primary_calls += 1
            if not self.primary_up:
                raise ConnectionError("primary is down")
            return {"from": ctx.tier}

        @primary.tier("cache")
        async def cache(args: CityArgs, ctx: ToolContext) -> dict[str, object]:
            self.cache_calls += 1
            if not self.cache_up:
                raise RuntimeError("cache is empty")
            return {"from": ctx.tier}

        self.tool = primary


def lookup_agent(backend: Backend, **options: Any) -> tuple[Agent, ScriptedModel]:
    def script(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("Answered.")
        return reply(tool_calls=[call("lookup", {"city": "Paris"}, id="c1")])

    model = ScriptedModel(script)
    return Agent(name="a", model=model, tools=[backend.tool], **options), model


TOOL_TURN = ["run_started", "turn_started", "model_call_requested", "model_call_responded"]
ANSWER = ["turn_started", "model_call_requested", "model_call_responded", "run_completed"]


async def test_a_dead_primary_tier_falls_back_to_the_next() -> None:
    backend = Backend(primary_up=False)
    agent, model = lookup_agent(backend)
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Paris?", run_id="r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    assert types(events) == [
        *TOOL_TURN,
        "tool_call_intended",
        "tool_tier_failed",
        "tool_call_succeeded",
        *ANSWER,
    ]
    failed, succeeded = events[5].event, events[6].event
    assert isinstance(failed, ToolTierFailed)
    assert (failed.tier, failed.error_type, failed.message) == (
        "primary",
        "ConnectionError",
        "primary is down",
    )
    assert isinstance(succeeded, ToolCallSucceeded)
    assert (succeeded.tier, succeeded.result) == ("cache", {"from": "cache"})
    assert tool_payloads(model.requests[1]) == [{"status": "ok", "result": {"from": "cache"}}]
    assert_span_tree(events)


async def test_an_all_dead_tool_degrades_and_the_run_still_answers() -> None:
    backend = Backend(primary_up=False, cache_up=False)
    agent, model = lookup_agent(backend, system_prompt="You look things up.")
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Paris?", run_id="r1")
        events = await store.read_stream("run-r1")
    assert (result.status, result.output) == ("completed", "Answered.")
    assert types(events) == [
        *TOOL_TURN,
        "tool_call_intended",
        "tool_tier_failed",
        "tool_tier_failed",
        "tool_call_degraded",
        *ANSWER,
    ]
    degraded = events[7].event
    assert isinstance(degraded, ToolCallDegraded)
    assert (degraded.call_id, degraded.tiers) == ("c1", ("primary", "cache"))
    (payload,) = tool_payloads(model.requests[1])
    assert payload["status"] == "degraded"
    system = model.requests[0].messages[0]
    assert system.role == "system"
    assert system.content == f"You look things up.\n\n{DEGRADED_TOOL_INSTRUCTION}"
    assert '"status": "degraded"' in DEGRADED_TOOL_INSTRUCTION
    assert_span_tree(events)


async def test_the_breaker_skips_a_failing_tier_until_the_cooldown_passes() -> None:
    backend = Backend(primary_up=False)
    breaker = BreakerPolicy(threshold=2, cooldown=timedelta(seconds=30))
    agent, _ = lookup_agent(backend, breaker=breaker)
    clock = FakeClock(T0)
    async with MemoryEventStore() as store, Engine(store, clock=clock) as engine:

        async def tiers_of(run_id: str) -> list[tuple[str, str]]:
            await engine.run(agent, "Paris?", run_id=run_id)
            return [
                (r.event.type, r.event.tier)
                for r in await store.read_stream(f"run-{run_id}")
                if isinstance(r.event, ToolTierFailed | ToolTierSkipped | ToolCallSucceeded)
            ]

        failing = [("tool_tier_failed", "primary"), ("tool_call_succeeded", "cache")]
        skipped = [("tool_tier_skipped", "primary"), ("tool_call_succeeded", "cache")]
        assert await tiers_of("r1") == failing
        assert await tiers_of("r2") == failing  # the second failure in a row opens it
        assert await tiers_of("r3") == skipped
        clock.advance(timedelta(seconds=29))
        assert await tiers_of("r4") == skipped
        assert backend.primary_calls == 2

        skip = (await store.read_stream("run-r3"))[5].event
        assert isinstance(skip, ToolTierSkipped) and skip.until == T0 + timedelta(seconds=30)

        clock.advance(timedelta(seconds=1))  # half-open: one trial, which fails again
        assert await tiers_of("r5") == failing
        assert await tiers_of("r6") == skipped
        assert backend.primary_calls == 3

        clock.advance(timedelta(seconds=30))
        backend.primary_up = True  # the trial succeeds and closes the breaker
        assert await tiers_of("r7") == [("tool_call_succeeded", "primary")]
        assert await tiers_of("r8") == [("tool_call_succeeded", "primary")]
        assert backend.primary_calls == 5


async def test_a_breaker_open_on_every_tier_degrades_without_calling_anything() -> None:
    backend = Backend(primary_up=False, cache_up=False)
    agent, _ = lookup_agent(backend, breaker=BreakerPolicy(threshold=1))
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        await engine.run(agent, "Paris?", run_id="r1")
        result = await engine.run(agent, "Paris?", run_id="r2")
        events = await store.read_stream("run-r2")
    assert result.status == "completed"
    assert types(events)[4:8] == [
        "tool_call_intended",
        "tool_tier_skipped",
        "tool_tier_skipped",
        "tool_call_degraded",
    ]
    assert (backend.primary_calls, backend.cache_calls) == (1, 1)
    assert_span_tree(events)


class SlowBackend:
    def __init__(self, *, timeout: float | None) -> None:
        self.started = 0

        @tool(name="lookup", timeout=timeout)
        async def primary(args: CityArgs, ctx: ToolContext) -> str:
            """Look a city up."""
            self.started += 1
            await anyio.Event().wait()  # never answers
            return "unreachable"

        @primary.tier("cache")
        async def cache(args: CityArgs, ctx: ToolContext) -> str:
            return "cached"

        self.tool = primary


@pytest.mark.parametrize("where", ["tool", "agent"])
async def test_a_tier_that_overruns_its_timeout_fails_over(where: str) -> None:
    slow = SlowBackend(timeout=0.05 if where == "tool" else None)
    agent = Agent(
        name="a",
        model=ScriptedModel(
            [reply(tool_calls=[call("lookup", {"city": "Paris"}, id="c1")]), reply("Ok.")]
        ),
        tools=[slow.tool],
        tool_timeout=0.05 if where == "agent" else 30.0,
    )
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        with anyio.fail_after(5):
            result = await engine.run(agent, "Paris?", run_id="r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    failed, succeeded = events[5].event, events[6].event
    assert isinstance(failed, ToolTierFailed)
    assert (failed.tier, failed.error_type) == ("primary", "TimeoutError")
    assert isinstance(succeeded, ToolCallSucceeded)
    assert (succeeded.tier, succeeded.result) == ("cache", "cached")
    assert slow.started == 1


async def test_a_result_with_no_json_form_fails_its_tier() -> None:
    @tool(name="lookup")
    async def returns_a_set(args: CityArgs, ctx: ToolContext) -> object:
        """Look a city up."""
        return {"tags": object()}

    @returns_a_set.tier("cache")
    async def cache(args: CityArgs, ctx: ToolContext) -> object:
        return {"tags": ["cached"]}

    agent = Agent(
        name="a",
        model=ScriptedModel(
            [reply(tool_calls=[call("lookup", {"city": "Paris"}, id="c1")]), reply("Ok.")]
        ),
        tools=[returns_a_set],
    )
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Paris?", run_id="r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    failed, succeeded = events[5].event, events[6].event
    assert isinstance(failed, ToolTierFailed) and failed.error_type == "TypeError"
    assert isinstance(succeeded, ToolCallSucceeded) and succeeded.result == {"tags": ["cached"]}
