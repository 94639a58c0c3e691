"""Storage faults: runs on SQLite whose store fails at the Nth operation, then a healthy restart.

Each scenario (side effects with a reconcile hook or safe to re-run, a tool whose first tier
fails, model errors that retry and fall back, budget reservations, a budget that runs out) is run
once without faults (the reference, which also counts its store operations), then once per
fault: a ``FaultyStore`` over a fresh SQLite file fails the Nth operation (appends, or any
operation: reads, versions, lookups and checkpoints too), once or for good, with
``StoreUnavailableError``, ``StorageFullError``, an append that commits but reports failure (its
outcome unknown to the engine), or a simulated crash, for every N the reference run reached.
Then the process "restarts": the file is reopened by a new store and engine, on a clock an hour
later, and the run is resumed (or started again if nothing of it was stored). A real full disk
is tried too: the file gets a page quota (``max_page_count``) at every size the run passes
through, then the quota is lifted. Last, projection updates: a ``ProjectionRunner`` over the
runs' events fails its Nth ``save_checkpoint``; a new runner catches up on the healthy store.

Counted: silent losses (an event whose append was acknowledged is missing afterwards, or a
projection's rows differ from the fold of the log: 0), stuck runs (neither ended nor paused
after the restart: 0), untyped errors (the faulty session raised something other than the
store's or engine's typed errors or the simulated crash: 0), duplicate side effects (0), runs
that end otherwise than the reference (0) and the testing kit's invariant violations (0).

    python benchmarks/faults_storage.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    EngineError,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    Reconciled,
    RetryPolicy,
    RunResult,
    ToolContext,
    tool,
)
from agentledger.engine.testing import (
    FakeClock,
    Fault,
    FaultTarget,
    FaultyStore,
    ScriptedModel,
    SequentialIds,
    SimulatedCrash,
    call,
    check_replay_reproduces,
    check_side_effects_once,
    check_spend_within_caps,
    check_state_matches_log,
    check_tool_results_paired,
    check_versions_gapless,
    read_everything,
    reply,
)
from agentledger.events import (
    EventStore,
    EventStoreError,
    SqliteEventStore,
    StorageFullError,
    ToolCall,
    Usage,
)
from agentledger.projections import ProjectionRunner, RunIndex, RunState, fold, fold_run

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ENDED = frozenset({"completed", "failed", "cancelled", "budget_exceeded", "paused"})
BUDGETS = Budgets(
    {"capped": BudgetPolicy(per_run_usd=Decimal("0.01")), "free": BudgetPolicy()},
)
ERRORS = ("unavailable", "storage_full", "unknown_outcome", "crash")


# -- the world and the agent ----------------------------------------------------------------------


class Query(BaseModel):
    q: str
    fail: int = 0


class Message(BaseModel):
    to: str


@dataclass
class World:
    """The services outside the store: messages sent (by key), notes written (deduped by key)."""

    sent: dict[str, int] = field(default_factory=dict)
    noted: set[str] = field(default_factory=set)

    def tools(self) -> list[Any]:
        @tool
        async def lookup(args: Query, ctx: ToolContext) -> str:
            """Look something up."""
            if args.fail:
                raise ConnectionError("lookup service down")
            return f"{args.q}: the facts"

        @lookup.tier("mirror")
        async def mirror(args: Query, ctx: ToolContext) -> str:
            return f"{args.q} (mirror): the facts"

        @tool(side_effect=True)
        async def send(args: Message, ctx: ToolContext) -> dict[str, str]:
            """Send a message."""
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
            """Write a note (the service drops a second write with the same key)."""
            assert ctx.idempotency_key is not None
            self.noted.add(ctx.idempotency_key)
            return f"noted for {args.to}"

        return [lookup, send, note]


@dataclass(frozen=True)
class Scenario:
    """A run: the tool calls of each turn, the turns where the primary model fails, the
    surface (``capped``: every call reserves budget)."""

    name: str
    turns: tuple[tuple[ToolCall, ...], ...]
    failing_turns: frozenset[int] = frozenset()
    surface: str = "free"


SCENARIOS = (
    Scenario(
        "side_effects",
        (
            (call("lookup", {"q": "a"}, id="c1"), call("send", {"to": "ann"}, id="c2")),
            (call("note", {"to": "bob"}, id="c3"), call("lookup", {"q": "b", "fail": 1}, id="c4")),
        ),
    ),
    Scenario(
        "fallback_and_budget",
        ((call("send", {"to": "bob"}, id="c1"),), (call("note", {"to": "ann"}, id="c2"),)),
        failing_turns=frozenset({0, 2}),
        surface="capped",
    ),
    Scenario(
        "budget_runs_out",
        tuple((call("lookup", {"q": f"q{n}"}, id=f"c{n}"),) for n in range(6)),
        surface="capped",
    ),
)


def _model(scenario: Scenario, name: str, *, primary: bool) -> ScriptedModel:
    # A pure function of the request: a restarted run is answered as the reference was.
    def script(request: ModelRequest) -> ModelReply | Exception:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if primary and turn in scenario.failing_turns:
            return ModelServerError(name, "overloaded", status_code=503)
        usage = Usage(input_tokens=200 + 20 * len(request.messages), output_tokens=40)
        if turn < len(scenario.turns):
            return reply(tool_calls=scenario.turns[turn], usage=usage)
        return reply("The final answer.", usage=usage)

    price = Price(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    return ScriptedModel(script, name=name, price=price)


def _agent(scenario: Scenario, world: World) -> Agent:
    return Agent(
        name=scenario.name,
        model=_model(scenario, "primary", primary=True),
        fallback_models=[_model(scenario, "backup", primary=False)],
        tools=world.tools(),
        max_turns=8,
        max_tokens=200,
        retry=RetryPolicy(max_attempts=2, base_delay=1.0),
    )


# -- one run under one fault ----------------------------------------------------------------------


@dataclass
class Case:
    """What one faulty run came to."""

    first: str  # how the faulty session ended: ended, typed_error, crash, untyped_error
    final_status: str
    lost: int
    duplicates: int
    differs: bool
    violations: list[str]
    error: str = ""


def _kind_of(exc: BaseException) -> str:
    """How an exception out of a faulty session counts (groups by what they hold)."""
    if isinstance(exc, BaseExceptionGroup):
        kinds = {_kind_of(e) for e in exc.exceptions}
        # ``except StoreUnavailableError`` does not catch one inside a group: not typed.
        return "crash" if "crash" in kinds else "untyped_error"
    if isinstance(exc, SimulatedCrash):
        return "crash"
    if isinstance(exc, EventStoreError | EngineError):
        return "typed_error"
    return "untyped_error"


def _session_engine(store: EventStore, agent: Agent, session: int) -> Engine:
    # Every session is a new process: its own ids, on a clock an hour past the one before, so
    # a side effect left in flight is past its time limit.
    clock = FakeClock(T0 + timedelta(hours=session))
    ids = SequentialIds(f"s{session}")
    return Engine(store, agents=[agent], clock=clock, ids=ids, budgets=BUDGETS)


async def _drive(engine: Engine, scenario: Scenario, agent: Agent) -> RunResult:
    """Start the run, or resume it if some of it is stored."""
    if await engine.store.stream_version("run-r1") == 0:
        return await engine.run(agent, "Find the facts.", run_id="r1", surface=scenario.surface)
    return await engine.resume("r1")


def _final(state: RunState) -> tuple[object, ...]:
    return (state.status, state.output, state.turn, state.messages, state.cost_usd)


async def _check(store: EventStore, agent: Agent, world: World, result: RunResult) -> list[str]:
    """The testing kit's invariants of the run; each violation's message."""
    found: list[str] = []
    checks = [
        check_state_matches_log(store, "r1", result=result),
        check_versions_gapless(store),
        check_tool_results_paired(store, "r1"),
        check_side_effects_once(store, executions=world.sent, agent=agent),
        check_spend_within_caps(store, BUDGETS),
    ]
    for check in checks:
        try:
            await check
        except AssertionError as exc:
            found.append(str(exc))
    async with Engine(store, budgets=BUDGETS) as engine:
        try:
            await check_replay_reproduces(engine, "r1", agent=agent)
        except AssertionError as exc:
            found.append(str(exc))
    return found


async def run_case(
    scenario: Scenario, path: Path, reference: tuple[object, ...] | None, **faulty: Any
) -> Case:
    """Run ``scenario`` on a fresh file with ``faulty`` (``fail=`` for a ``FaultyStore``, or
    ``max_page_count=`` for a quota), restart, and see what became of it."""
    world = World()
    agent = _agent(scenario, world)
    quota = faulty.pop("max_page_count", None)
    inner = SqliteEventStore(path, max_page_count=quota) if quota else SqliteEventStore(path)
    store = FaultyStore(inner, **faulty)
    first, error = "ended", ""
    try:
        async with store, _session_engine(store, agent, 0) as engine:
            await _drive(engine, scenario, agent)
    except BaseException as exc:  # the harness is the process: it sees what escaped
        first, error = _kind_of(exc), f"{type(exc).__name__}: {exc}"[:300]
        if first == "untyped_error" and not isinstance(exc, Exception | BaseExceptionGroup):
            raise
    async with SqliteEventStore(path) as healthy:
        lost = 0
        for sent in store.acknowledged:
            got = await healthy.get_event(sent.event_id)
            where = (sent.stream_id, sent.version, sent.position)
            lost += got is None or (got.stream_id, got.version, got.position) != where
        try:
            async with _session_engine(healthy, agent, 1) as engine:
                result = await _drive(engine, scenario, agent)
        except Exception as exc:
            return Case(first, "stuck", lost, 0, True, [f"restart raised {exc!r}"], error)
        state = fold_run(await healthy.read_stream("run-r1"))
        violations = await _check(healthy, agent, world, result)
    duplicates = sum(1 for n in world.sent.values() if n > 1)
    differs = reference is not None and _final(state) != reference
    return Case(first, state.status, lost, duplicates, differs, violations, error)


# -- the sweep ------------------------------------------------------------------------------------


def _fault(target: FaultTarget, at: int, times: int | None, error: str) -> Fault:
    if error == "unknown_outcome":
        return Fault("append", at=at, times=times, after_commit=True)
    raising = {"storage_full": StorageFullError, "crash": SimulatedCrash}.get(error)
    return Fault(target, at=at, times=times, error=raising)


async def _reference(scenario: Scenario, path: Path) -> tuple[tuple[object, ...], Counter[str]]:
    world = World()
    agent = _agent(scenario, world)
    async with FaultyStore(SqliteEventStore(path)) as store:
        async with _session_engine(store, agent, 0) as engine:
            await _drive(engine, scenario, agent)
        state = fold_run(await store.read_stream("run-r1"))
    return _final(state), store.counts


async def _pages(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("PRAGMA page_count").fetchone()[0]
    return count


@dataclass
class Tally:
    """The figures, added up over cases."""

    runs: int = 0
    first: Counter[str] = field(default_factory=Counter)
    silent_losses: int = 0
    stuck_runs: int = 0
    duplicate_side_effects: int = 0
    differs_from_reference: int = 0
    invariant_violations: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, label: str, case: Case) -> None:
        self.runs += 1
        self.first[case.first] += 1
        self.silent_losses += case.lost
        self.stuck_runs += case.final_status not in ENDED
        self.duplicate_side_effects += case.duplicates
        self.differs_from_reference += case.differs
        self.invariant_violations += len(case.violations)
        bad = case.lost or case.final_status not in ENDED or case.duplicates or case.differs
        if (bad or case.violations or case.first == "untyped_error") and len(self.problems) < 10:
            self.problems.append(f"{label}: {case}")


async def sweep(
    *, workdir: Path, scenarios: int = len(SCENARIOS), stride: int = 1, projection_stride: int = 1
) -> dict[str, Any]:
    """The first ``scenarios`` scenarios, each failed at every ``stride``-th operation (N = 1,
    1 + stride, ...) of the reference run, and checkpoint saves every ``projection_stride``-th."""
    tally, counter = Tally(), 0
    for scenario in SCENARIOS[:scenarios]:
        counter += 1
        first_of_scenario = counter
        reference, counts = await _reference(scenario, workdir / f"ref{counter}.db")
        targets: tuple[FaultTarget, ...] = ("append", "any")
        for target in targets:
            for at in range(1, counts[target] + 1, stride):
                for times in (1, None):
                    for error in ERRORS:
                        if error == "unknown_outcome" and target != "append":
                            continue
                        counter += 1
                        fault = _fault(target, at, times, error)
                        case = await run_case(
                            scenario, workdir / f"{counter}.db", reference, fail=fault
                        )
                        mode = "once" if times else "for good"
                        tally.add(f"{scenario.name} {target} #{at} {mode} {error}", case)
        empty = workdir / f"empty{counter}.db"
        async with SqliteEventStore(empty):
            pass
        # Every size between the empty file and the finished run: the disk fills up there.
        low, high = await _pages(empty), await _pages(workdir / f"ref{first_of_scenario}.db")
        for quota in range(low + 1, high):
            counter += 1
            path = workdir / f"{counter}.db"
            case = await run_case(scenario, path, reference, max_page_count=quota)
            tally.add(f"{scenario.name} quota {quota} pages", case)
    projection = await projection_sweep(workdir, stride=projection_stride)
    return {
        "runs": tally.runs,
        "first_session": dict(tally.first),
        "silent_losses": tally.silent_losses,
        "stuck_runs": tally.stuck_runs,
        "untyped_errors": tally.first["untyped_error"],
        "duplicate_side_effects": tally.duplicate_side_effects,
        "differs_from_reference": tally.differs_from_reference,
        "invariant_violations": tally.invariant_violations,
        "projection": projection,
        "problems": tally.problems,
    }


# -- projection updates ---------------------------------------------------------------------------


async def projection_sweep(workdir: Path, *, stride: int = 1) -> dict[str, int]:
    """A run index kept by a ``ProjectionRunner`` (saving every 7 events) whose Nth checkpoint
    save fails; a new runner on the healthy store must end with the rows of the log's fold."""
    source = workdir / "projection.db"
    for number, scenario in enumerate(SCENARIOS):
        world = World()
        agent = _agent(scenario, world)
        async with SqliteEventStore(source) as store:
            ids = SequentialIds(f"p{number}")
            async with Engine(store, clock=FakeClock(T0), ids=ids, budgets=BUDGETS) as engine:
                await engine.run(agent, "Find the facts.", run_id=f"p{number}", surface="free")
    async with SqliteEventStore(source) as store:
        expected = fold(RunIndex(), await read_everything(store))
        saves = -(-await store.head_position() // 7)
    cases = losses = typed = crashes = 0
    for at in range(1, saves + 1, stride):
        for times in (1, None):
            for error in ("unavailable", "crash"):
                cases += 1
                path = workdir / f"projection{cases}.db"
                path.write_bytes(source.read_bytes())
                fault = _fault("checkpoint", at, times, error)
                try:
                    faulty = FaultyStore(SqliteEventStore(path), fail=fault)
                    async with (
                        faulty,
                        ProjectionRunner(faulty, RunIndex(), page_size=7, save_every=7) as runner,
                    ):
                        await runner.catch_up()
                except SimulatedCrash:
                    crashes += 1
                except EventStoreError:
                    typed += 1
                healthy = SqliteEventStore(path)
                async with (
                    healthy,
                    ProjectionRunner(healthy, RunIndex(), page_size=7, save_every=7) as runner,
                ):
                    await runner.catch_up()
                    losses += dict(runner.rows) != expected
    return {"cases": cases, "typed_errors": typed, "crashes": crashes, "silent_losses": losses}


async def main(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if quick:
            figures = await sweep(workdir=Path(tmp), scenarios=1, stride=3, projection_stride=2)
        else:
            figures = await sweep(workdir=Path(tmp))
    return {
        "benchmark": "faults_storage",
        "backend": "sqlite",
        "quick": quick,
        **figures,
        "seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one scenario, every third N")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    result = anyio.run(main, options.quick)
    print(json.dumps(result))
    bad = ("silent_losses", "stuck_runs", "untyped_errors", "duplicate_side_effects")
    clean = all(result[k] == 0 for k in bad) and result["projection"]["silent_losses"] == 0
    sys.exit(0 if clean and not result["differs_from_reference"] else 1)
