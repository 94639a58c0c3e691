"""Model calls (pattern 4, model side): retries honouring Retry-After, fallbacks, timeouts."""

from __future__ import annotations

from typing import TypeVar

import anyio
import pytest

from agentledger.engine import (
    Agent,
    Engine,
    ModelError,
    ModelRateLimitedError,
    ModelReply,
    ModelRequest,
    ModelRequestError,
    ModelServerError,
    Price,
    RetryPolicy,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, reply
from agentledger.events import (
    MemoryEventStore,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    ModelCallRetried,
    ModelFellBack,
    RecordedEvent,
    RunFailed,
    TurnStarted,
)

T = TypeVar("T")


class HangingModel:
    """A provider that accepts the request and never answers."""

    name = "hanging"
    price = Price.free()

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        await anyio.Event().wait()
        raise AssertionError("unreachable")


async def run_agent(agent: Agent, clock: FakeClock) -> tuple[list[RecordedEvent], str]:
    async with MemoryEventStore() as store, Engine(store, clock=clock, ids=SequentialIds()) as e:
        result = await e.run(agent, "Hello", run_id="r1")
        return await store.read_stream("run-r1"), result.status


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


def of_type(events: list[RecordedEvent], cls: type[T]) -> list[T]:
    return [r.event for r in events if isinstance(r.event, cls)]


async def test_a_429_is_retried_after_the_providers_retry_after() -> None:
    clock = FakeClock()
    model = ScriptedModel(
        [ModelRateLimitedError("scripted", "slow down", retry_after=7.0), reply("Hi.")]
    )
    events, status = await run_agent(Agent(name="a", model=model), clock)
    assert status == "completed"
    assert types(events) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "model_call_failed",
        "model_call_retried",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    first, second = of_type(events, ModelCallRequested)
    (failed,) = of_type(events, ModelCallFailed)
    (retried,) = of_type(events, ModelCallRetried)
    (responded,) = of_type(events, ModelCallResponded)
    assert (first.attempt, second.attempt) == (1, 2)
    assert (failed.error_type, failed.status_code, failed.retry_after_s) == (
        "ModelRateLimitedError",
        429,
        7.0,
    )
    assert (retried.attempt, retried.delay_s) == (2, 7.0)
    # A failure and its retry belong to the failed attempt's span; the new attempt has its own.
    assert failed.span_id == retried.span_id == first.span_id != second.span_id
    assert responded.span_id == second.span_id
    assert clock.slept == [7.0]


async def test_a_retry_after_beyond_the_policy_moves_on_to_the_fallback() -> None:
    clock = FakeClock()
    primary = ScriptedModel(
        [ModelRateLimitedError("primary", "come back tomorrow", retry_after=86400.0)],
        name="primary",
    )
    fallback = ScriptedModel([reply("Hi.")], name="fallback")
    agent = Agent(name="a", model=primary, fallback_models=[fallback])
    events, status = await run_agent(agent, clock)
    assert status == "completed"
    assert types(events)[2:] == [
        "model_call_requested",
        "model_call_failed",
        "model_fell_back",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    assert clock.slept == []


async def test_server_errors_exhaust_the_retries_then_fall_back() -> None:
    clock = FakeClock()
    primary = ScriptedModel(
        [ModelServerError("primary", "boom", status_code=500) for _ in range(3)], name="primary"
    )
    fallback = ScriptedModel([reply("From the fallback.")], name="fallback")
    agent = Agent(name="a", model=primary, fallback_models=[fallback])
    events, status = await run_agent(agent, clock)
    assert status == "completed"
    assert types(events) == [
        "run_started",
        "turn_started",
        *["model_call_requested", "model_call_failed", "model_call_retried"] * 2,
        "model_call_requested",
        "model_call_failed",
        "model_fell_back",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    requested = of_type(events, ModelCallRequested)
    assert [(r.model, r.attempt) for r in requested] == [
        ("primary", 1),
        ("primary", 2),
        ("primary", 3),
        ("fallback", 1),
    ]
    assert [f.status_code for f in of_type(events, ModelCallFailed)] == [500, 500, 500]
    assert [r.delay_s for r in of_type(events, ModelCallRetried)] == [0.5, 1.0]
    (fell,) = of_type(events, ModelFellBack)
    assert (fell.from_model, fell.to_model, fell.reason) == (
        "primary",
        "fallback",
        "ModelServerError",
    )
    assert fell.call_id == requested[2].call_id
    assert of_type(events, ModelCallResponded)[0].model == "fallback"
    assert clock.slept == [0.5, 1.0]
    assert len(primary.requests) == 3 and len(fallback.requests) == 1


async def test_a_request_error_goes_straight_to_the_fallback() -> None:
    clock = FakeClock()
    primary = ScriptedModel(
        [ModelRequestError("primary", "bad request", status_code=400)], name="primary"
    )
    fallback = ScriptedModel([reply("Hi.")], name="fallback")
    agent = Agent(name="a", model=primary, fallback_models=[fallback])
    events, status = await run_agent(agent, clock)
    assert status == "completed"
    assert types(events)[2:] == [
        "model_call_requested",
        "model_call_failed",
        "model_fell_back",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    (failed,) = of_type(events, ModelCallFailed)
    assert (failed.error_type, failed.status_code) == ("ModelRequestError", 400)
    assert clock.slept == []


async def test_every_model_failing_fails_the_run_as_models_unavailable() -> None:
    primary = ScriptedModel([ModelRequestError("primary", "bad", status_code=400)], name="primary")
    fallback = ScriptedModel(
        [ModelServerError("fallback", "down", status_code=503)], name="fallback"
    )
    agent = Agent(
        name="a", model=primary, fallback_models=[fallback], retry=RetryPolicy(max_attempts=1)
    )
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Hello", run_id="r1")
        events = await store.read_stream("run-r1")
    assert types(events) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "model_call_failed",
        "model_fell_back",
        "model_call_requested",
        "model_call_failed",
        "run_failed",
    ]
    (failed,) = of_type(events, RunFailed)
    assert failed.error_type == "models_unavailable"
    assert "down" in failed.message
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("models_unavailable: ")
    assert result.output is None


async def test_a_hanging_model_times_out_and_is_recorded() -> None:
    clock = FakeClock()
    hanging = HangingModel()
    fallback = ScriptedModel([reply("Hi.")], name="fallback")
    agent = Agent(
        name="a",
        model=hanging,
        fallback_models=[fallback],
        model_timeout=0.05,
        retry=RetryPolicy(max_attempts=2, base_delay=0.25),
    )
    with anyio.fail_after(5):
        events, status = await run_agent(agent, clock)
    assert status == "completed"
    assert types(events)[2:] == [
        "model_call_requested",
        "model_call_failed",
        "model_call_retried",
        "model_call_requested",
        "model_call_failed",
        "model_fell_back",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    failures = of_type(events, ModelCallFailed)
    assert {f.error_type for f in failures} == {"ModelTimeoutError"}
    assert all("0.05" in f.message for f in failures)
    assert hanging.calls == 2
    assert clock.slept == [0.25]


@pytest.mark.parametrize(
    "error",
    [
        ModelServerError("scripted", "boom", status_code=529),
        ModelRateLimitedError("scripted", "slow down"),
    ],
)
async def test_retryable_errors_without_retry_after_back_off_exponentially(
    error: ModelError,
) -> None:
    clock = FakeClock()
    model = ScriptedModel([error, type(error)("scripted", "again"), reply("Hi.")])
    agent = Agent(name="a", model=model, retry=RetryPolicy(base_delay=1.0, multiplier=3.0))
    events, status = await run_agent(agent, clock)
    assert status == "completed"
    assert [r.delay_s for r in of_type(events, ModelCallRetried)] == [1.0, 3.0]
    assert clock.slept == [1.0, 3.0]


class StallingClock(FakeClock):
    """A clock whose back-off never ends: the process dies while waiting to retry."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        await anyio.Event().wait()


async def test_a_call_cut_off_during_its_back_off_resumes_at_its_next_attempt() -> None:
    model = ScriptedModel([ModelServerError("scripted", "boom", status_code=500), reply("Hi.")])
    agent = Agent(name="a", model=model, max_turns=1)
    async with MemoryEventStore() as store:
        clock = StallingClock()
        async with Engine(store, clock=clock, ids=SequentialIds("a")) as engine:
            with anyio.CancelScope() as crash:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: engine.run(agent, "Hello", run_id="r1"))
                    await clock.sleeping.wait()
                    crash.cancel()
        assert types(await store.read_stream("run-r1")) == [
            "run_started",
            "turn_started",
            "model_call_requested",
            "model_call_failed",
            "model_call_retried",
        ]
        # The new process starts 0.2 s into the 0.5 s back-off that the log records.
        later_clock = FakeClock()
        later_clock.advance(0.2)
        later = Engine(store, agents=[agent], clock=later_clock, ids=SequentialIds("b"))
        async with later:
            result = await later.resume("r1")
        events = await store.read_stream("run-r1")
    # The call goes on where it stood: attempt 2 of the same turn, after what is left of the wait.
    assert (result.status, result.output, result.turns) == ("completed", "Hi.", 1)
    assert types(events)[5:] == [
        "run_resumed",
        "model_call_requested",
        "model_call_responded",
        "run_completed",
    ]
    assert [r.event.turn for r in events if isinstance(r.event, TurnStarted)] == [1]
    requested = [r.event for r in events if isinstance(r.event, ModelCallRequested)]
    assert [r.attempt for r in requested] == [1, 2]
    assert later_clock.slept == [pytest.approx(0.3)]
