"""The testing kit for users: the fault-injecting store, the invariant checkers, the strategies.

Every checker is shown to fail, with its message, on a log or a world that breaks its rule, and
to pass on real runs; the strategies are checked against the engine's own verdicts.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel, Field, ValidationError

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelRequest,
    ModelServerError,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.testing import (
    FakeClock,
    Fault,
    FaultyStore,
    ModelFailure,
    ScriptedModel,
    ScriptedRun,
    ScriptedTurn,
    SequentialIds,
    SimulatedCrash,
    UnexpectedCall,
    call,
    check_invariants,
    check_replay_reproduces,
    check_run_ended,
    check_side_effects_once,
    check_spend_within_caps,
    check_state_matches_log,
    check_tool_results_paired,
    check_versions_gapless,
    reply,
    tripwired,
)
from agentledger.engine.testing.strategies import (
    invalid_arguments,
    malformed_json,
    model_errors,
    scripted_runs,
    tool_arguments,
)
from agentledger.events import (
    MemoryEventStore,
    NewEvent,
    RecordedEvent,
    SqliteEventStore,
    StorageFullError,
    StoreUnavailableError,
    StreamAppend,
    ToolArgumentsRejected,
    ToolCallIntended,
    ToolCallSucceeded,
    TurnStarted,
)
from agentledger.projections import (
    AssistantMessage,
    ProjectionRunner,
    RunIndex,
    ToolResultMessage,
    UserMessage,
    fold,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def turn_started(n: int = 1) -> NewEvent:
    return NewEvent(TurnStarted(run_id="r", span_id="s", at=T0, turn=n), f"e{n}")


def one(stream: str, *events: NewEvent, expected: int | None = None) -> StreamAppend:
    return StreamAppend(stream, list(events), expected_version=expected)


# -- FaultyStore -----------------------------------------------------------------------------------


async def test_the_nth_append_fails_once_with_a_typed_error_and_writes_nothing() -> None:
    async with FaultyStore(MemoryEventStore(), fail=Fault("append", at=2)) as store:
        await store.append(one("s", turn_started(1)))
        with pytest.raises(StoreUnavailableError, match="the 2nd append"):
            await store.append(one("s", turn_started(2)))
        await store.append(one("s", turn_started(3)))
        assert [r.event_id for r in await store.read_stream("s")] == ["e1", "e3"]
        assert [i.nth for i in store.injected] == [2]
        assert [r.event_id for r in store.acknowledged] == ["e1", "e3"]
        assert (store.counts["append"], store.counts["read"]) == (3, 1)


async def test_a_fault_for_good_fails_every_operation_of_its_kind_from_n_on() -> None:
    fault = Fault("append", at=2, times=None, error=StorageFullError)
    async with FaultyStore(MemoryEventStore(), fail=fault) as store:
        await store.append(one("s", turn_started(1)))
        for n in (2, 3, 4):
            with pytest.raises(StorageFullError):
                await store.append(one("s", turn_started(n)))
        assert await store.stream_version("s") == 1  # reads still work
        store.healthy = True
        await store.append(one("s", turn_started(5)))
        assert len(store.injected) == 3


async def test_an_append_may_fail_after_it_committed() -> None:
    fault = Fault("append", at=1, after_commit=True)
    async with FaultyStore(MemoryEventStore(), fail=fault) as store:
        with pytest.raises(StoreUnavailableError):
            await store.append(one("s", turn_started(1)))
        assert await store.get_event("e1") is not None  # it is there all the same
        assert store.acknowledged == []
        assert store.injected[0].committed


async def test_reads_and_checkpoint_saves_are_counted_and_failed_by_kind() -> None:
    faults = [Fault("read", at=3), Fault("checkpoint", at=1, error=SimulatedCrash)]
    async with FaultyStore(MemoryEventStore(), fail=faults) as store:
        await store.read_stream("s")
        await store.get_event("x")
        with pytest.raises(StoreUnavailableError, match="stream_version"):
            await store.stream_version("s")
        await store.read_all()
        with pytest.raises(SimulatedCrash):
            await store.save_checkpoint("p", expected_position=0, position=0, rows={})
        assert (await store.load_checkpoint("p")).position == 0
        assert dict(store.counts) == {"read": 5, "checkpoint": 1, "any": 6}


async def test_a_fault_on_any_operation_counts_them_all() -> None:
    async with FaultyStore(MemoryEventStore(), fail=Fault("any", at=3)) as store:
        await store.append(one("s", turn_started(1)))
        await store.read_stream("s")
        with pytest.raises(StoreUnavailableError, match="the 2nd append"):
            await store.append(one("s", turn_started(2)))
        assert store.injected[0].overall == 3


def test_faults_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        Fault("append", at=0)
    with pytest.raises(ValueError, match="at least one"):
        Fault("read", at=1, times=0)
    assert not issubclass(SimulatedCrash, Exception)


async def test_subscribers_of_the_wrapper_see_its_appends() -> None:
    async with FaultyStore(MemoryEventStore()) as store:
        await store.append(one("s", turn_started(1)))
        seen: list[RecordedEvent] = []
        with anyio.fail_after(5):
            async for recorded in store.subscribe(poll_interval=0):
                seen.append(recorded)
                if len(seen) == 1:
                    await store.append(one("s", turn_started(2)))
                else:
                    break
        assert [r.event_id for r in seen] == ["e1", "e2"]


class City(BaseModel):
    city: str


def weather_agent(sent: dict[str, int] | None = None) -> Agent:
    @tool(side_effect=True)
    async def book(args: City, ctx: ToolContext) -> str:
        """Book a trip."""
        if sent is not None:
            assert ctx.idempotency_key is not None
            sent[ctx.idempotency_key] = sent.get(ctx.idempotency_key, 0) + 1
        return f"booked {args.city}"

    def script(request: ModelRequest) -> Any:
        if request.messages[-1].role == "tool":
            return reply("Booked.")
        return reply(tool_calls=[call("book", {"city": "Oslo"}, id="c1")])

    return Agent(name="booker", model=ScriptedModel(script), tools=[book])


async def test_a_run_on_sqlite_whose_disk_fills_raises_typed_and_resumes(tmp_path: Path) -> None:
    sent: dict[str, int] = {}
    agent = weather_agent(sent)
    fault = Fault("append", at=2, times=None, error=StorageFullError)
    store = FaultyStore(SqliteEventStore(tmp_path / "runs.db"), fail=fault)
    async with store, Engine(store, clock=FakeClock(T0)) as engine:
        with pytest.raises(StorageFullError):
            await engine.run(agent, "Oslo", run_id="r1")
        assert sent == {}  # the intent could not be written, so the tool never ran
    async with SqliteEventStore(tmp_path / "runs.db") as healthy:
        async with Engine(healthy, agents=[agent], clock=FakeClock(T0)) as engine:
            result = await engine.resume("r1")
            await check_invariants(engine, "r1", agent=agent, result=result, executions=sent)
        for acknowledged in store.acknowledged:
            assert await healthy.get_event(acknowledged.event_id) == acknowledged
    assert result.status == "completed"
    assert list(sent.values()) == [1]


async def test_a_projection_whose_checkpoint_save_failed_catches_up_from_the_last_save() -> None:
    async with MemoryEventStore() as inner:
        agent = weather_agent()
        async with Engine(inner, clock=FakeClock(T0), ids=SequentialIds()) as engine:
            for n in range(3):
                await engine.run(agent, "Oslo", run_id=f"r{n}")
        faulty = FaultyStore(inner, fail=Fault("checkpoint", at=2))
        with pytest.raises(StoreUnavailableError):
            async with ProjectionRunner(faulty, RunIndex(), page_size=5, save_every=5) as runner:
                await runner.catch_up()
        async with ProjectionRunner(inner, RunIndex()) as runner:
            assert runner.saved_position == 5  # the first save held
            await runner.catch_up()
            assert dict(runner.rows) == fold(RunIndex(), await inner.read_all())


# -- the checkers pass on real runs and fail on broken ones -----------------------------------


async def test_the_checkers_pass_on_a_run_and_name_what_breaks_them() -> None:
    sent: dict[str, int] = {}
    agent = weather_agent(sent)
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        result = await engine.run(agent, "Oslo", run_id="r1")
        state = await check_invariants(engine, "r1", agent=agent, result=result, executions=sent)
        assert state.status == "completed"
        (key,) = sent

        wrong = dataclasses.replace(result, output="Something else.")
        with pytest.raises(
            AssertionError,
            match=r"run 'r1': the result differs .*output \(returned 'Something else.'",
        ):
            await check_state_matches_log(store, "r1", result=wrong)
        with pytest.raises(AssertionError, match=r"the state held differs .*'status'"):
            await check_state_matches_log(store, "r1", result=type(state)(status="failed"))
        with pytest.raises(AssertionError, match="took 2 turns; its limit is 1"):
            await check_run_ended(store, "r1", max_turns=1)
        with pytest.raises(AssertionError, match=f"key {key}: the side effect happened 2 times"):
            await check_side_effects_once(store, executions={key: 2})
        with pytest.raises(AssertionError, match=r"key other: executed 1 time\(s\) with no intent"):
            await check_side_effects_once(store, executions={"other": 1})


async def test_a_run_left_running_is_neither_ended_nor_paused() -> None:
    agent = weather_agent()
    store = FaultyStore(MemoryEventStore(), fail=Fault("append", at=2, error=SimulatedCrash))
    async with store:
        with pytest.raises(SimulatedCrash):
            async with Engine(store, clock=FakeClock(T0)) as engine:
                await engine.run(agent, "Oslo", run_id="r1")
        with pytest.raises(AssertionError, match="run 'r1' is 'running' after 1 turn"):
            await check_run_ended(store, "r1", max_turns=5)


class GappyStore(MemoryEventStore):
    """A store that hides one event from ``read_all`` (what a projection tailing it would miss)."""

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return [r for r in await super().read_all(after=after, limit=limit) if r.position != 2]


async def test_gapless_versions_are_checked_against_read_all_and_read_stream() -> None:
    async with GappyStore() as store:
        await store.append(one("s", turn_started(1), turn_started(2), turn_started(3)))
        with pytest.raises(AssertionError) as failure:
            await check_versions_gapless(store)
    message = str(failure.value)
    assert "global positions skip or repeat at 2: 3" in message
    assert "stream 's' has versions [1, 3], not 1..2" in message
    assert "reads back other events" in message


def _intent(run_id: str, at: datetime) -> NewEvent:
    event = ToolCallIntended(
        run_id=run_id, span_id="s", at=at, call_id="c", tool_name="book", idempotency_key="k"
    )
    return NewEvent(event, f"{run_id}-intent")


def _success(run_id: str, n: int = 1) -> NewEvent:
    event = ToolCallSucceeded(
        run_id=run_id, span_id="s", at=T0, call_id="c", tool_name="book", idempotency_key="k"
    )
    return NewEvent(event, f"{run_id}-done-{n}")


async def test_a_key_intended_again_while_its_success_answers_for_it_is_a_double_execution() -> (
    None
):
    async with MemoryEventStore() as store:
        await store.append(one("idem-k", _intent("a", T0), _success("a")))
        assert await check_side_effects_once(store, executions={"k": 1}) == {"k": 1}
        await store.append(one("idem-k", _intent("b", T0 + timedelta(days=2)), _success("b")))
        with pytest.raises(AssertionError, match="key k: intended again at version 3"):
            await check_side_effects_once(store)
        # With a retention of a day the second intent was allowed, and so two executions.
        agent = weather_agent()

        @tool(name="book", side_effect=True, retention=timedelta(days=1))
        async def kept_a_day(args: City, ctx: ToolContext) -> str:
            """Book a trip."""
            return "booked"

        short = Agent(name="booker", model=agent.model, tools=[kept_a_day])
        assert await check_side_effects_once(store, executions={"k": 2}, agent=short) == {"k": 2}
        await store.append(one("idem-k", _success("b", 2)))
        with pytest.raises(AssertionError, match="a second success for one intent at version 5"):
            await check_side_effects_once(store, agent=short)


async def test_tool_results_must_follow_their_calls_in_the_run_and_in_each_request() -> None:
    agent = weather_agent()
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        await engine.run(agent, "Oslo", run_id="r1")
        asked = AssistantMessage(tool_calls=(call("book", {"city": "Oslo"}, id="c1"),))
        result = ToolResultMessage(tool_call_id="c1", tool_name="book", content="{}")
        orphan = ToolResultMessage(tool_call_id="c9", tool_name="book", content="{}")
        fine = ModelRequest(messages=[UserMessage(content="Oslo"), asked, result])
        assert (await check_tool_results_paired(store, "r1", requests=[fine])).status == (
            "completed"
        )
        for broken, why in [
            ([asked, orphan], r"request 1: the tool result at 1 \('c9'\) has no tool call"),
            ([asked], r"request 1: tool call\(s\) \['c1'\] have no result"),
            ([asked, AssistantMessage(content="Hi")], "have no result before the assistant"),
        ]:
            with pytest.raises(AssertionError, match=why):
                await check_tool_results_paired(store, "r1", requests=[ModelRequest(broken)])


async def test_spend_is_checked_against_the_caps_of_the_run_and_the_day() -> None:
    price = Price(input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))
    agent = Agent(name="a", model=ScriptedModel([reply("Hi.")], price=price), max_tokens=10)
    budgets = Budgets({"paid": BudgetPolicy(per_run_usd=Decimal(1), per_user_day_usd=Decimal(2))})
    async with MemoryEventStore() as store, Engine(store, budgets=budgets) as engine:
        result = await engine.run(agent, "Hello", surface="paid")
        assert result.cost_usd == Decimal("0.015")
        await check_spend_within_caps(store, budgets)
        tight = Budgets({"paid": BudgetPolicy(per_run_usd=Decimal("0.01"))})
        with pytest.raises(AssertionError, match=r"run ledger run-\S+: .* above the cap of 0\.01"):
            await check_spend_within_caps(store, tight)
        day = Budgets({"paid": BudgetPolicy(per_user_day_usd=Decimal("0.001"))})
        with pytest.raises(
            AssertionError, match=r"day ledger budget-anonymous-\S+: .* above the cap of 0\.001"
        ):
            await check_spend_within_caps(store, day)


async def test_a_replay_with_a_changed_agent_fails_the_check_with_its_divergence() -> None:
    agent = weather_agent()
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        await engine.run(agent, "Oslo", run_id="r1")
        report = await check_replay_reproduces(engine, "r1", agent=agent)
        assert len(report.replayed) == len(report.recorded)
        changed = Agent(name="booker", model=agent.model, tools=agent.tools, system_prompt="New.")
        with pytest.raises(AssertionError, match="replay of run 'r1': replay diverged"):
            await check_replay_reproduces(engine, "r1", agent=changed)


async def test_the_replayed_copy_of_an_agent_trips_on_any_model_or_tool_call() -> None:
    agent = weather_agent()
    guarded, touched = tripwired(agent)
    assert guarded.tool_specs == agent.tool_specs
    assert guarded.price_of(guarded.model) == agent.price_of(agent.model)
    with pytest.raises(UnexpectedCall):
        await guarded.model.complete(ModelRequest(messages=[]))
    ctx = ToolContext(run_id="r", call_id="c", user_id="u")
    with pytest.raises(UnexpectedCall):
        await guarded.tools[0].invoke("primary", City(city="Oslo"), ctx)
    assert touched == ["called model 'scripted'", "ran tier 'primary' of tool 'book'"]


# -- strategies ------------------------------------------------------------------------------------


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Leg(BaseModel):
    origin: str = Field(pattern=r"^[A-Z]{3}$")
    stops: int = Field(default=0, ge=0, le=3)


class Trip(BaseModel):
    legs: list[Leg] = Field(min_length=1, max_length=3)
    travellers: int = Field(ge=1, le=9)
    budget: float | None = Field(default=None, gt=0, le=10_000)
    cabin: Literal["economy", "business"] = "economy"
    color: Color = Color.RED
    leaving: datetime | None = None
    notes: dict[str, int] = {}


@tool
async def plan(args: Trip, ctx: ToolContext) -> str:
    """Plan a trip."""
    return f"{len(args.legs)} legs"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    valid=tool_arguments(plan),
    invalid=invalid_arguments(plan),
    garbled=malformed_json(plan),
)
def test_arguments_drawn_for_a_tool_are_what_its_model_accepts_or_refuses(
    valid: dict[str, Any], invalid: str, garbled: str
) -> None:
    Trip.model_validate(valid)
    with pytest.raises(ValidationError):
        Trip.model_validate(strict_json(invalid))
    with pytest.raises(ValueError):
        strict_json(garbled)


def strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON: no NaN or Infinity, no key twice in an object."""

    def no_constant(name: str) -> None:
        raise ValueError(name)

    def no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) < len(pairs):
            raise ValueError("a key twice")
        return dict(pairs)

    return json.loads(text, parse_constant=no_constant, object_pairs_hook=no_twice)


@settings(max_examples=30)
@given(error=model_errors("primary"))
def test_drawn_model_errors_are_retryable_model_errors(error: Exception) -> None:
    assert getattr(error, "retryable", False)
    assert str(error).startswith("primary: ")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(run=scripted_runs([plan, weather_agent().tools[0]], max_turns=3))
def test_a_drawn_run_is_rejected_where_it_says_and_keeps_every_invariant(
    run: ScriptedRun,
) -> None:
    async def check() -> None:
        sent: dict[str, int] = {}
        tools = [plan, weather_agent(sent).tools[0]]
        agent = Agent(name="planner", model=run.model(), tools=tools, max_turns=5)
        async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
            result = await engine.run(agent, "Plan it.", run_id="r1")
            await check_invariants(engine, "r1", agent=agent, result=result, executions=sent)
            events = await store.read_stream("run-r1")
        rejected = {
            r.event.call_id: r.event.error_type
            for r in events
            if isinstance(r.event, ToolArgumentsRejected)
        }
        expected = run.expected(agent)
        assert rejected == {i: kind for i, kind in expected.items() if kind != "valid"}
        assert result.status == "completed"
        assert result.output == run.answer

    anyio.run(check)


async def test_a_scripted_run_fails_each_turn_as_scripted_then_replies() -> None:
    booking = call("book", {"city": "Oslo"})
    run = ScriptedRun(
        (ScriptedTurn(reply(tool_calls=[booking]), (ModelFailure("server"),)),),
        answer="Booked.",
        answer_failures=(ModelFailure("rate_limit", retry_after=2.0),),
    )
    model = run.model("primary")
    agent = Agent(name="booker", model=model, tools=weather_agent().tools)
    clock = FakeClock(T0)
    async with MemoryEventStore() as store, Engine(store, clock=clock) as engine:
        result = await engine.run(agent, "Oslo")
    assert (result.status, result.output) == ("completed", "Booked.")
    assert len(model.requests) == 4
    assert clock.slept == [0.5, 2.0]  # the default back-off, then the provider's Retry-After
    error = ModelFailure("overloaded").error("m")
    assert isinstance(error, ModelServerError) and error.status_code == 529


def test_the_kit_imports_without_hypothesis() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None
        from agentledger.engine.testing import FaultyStore, ScriptedModel, check_invariants
        try:
            import agentledger.engine.testing.strategies
        except ImportError:
            print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_model_function_may_return_an_exception_to_raise() -> None:
    model = ScriptedModel(lambda request: ModelServerError("m", "down", status_code=500))
    with pytest.raises(ModelServerError):
        anyio.run(model.complete, ModelRequest(messages=[]))
    assert len(model.requests) == 1
