"""The loop's invariants as checkers a user's tests can call on their own runs.

Each checker reads the log and raises ``AssertionError`` with a message that names the run, the
event or key, and what is wrong; each returns what it read, for further asserts. They hold for
every run the engine makes, whatever the models and tools did, so they are the properties to
check over random scripted runs (see ``agentledger.engine.testing.strategies``) and after
injected faults (``FaultyStore``). ``check_invariants`` runs them all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal

from agentledger.engine._agent import Agent
from agentledger.engine._engine import Engine
from agentledger.engine._result import RunResult
from agentledger.engine.loop._step import parent_cap
from agentledger.engine.models._model import ModelRequest
from agentledger.engine.policies._budget import Budgets
from agentledger.events import (
    BudgetReserved,
    EventStore,
    RecordedEvent,
    RunStarted,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    TurnStarted,
)
from agentledger.projections._messages import AssistantMessage, Message, ToolResultMessage
from agentledger.projections._run_state import RunState, fold_run
from agentledger.projections._spend import LedgerState, fold_ledger
from agentledger.projections._streams import DAY_PREFIX, KEY_PREFIX, RUN_PREFIX, run_stream
from agentledger.replay import ReplayReport

from ._doubles import ScriptedModel
from ._tripwire import UnexpectedCall, tripwired

_PAGE = 1000


async def read_everything(store: EventStore) -> list[RecordedEvent]:
    """Every event of ``store`` in global order (``read_all`` page by page)."""
    events: list[RecordedEvent] = []
    while True:
        page = await store.read_all(after=events[-1].position if events else 0, limit=_PAGE)
        events.extend(page)
        if len(page) < _PAGE:
            return events


async def _run_events(store: EventStore, run_id: str) -> list[RecordedEvent]:
    events = await store.read_stream(run_stream(run_id))
    assert events, f"run {run_id!r}: no events in the store"
    return events


def _fail(violations: Sequence[str]) -> None:
    assert not violations, "\n".join(violations)


# -- state, turns, versions ----------------------------------------------------------------------


async def check_state_matches_log(
    store: EventStore, run_id: str, *, result: RunResult | RunState | None = None
) -> RunState:
    """The run's state is the fold of its log: ``result`` (what ``run``/``resume`` returned, or a
    state the caller holds) equals what folding the run's stream gives. Returns that fold."""
    state = fold_run(await _run_events(store, run_id))
    if isinstance(result, RunState):
        differ = sorted(k for k in vars(state) if vars(state)[k] != vars(result).get(k))
        assert not differ, (
            f"run {run_id!r}: the state held differs from the fold of its log in {differ}"
        )
    elif result is not None:
        folded = RunResult.of(state)
        differ = sorted(
            f"{name} (returned {getattr(result, name)!r}, log says {getattr(folded, name)!r})"
            for name, spec in RunResult.__dataclass_fields__.items()
            if spec.compare and getattr(result, name) != getattr(folded, name)
        )
        assert not differ, f"run {run_id!r}: the result differs from the fold of its log: {differ}"
    return state


async def check_run_ended(store: EventStore, run_id: str, *, max_turns: int) -> RunState:
    """The run ended (completed, failed, cancelled, out of budget) or is paused for a person,
    within ``max_turns`` turns (the agent's ``max_turns``). Returns its state."""
    events = await _run_events(store, run_id)
    state = fold_run(events)
    turns = sum(1 for r in events if isinstance(r.event, TurnStarted))
    assert state.is_terminal or state.status == "paused", (
        f"run {run_id!r} is {state.status!r} after {turns} turn(s): neither ended nor paused"
    )
    assert turns <= max_turns, f"run {run_id!r} took {turns} turns; its limit is {max_turns}"
    return state


async def check_versions_gapless(store: EventStore) -> list[RecordedEvent]:
    """Global positions are 1, 2, 3...; each stream's versions are 1, 2, 3... in commit order;
    event ids are unique; and each stream reads back (``read_stream``) as ``read_all`` shows it.
    Returns every event."""
    events = await read_everything(store)
    violations: list[str] = []
    positions = [r.position for r in events]
    if positions != list(range(1, len(events) + 1)):
        gap = next(i for i, p in enumerate(positions, 1) if p != i)
        violations.append(f"global positions skip or repeat at {gap}: {positions[gap - 1]}")
    seen: set[str] = set()
    streams: dict[str, list[RecordedEvent]] = defaultdict(list)
    for recorded in events:
        if recorded.event_id in seen:
            violations.append(f"event id {recorded.event_id!r} is recorded twice")
        seen.add(recorded.event_id)
        streams[recorded.stream_id].append(recorded)
    for stream, in_order in streams.items():
        versions = [r.version for r in in_order]
        if versions != list(range(1, len(versions) + 1)):
            violations.append(f"stream {stream!r} has versions {versions}, not 1..{len(versions)}")
        read_back = await store.read_stream(stream)
        if [r.event_id for r in read_back] != [r.event_id for r in in_order]:
            violations.append(f"stream {stream!r} reads back other events than read_all shows")
    _fail(violations)
    return events


# -- the conversation ----------------------------------------------------------------------------


def _pairing(messages: Sequence[Message], where: str, *, complete: bool) -> list[str]:
    """What is wrong with the pairing of tool calls and results in ``messages``: a result
    without a call of its turn before it, a call left without result when the model was asked
    again, and (``complete``) a call without result at the end."""
    problems: list[str] = []
    open_calls: dict[str, str] = {}
    for index, message in enumerate(messages):
        if isinstance(message, AssistantMessage):
            if open_calls:
                problems.append(
                    f"{where}: tool call(s) {sorted(open_calls)} have no result before the "
                    f"assistant message at {index}"
                )
            open_calls = {c.id: c.name for c in message.tool_calls}
        elif isinstance(message, ToolResultMessage):
            name = open_calls.pop(message.tool_call_id, None)
            if name is None:
                problems.append(
                    f"{where}: the tool result at {index} ({message.tool_call_id!r}) has no "
                    "tool call of its turn before it"
                )
            elif name != message.tool_name:
                problems.append(
                    f"{where}: the result of {message.tool_call_id!r} names tool "
                    f"{message.tool_name!r}, its call {name!r}"
                )
    if complete and open_calls:
        problems.append(f"{where}: tool call(s) {sorted(open_calls)} have no result")
    return problems


async def check_tool_results_paired(
    store: EventStore, run_id: str, *, requests: Iterable[ModelRequest] = ()
) -> RunState:
    """Every tool result in the run's conversation follows its tool call, and no tool call of a
    turn that ended (the model was asked again, or the run completed) lacks its result. Each
    request in ``requests`` (what a model was sent, e.g. ``ScriptedModel.requests``) must pair
    every call with its result, as providers demand. Returns the run's state."""
    state = fold_run(await _run_events(store, run_id))
    where = f"run {run_id!r}"
    problems = _pairing(state.messages, where, complete=state.status == "completed")
    for number, request in enumerate(requests, 1):
        problems.extend(_pairing(request.messages, f"request {number}", complete=True))
    _fail(problems)
    return state


# -- side effects ----------------------------------------------------------------------------------


def _executions_allowed(
    key: str, events: Sequence[RecordedEvent], retention: Mapping[str, timedelta | None]
) -> tuple[int, list[str]]:
    """How many times the key's ledger let its side effect happen, and what is wrong with it.

    A new intent is allowed where the engine's key check says ``run``: the key's first, after a
    degraded outcome (every tier failed), or once the last intent is older than the tool's
    retention. One success per intent.
    """
    allowed = 0
    problems: list[str] = []
    last: ToolCallIntended | None = None
    outcome: object = None
    successes = 0
    for recorded in events:
        event = recorded.event
        if isinstance(event, ToolCallIntended):
            keep = retention.get(event.tool_name)
            expired = last is not None and keep is not None and event.at - last.at > keep
            if last is None or isinstance(outcome, ToolCallDegraded) or expired:
                allowed += 1
            else:
                problems.append(
                    f"key {key}: intended again at version {recorded.version} while the outcome "
                    f"of its intent by run {last.run_id!r} still answered for it"
                )
            last, outcome, successes = event, None, 0
        elif isinstance(event, ToolCallSucceeded):
            successes += 1
            outcome = event
            if successes > 1:
                problems.append(
                    f"key {key}: a second success for one intent at version {recorded.version}"
                )
        elif isinstance(event, ToolCallDegraded):
            outcome = event
    return allowed, problems


async def check_side_effects_once(
    store: EventStore,
    *,
    executions: Mapping[str, int] | None = None,
    agent: Agent | None = None,
) -> dict[str, int]:
    """No side effect happened twice for one idempotency key.

    From the log: each key's ledger holds one success per intent, and a new intent only where
    the previous one may be repeated (it degraded, or its tool's ``retention``, from ``agent``,
    ran out; without ``agent`` a key answers for ever). From the world: ``executions`` (key to
    count, as the user's fake service counts the effects it carried out, after its own dedupe by
    the key for ``retry_safe`` tools) never exceeds what the log allows, and no key was executed
    without an intent in the log. Returns how many executions the log allows per key.
    """
    retention: dict[str, timedelta | None] = {}
    if agent is not None:
        retention = {t.name: t.retention for t in agent.tools}
    ledgers: dict[str, list[RecordedEvent]] = defaultdict(list)
    for recorded in await read_everything(store):
        if recorded.stream_id.startswith(KEY_PREFIX):
            ledgers[recorded.stream_id.removeprefix(KEY_PREFIX)].append(recorded)
    allowed: dict[str, int] = {}
    problems: list[str] = []
    for key, events in ledgers.items():
        allowed[key], found = _executions_allowed(key, events, retention)
        problems.extend(found)
    for key, count in sorted((executions or {}).items()):
        if key not in allowed and count:
            problems.append(f"key {key}: executed {count} time(s) with no intent in the log")
        elif count > allowed.get(key, 0):
            problems.append(
                f"key {key}: the side effect happened {count} times; the log allows {allowed[key]}"
            )
    _fail(problems)
    return allowed


# -- money -----------------------------------------------------------------------------------------


def _walk_ledger(
    events: Iterable[RecordedEvent],
    cap_of: Mapping[str, Decimal | None],
    fixed_cap: Decimal | None,
    where: str,
    *,
    run: bool,
) -> tuple[LedgerState, list[str]]:
    """Fold a ledger stream event by event; after each reservation what is committed (settled
    plus reserved) is within the cap that reservation was checked against, and the settled
    amount is never above it, but for what overshoots (calls that cost more than reserved,
    ``BudgetOvershot``) account for. No reservation follows an overshoot that closed the
    ledger: a run's, always; a day's, when the reservation's surface has a day cap."""
    ledger = LedgerState()
    problems: list[str] = []
    caps: list[Decimal | None] = []
    for recorded in events:
        closed = ledger.closed
        ledger = fold_ledger([recorded], ledger)
        event = recorded.event
        if not isinstance(event, BudgetReserved):
            continue
        cap = fixed_cap if fixed_cap is not None else cap_of.get(event.surface)
        caps.append(cap)
        if closed and (run or cap is not None):
            problems.append(
                f"{where}: reservation at version {recorded.version} after the overshoot of "
                f"{ledger.closed_by} closed the ledger"
            )
        if cap is not None and ledger.committed > cap:
            problems.append(
                f"{where}: reservation at version {recorded.version} commits "
                f"{ledger.committed} USD, above the cap of {cap}"
            )
    highest = None if None in caps or not caps else max(c for c in caps if c is not None)
    if highest is not None and ledger.settled - ledger.overshot_usd > highest:
        problems.append(f"{where}: settled {ledger.settled} USD, above the cap of {highest}")
    return ledger, problems


async def check_spend_within_caps(store: EventStore, budgets: Budgets) -> None:
    """Settled spend is never above a cap: no run's ledger passes its surface's ``per_run_usd``,
    and no user's day ledger passes the ``per_user_day_usd`` of the surfaces it was spent
    through; after every reservation, settled plus reserved is within the cap it was checked
    against. A server that ignores the output limit can make a call cost more than reserved:
    that excess is allowed only when recorded as an overshoot, and nothing is reserved after it
    in the ledgers it closed."""
    streams: dict[str, list[RecordedEvent]] = defaultdict(list)
    for recorded in await read_everything(store):
        if recorded.stream_id.startswith((RUN_PREFIX, DAY_PREFIX)):
            streams[recorded.stream_id].append(recorded)
    day_caps = {s: p.per_user_day_usd for s, p in budgets.policies.items()}
    problems: list[str] = []
    for stream, events in streams.items():
        if stream.startswith(RUN_PREFIX):
            started = events[0].event
            if not isinstance(started, RunStarted):
                problems.append(f"{stream}: its first event is {started.type}, not run_started")
                continue
            if not any(isinstance(r.event, BudgetReserved) for r in events):
                continue  # nothing was reserved, so no policy was consulted
            cap = budgets.policy(started.surface).per_run_usd
            left = parent_cap(started)  # a sub-agent's run: what its parent left it
            if left is not None and (cap is None or left < cap):
                cap = left
            problems.extend(_walk_ledger(events, {}, cap, f"run ledger {stream}", run=True)[1])
        else:
            caps = dict(day_caps)
            for event in (r.event for r in events):
                if isinstance(event, BudgetReserved) and event.surface not in caps:
                    caps[event.surface] = budgets.policy(event.surface).per_user_day_usd
            problems.extend(_walk_ledger(events, caps, None, f"day ledger {stream}", run=False)[1])
    _fail(problems)


# -- replay ----------------------------------------------------------------------------------------


async def check_replay_reproduces(engine: Engine, run_id: str, *, agent: Agent) -> ReplayReport:
    """A replay of the run with ``agent`` reproduces its log with no divergence and the same
    settled spend, and calls no model and runs no tool (a copy of ``agent`` whose models and
    tools fail the check if touched is replayed). Returns the report."""
    guarded, touched = tripwired(agent)
    try:
        report = await engine.replay(run_id, agent=guarded)
    except BaseException as exc:
        if _holds(exc, UnexpectedCall):
            raise AssertionError(f"replay of run {run_id!r} {'; '.join(touched)}") from exc
        raise
    assert not touched, f"replay of run {run_id!r} {'; '.join(touched)}"
    assert report.matches, f"replay of run {run_id!r}: {report.divergence}"
    assert report.replayed_spend_usd == report.recorded_spend_usd, (
        f"replay of run {run_id!r} settled {report.replayed_spend_usd} USD, the recording "
        f"{report.recorded_spend_usd}"
    )
    return report


def _holds(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is, or is a group holding, a ``kind``."""
    if isinstance(exc, kind):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_holds(inner, kind) for inner in exc.exceptions)
    return False


# -- all of them -----------------------------------------------------------------------------------


async def check_invariants(
    engine: Engine,
    run_id: str,
    *,
    agent: Agent,
    result: RunResult | None = None,
    executions: Mapping[str, int] | None = None,
    replay: bool = True,
) -> RunState:
    """Every checker on one run of ``agent`` in ``engine``'s store: its result is the fold of its
    log, it ended or paused within ``agent.max_turns``, versions are gapless, tool calls and
    results pair up (in the run and in every request its ``ScriptedModel``s were sent), no side
    effect happened twice (``executions``: see ``check_side_effects_once``), spend kept the
    engine's budgets, and (``replay``) a replay reproduces it without calling anything.
    Returns the run's state."""
    store = engine.store
    state = await check_state_matches_log(store, run_id, result=result)
    await check_run_ended(store, run_id, max_turns=agent.max_turns)
    await check_versions_gapless(store)
    requests = [
        request
        for model in _models(agent)
        if isinstance(model, ScriptedModel)
        for request in model.requests
    ]
    await check_tool_results_paired(store, run_id, requests=requests)
    await check_side_effects_once(store, executions=executions, agent=agent)
    if engine.budgets is not None:
        await check_spend_within_caps(store, engine.budgets)
    if replay:
        await check_replay_reproduces(engine, run_id, agent=agent)
    return state


def _models(agent: Agent) -> list[object]:
    models: list[object] = [*agent.models]
    if agent.summary_model is not None:
        models.append(agent.summary_model)
    if agent.critic is not None and agent.critic.judge is not None:
        models.append(agent.critic.judge.model)
    # One model may serve several roles: its requests are checked once.
    return list({id(m): m for m in models}.values())
