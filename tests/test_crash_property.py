"""A property over random scripted runs: a crash at any write, then resume, changes nothing.

Each example is a random run: tool calls good and bad (invalid arguments, unknown tools), tools
whose tiers fail (degrading them, tripping their breakers), side effects with a reconcile hook
or safe to run again, model errors and rate limits that make a call fall back to another model,
a budget that may stop the run, memory that compacts, and a critic that may send the answer
back. The models and tools are pure functions of what they are asked, like real services whose
behaviour does not depend on our crashes.

The run is made once without interruption (the reference), and once with the process dying at
one or two of its writes (a ``FaultyStore`` raises ``SimulatedCrash`` instead of appending:
nothing of it commits, everything staged is lost), resumed by a fresh engine each time. The
resumed run ends in the same state as the reference, with the same model attempts answered, and
every side effect happened once. The testing kit's invariants hold for both runs (result equals
the fold of the log, ended within the turn limit, gapless versions, tool calls paired with their
results in the log and in every request, one execution per key, spend within the caps), and
both are replayed from their logs: no divergence, and no model or tool is called.

``AGENTLEDGER_FUZZ_EXAMPLES`` sets the number of examples (``benchmarks/crash_fuzz.py`` runs many).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BreakerPolicy,
    BudgetPolicy,
    Budgets,
    Critic,
    Engine,
    MemoryPolicy,
    ModelRateLimitedError,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    Reconciled,
    RequiredKeywords,
    RetryPolicy,
    RunResult,
    ToolContext,
    tool,
)
from agentledger.engine.testing import (
    FakeClock,
    Fault,
    FaultyStore,
    ScriptedModel,
    SequentialIds,
    SimulatedCrash,
    call,
    check_replay_reproduces,
    check_run_ended,
    check_side_effects_once,
    check_spend_within_caps,
    check_state_matches_log,
    check_tool_results_paired,
    check_versions_gapless,
    reply,
)
from agentledger.engine.testing.strategies import tool_calls
from agentledger.events import (
    MemoryEventStore,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    ToolCall,
    Usage,
)
from agentledger.projections import RunState, fold_run

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EXAMPLES = int(os.environ.get("AGENTLEDGER_FUZZ_EXAMPLES", "60"))
REVISE = "Your answer was not accepted"
_NOTEWORTHY = frozenset(
    {
        "model_call_interrupted",
        "model_fell_back",
        "tool_call_claimed",
        "tool_call_reconciled",
        "tool_tier_skipped",
        "tool_call_degraded",
        "tool_result_reused",
        "memory_compacted",
        "revision_requested",
        "budget_exceeded",
        "tool_outcome_unknown",
    }
)


# -- the world: services whose answers are functions of the question --------------------------


class Query(BaseModel):
    q: str
    fail: int = 0  # 0: fine; 1: the primary tier fails; 2: every tier fails


class Message(BaseModel):
    to: str


@dataclass
class World:
    """What lives outside the store: the mail service and the note service."""

    sent: dict[str, int]
    noted: set[str]
    executions: int = 0

    def tools(self) -> list[Any]:
        @tool
        async def lookup(args: Query, ctx: ToolContext) -> str:
            """Look something up."""
            self.executions += 1
            if args.fail >= 1:
                raise ConnectionError("lookup service down")
            return f"{args.q}: " + "fact " * 400

        @lookup.tier("mirror")
        async def mirror(args: Query, ctx: ToolContext) -> str:
            self.executions += 1
            if args.fail >= 2:
                raise ConnectionError("mirror down")
            return f"{args.q} (mirror): " + "fact " * 400

        @tool(side_effect=True)
        async def send(args: Message, ctx: ToolContext) -> dict[str, str]:
            """Send a message."""
            self.executions += 1
            assert ctx.idempotency_key is not None
            self.sent[ctx.idempotency_key] = self.sent.get(ctx.idempotency_key, 0) + 1
            return {"sent_to": args.to}

        @send.reconciler
        async def sent_already(args: Message, ctx: ToolContext) -> Reconciled:
            assert ctx.idempotency_key is not None
            if ctx.idempotency_key in self.sent:
                return Reconciled.done({"sent_to": args.to})
            return Reconciled.not_done()

        @tool(side_effect=True, retry_safe=True)
        async def note(args: Message, ctx: ToolContext) -> str:
            """Write a note (the note service drops a second write with the same key)."""
            self.executions += 1
            assert ctx.idempotency_key is not None
            self.noted.add(ctx.idempotency_key)
            return f"noted for {args.to}"

        return [lookup, send, note]


@dataclass(frozen=True)
class Scenario:
    turns: tuple[tuple[ToolCall, ...], ...]
    needs_revision: bool
    failing_turns: frozenset[int]
    failure: str
    capped: bool
    memory: bool
    crashes: frozenset[int]


def _model(scenario: Scenario, name: str, *, primary: bool) -> ScriptedModel:
    def script(request: ModelRequest) -> ModelReply | Exception:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if primary and turn in scenario.failing_turns:
            if scenario.failure == "rate_limit":
                return ModelRateLimitedError(name, "slow down", retry_after=2.0)
            return ModelServerError(name, "overloaded", status_code=503)
        usage = Usage(input_tokens=100 + 10 * len(request.messages), output_tokens=20)
        if turn < len(scenario.turns):
            return reply(tool_calls=scenario.turns[turn], usage=usage)
        revised = any(m.role == "user" and m.content.startswith(REVISE) for m in request.messages)
        final = not scenario.needs_revision or revised
        return reply("The final answer." if final else "A draft.", usage=usage)

    price = Price(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    return ScriptedModel(script, name=name, price=price)  # type: ignore[arg-type]


def _summariser() -> ScriptedModel:
    def script(request: ModelRequest) -> ModelReply:
        return reply(f"Summary of {len(request.messages[-1].content)} characters.")

    return ScriptedModel(script, name="summariser")


def _agent(scenario: Scenario, world: World) -> Agent:
    return Agent(
        name="fuzzed",
        model=_model(scenario, "primary", primary=True),
        fallback_models=[_model(scenario, "backup", primary=False)],
        system_prompt="Answer with the facts.",
        tools=world.tools(),
        max_turns=8,
        max_tokens=200,
        retry=RetryPolicy(max_attempts=2, base_delay=1.0),
        breaker=BreakerPolicy(threshold=2, cooldown=timedelta(days=1)),
        memory=MemoryPolicy(
            max_tokens=8_000, compact_at=700, keep_recent_turns=1, summary_max_tokens=100
        )
        if scenario.memory
        else None,
        summary_model=_summariser(),
        critic=Critic([RequiredKeywords(["final"])]),
    )


BUDGETS = Budgets(
    {
        "capped": BudgetPolicy(per_run_usd=Decimal("0.015")),
        "free": BudgetPolicy(),
    }
)


# -- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A run of a scenario: its store, the world and agent it ran with, how many times it was
    resumed after a crash, and what its last session returned."""

    store: FaultyStore
    world: World
    agent: Agent
    resumes: int
    result: RunResult | None


async def _run(scenario: Scenario, crashes: set[int]) -> Outcome:
    """Run the scenario, dying at the writes in ``crashes`` (counted over the store's life) and
    resuming after each."""
    world = World(sent={}, noted=set())
    agent = _agent(scenario, world)
    faults = [Fault("append", at=n, error=SimulatedCrash) for n in sorted(crashes)]
    store = FaultyStore(MemoryEventStore(), fail=faults)
    surface = "capped" if scenario.capped else "free"
    sessions = 0
    result: RunResult | None = None
    async with store:
        clock = FakeClock(T0)
        while True:
            state = fold_run(await store.read_stream("run-r1"))
            if state.is_terminal:
                break
            assert sessions <= len(crashes), "a session that did not crash did not end the run"
            ids = SequentialIds(f"s{sessions}")
            try:
                async with Engine(
                    store, agents=[agent], clock=clock, ids=ids, budgets=BUDGETS
                ) as engine:
                    if state.started is None:  # nothing written yet: start it (again)
                        result = await engine.run(
                            agent, "Find the facts.", run_id="r1", surface=surface
                        )
                    else:
                        result = await engine.resume("r1")
            except SimulatedCrash:
                result = None
            sessions += 1
            # A later process, on a clock past the time limits of whatever was in flight.
            clock = FakeClock(clock.now() + timedelta(hours=1))
    return Outcome(store, world, agent, sessions - 1, result)


def _final(state: RunState) -> tuple[object, ...]:
    return (
        state.status,
        state.output,
        state.flagged,
        state.turn,
        state.messages,
        state.usage,
        state.cost_usd,
        state.spent_usd,
    )


def _answered(events: list[RecordedEvent]) -> list[tuple[str, str, int, str]]:
    """Every model attempt that got an answer: purpose, model, attempt, reply or error."""
    requests = {e.event.call_id: e.event for e in events if isinstance(e.event, ModelCallRequested)}
    return [
        (
            requests[r.event.call_id].purpose,
            r.event.model,
            requests[r.event.call_id].attempt,
            r.type,
        )
        for r in events
        if isinstance(r.event, ModelCallResponded | ModelCallFailed)
    ]


async def _invariants(run: Outcome) -> None:
    """The testing kit's invariants of the run, its replay included."""
    store, agent = run.store, run.agent
    await check_state_matches_log(store, "r1", result=run.result)
    await check_run_ended(store, "r1", max_turns=agent.max_turns)
    await check_versions_gapless(store)
    models = [m for m in (*agent.models, agent.summary_model) if isinstance(m, ScriptedModel)]
    agent_requests = [r for m in agent.models if isinstance(m, ScriptedModel) for r in m.requests]
    await check_tool_results_paired(store, "r1", requests=agent_requests)
    await check_side_effects_once(store, executions=run.world.sent, agent=agent)
    await check_spend_within_caps(store, BUDGETS)
    calls = [len(m.requests) for m in models]
    executions = run.world.executions
    async with Engine(store, budgets=BUDGETS) as engine:
        await check_replay_reproduces(engine, "r1", agent=agent)
    # The replay ran a copy of the agent that fails if touched; the originals were not either.
    assert [len(m.requests) for m in models] == calls
    assert run.world.executions == executions


# -- the property -----------------------------------------------------------------------------


_CONTRACTS = World(sent={}, noted=set()).tools()
"""The tools' names and argument models, for the testing kit to draw bad calls against."""


def _calls(turn: int) -> st.SearchStrategy[tuple[ToolCall, ...]]:
    # Good calls come from small sets, so keys repeat and tiers fail; bad ones (invalid
    # arguments, malformed JSON, unknown tools) from the testing kit.
    bad = tool_calls(_CONTRACTS, kinds=("invalid_arguments", "invalid_json", "unknown_tool"))
    one = st.one_of(
        st.builds(
            lambda q, fail: ("lookup", {"q": q, "fail": fail}),
            st.sampled_from("abc"),
            st.sampled_from([0, 0, 1, 2]),
        ),
        st.builds(lambda to: ("send", {"to": to}), st.sampled_from(["ann", "bob"])),
        st.builds(lambda to: ("note", {"to": to}), st.sampled_from(["ann", "bob"])),
        bad.map(lambda c: (c.name, c.arguments)),
    )
    return st.lists(one, min_size=1, max_size=3).map(
        lambda calls: tuple(
            call(name, args, id=f"t{turn}c{i}") for i, (name, args) in enumerate(calls)
        )
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(0, 4))
    turns = tuple(draw(_calls(turn)) for turn in range(count))
    return Scenario(
        turns=turns,
        needs_revision=draw(st.booleans()),
        failing_turns=frozenset(draw(st.sets(st.integers(0, count), max_size=2))),
        failure=draw(st.sampled_from(["server", "rate_limit"])),
        capped=draw(st.booleans()),
        memory=draw(st.booleans()),
        crashes=frozenset(draw(st.sets(st.integers(1, 9), min_size=1, max_size=2))),
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
@example(  # found by the fuzz run: a key's verdict read, then left behind by a partial write
    scenario=Scenario(
        turns=(
            (call("send", {"to": "bob"}, id="t0c0"),),
            (call("send", {"to": "ann"}, id="t1c0"), call("send", {"to": "bob"}, id="t1c1")),
        ),
        needs_revision=False,
        failing_turns=frozenset(),
        failure="server",
        capped=True,
        memory=False,
        crashes=frozenset({8}),
    )
)
def test_a_crash_at_any_write_then_resume_ends_as_if_nothing_happened(scenario: Scenario) -> None:
    async def check() -> None:
        reference = await _run(scenario, set())
        crashed = await _run(scenario, set(scenario.crashes))
        async with reference.store, crashed.store:
            expected = await reference.store.read_stream("run-r1")
            got = await crashed.store.read_stream("run-r1")
            assert _final(fold_run(got)) == _final(fold_run(expected))
            assert _answered(got) == _answered(expected)
            # Every message went out once, and the same ones; every note was written.
            assert crashed.world.sent == reference.world.sent
            assert crashed.world.noted == reference.world.noted
            await _invariants(reference)
            await _invariants(crashed)
            kinds = {e.event.type for e in got}
            event(f"sessions after a crash: {crashed.resumes}")
            for kind in sorted(kinds & _NOTEWORTHY):
                event(kind)
            event(f"ended: {fold_run(got).status}")
        assert crashed.resumes <= len(scenario.crashes)
        # Each crash the run met was one the store injected, at an append, before it committed.
        assert len(crashed.store.injected) == crashed.resumes
        assert all(not i.committed and i.kind == "append" for i in crashed.store.injected)

    anyio.run(check)
