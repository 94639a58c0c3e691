"""Sub-agents: an agent used as a tool starts a child run, linked both ways, charged to the
parent's user day, bounded by what is left of the parent's run cap; crashes anywhere give one
child run; replay replays both with no call; cancelling the parent cancels the child; ``show``
on the parent lists the child. Over every store backend (``store``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Delta,
    Engine,
    ModelReply,
    ModelRequest,
    Price,
    SubAgentTool,
    subagent,
)
from agentledger.engine.cli import main
from agentledger.engine.testing import (
    FakeClock,
    FaultyStore,
    ScriptedModel,
    SequentialIds,
    SimulatedCrash,
    call,
    check_invariants,
    reply,
)
from agentledger.events import (
    EventStore,
    RecordedEvent,
    RunStarted,
    SqliteEventStore,
    StreamAppend,
    SubAgentEnded,
    SubAgentStarted,
    Usage,
)
from agentledger.projections import day_stream, fold_ledger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = date(2026, 3, 1)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
CHILD = "p.t1.c1"
"""The child run id of call ``c1`` in turn 1 of run ``p``."""


def _cost(output_tokens: int, input_tokens: int = 10) -> Decimal:
    return PRICE.cost(Usage(input_tokens=input_tokens, output_tokens=output_tokens))


def parent_model(*calls: str) -> ScriptedModel:
    """Asks for each sub-agent call in ``calls`` (one reply), then answers with what the tool
    results said; a function of the request, so a resumed run is answered as the first try."""

    def answer(request: ModelRequest) -> ModelReply:
        last = request.messages[-1]
        if last.role == "tool":
            results = [m.content for m in request.messages if m.role == "tool"]
            return reply("parent saw: " + " | ".join(results))
        return reply(
            tool_calls=[
                call(name, {"task": f"task {i}"}, id=f"c{i}") for i, name in enumerate(calls, 1)
            ]
        )

    return ScriptedModel(answer, name="boss-model", price=PRICE)


def child_model(output_tokens: int = 5, text: str = "child answer") -> ScriptedModel:
    usage = Usage(input_tokens=10, output_tokens=output_tokens)
    return ScriptedModel(lambda request: reply(text, usage=usage), name="helper-model", price=PRICE)


def agents(
    child: ScriptedModel, boss: ScriptedModel, *, child_max: int = 100, boss_max: int = 100
) -> tuple[Agent, Agent]:
    helper = Agent(name="helper", model=child, max_tokens=child_max)
    tool = subagent(helper, name="helper", description="Ask the helper agent.")
    return helper, Agent(name="boss", model=boss, tools=[tool], max_tokens=boss_max)


def budgets(per_run: str = "0.05", per_day: str = "1") -> Budgets:
    policy = BudgetPolicy(per_run_usd=Decimal(per_run), per_user_day_usd=Decimal(per_day))
    return Budgets({"free": policy})


def engine(store: EventStore, *, caps: Budgets | None = None, ids: str = "id") -> Engine:
    return Engine(store, clock=FakeClock(T0), ids=SequentialIds(ids), budgets=caps)


async def events_of(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}")


def types(recorded: Sequence[RecordedEvent]) -> list[str]:
    return [r.event.type for r in recorded]


def only(recorded: Sequence[RecordedEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [r.event for r in recorded if isinstance(r.event, kind)]


# -- the API ---------------------------------------------------------------------------------------


def test_subagent_is_a_tool_the_model_calls_with_a_task() -> None:
    helper = Agent(name="helper", model=child_model())
    tool = subagent(helper)
    assert isinstance(tool, SubAgentTool) and tool.agent is helper
    assert tool.name == "helper" and "helper" in tool.description
    assert tool.spec().parameters["required"] == ["task"]
    with pytest.raises(TypeError, match="takes an Agent"):
        subagent("helper")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tool name"):
        subagent(helper, name="no spaces allowed")


# -- parent -> child -> answer ---------------------------------------------------------------------


async def test_parent_child_answer_linked_both_ways_on_the_same_user_day(store: EventStore) -> None:
    child, boss = child_model(), parent_model("helper")
    helper, parent = agents(child, boss)
    async with engine(store, caps=budgets()) as e:
        result = await e.run(parent, "go", run_id="p", user_id="ann", surface="free")
    assert result.status == "completed"
    assert result.output is not None and "child answer" in result.output

    recorded = await events_of(store, "p")
    assert types(recorded) == [
        "run_started",
        "turn_started",
        "model_call_requested",
        "budget_reserved",
        "model_call_responded",
        "budget_settled",
        "sub_agent_started",
        "sub_agent_ended",
        "turn_started",
        "model_call_requested",
        "budget_reserved",
        "model_call_responded",
        "budget_settled",
        "run_completed",
    ]
    (started,) = only(recorded, SubAgentStarted)
    (ended,) = only(recorded, SubAgentEnded)
    assert (started.call_id, started.child_run_id, started.agent, started.task) == (
        "c1",
        CHILD,
        "helper",
        "task 1",
    )
    assert started.run_cap_usd == Decimal("0.05") - _cost(5)  # what the parent had left
    assert (ended.status, ended.output, ended.cost_usd) == ("completed", "child answer", _cost(5))

    kid = await events_of(store, CHILD)
    opening = kid[0].event
    assert isinstance(opening, RunStarted)
    assert (opening.parent_run_id, opening.parent_call_id) == ("p", "c1")
    assert (opening.user_id, opening.surface, opening.task) == ("ann", "free", "task 1")
    assert opening.settings == {"run_cap_usd": str(started.run_cap_usd)}
    assert types(kid)[-1] == "run_completed"
    # The model saw the child's answer, run id and cost as the tool's result.
    tool_result = json.loads(boss.requests[1].messages[-1].content)
    assert tool_result == {
        "status": "ok",
        "result": {"output": "child answer", "run_id": CHILD, "cost_usd": str(_cost(5))},
    }
    # Both runs charged the one day ledger of the user.
    ledger = fold_ledger(await store.read_stream(day_stream("ann", DAY)))
    assert ledger.settled == _cost(5) * 3 and not ledger.outstanding
    async with engine(store, caps=budgets()) as e:
        for run_id, agent in (("p", parent), (CHILD, helper)):
            await check_invariants(e, run_id, agent=agent)


async def test_streaming_the_parent_streams_the_child_too(store: EventStore) -> None:
    child = ScriptedModel(
        lambda request: reply("child answer"), name="helper-model", price=PRICE, chunk=4
    )
    _, parent = agents(child, parent_model("helper"))
    items = []
    async with engine(store) as e:
        async for item in e.stream(parent, "go", run_id="p", deltas=True):
            items.append(item)
        after = [r async for r in e.stream(parent, "again", run_id="p2")]
    child_events = [i for i in items if isinstance(i, RecordedEvent) and i.event.run_id == CHILD]
    assert types(child_events) == types(await events_of(store, CHILD))
    child_text = "".join(i.delta.text for i in items if isinstance(i, Delta) and i.run_id == CHILD)
    assert child_text == "child answer"
    # The child's events come between the parent's sub-agent start and end.
    order = [(i.event.run_id, i.event.type) for i in items if isinstance(i, RecordedEvent)]
    assert order.index(("p", "sub_agent_started")) < order.index((CHILD, "run_started"))
    assert order.index((CHILD, "run_completed")) < order.index(("p", "sub_agent_ended"))
    # Nothing is left forwarded: the next run's stream has only its own runs' events.
    assert {r.event.run_id for r in after} == {"p2", "p2.t1.c1"}


async def test_the_child_is_bounded_by_what_the_parent_has_left(store: EventStore) -> None:
    # The child's worst case (8000 output tokens, $0.064) is over the $0.05 - $0.00006 left.
    child, boss = child_model(), parent_model("helper")
    _, parent = agents(child, boss, child_max=8000)
    async with engine(store, caps=budgets("0.05")) as e:
        result = await e.run(parent, "go", run_id="p", user_id="ann", surface="free")
    assert result.status == "completed"  # the parent's own small call still fits
    assert child.requests == []  # refused before it was sent

    kid = await events_of(store, CHILD)
    assert types(kid)[-1] == "budget_exceeded"
    exceeded = kid[-1].event
    assert exceeded.type == "budget_exceeded"
    assert (exceeded.scope, exceeded.cap_usd) == ("run", Decimal("0.05") - _cost(5))
    (ended,) = only(await events_of(store, "p"), SubAgentEnded)
    assert (ended.status, ended.cost_usd) == ("budget_exceeded", Decimal(0))
    tool_result = json.loads(boss.requests[1].messages[-1].content)
    assert tool_result["status"] == "error"
    assert tool_result["error_type"] == "sub_agent_budget_exceeded"
    assert tool_result["run_id"] == CHILD


async def test_the_childs_spend_counts_in_the_parents_run_cap(store: EventStore) -> None:
    # Parent: $0.00006 spent, then the child spends $0.03202; the parent's next worst case
    # ($0.024 of output alone) fits under $0.05 only if the child's spend is forgotten.
    child, boss = child_model(output_tokens=4000), parent_model("helper")
    _, parent = agents(child, boss, child_max=4000, boss_max=3000)
    async with engine(store, caps=budgets("0.05")) as e:
        result = await e.run(parent, "go", run_id="p", user_id="ann", surface="free")
    assert result.status == "budget_exceeded"
    recorded = await events_of(store, "p")
    exceeded = recorded[-1].event
    assert exceeded.type == "budget_exceeded" and exceeded.scope == "run"
    assert exceeded.committed_usd == _cost(5) + _cost(4000)
    assert exceeded.committed_usd + exceeded.requested_usd > Decimal("0.05")
    assert _cost(5) + exceeded.requested_usd <= Decimal("0.05")  # it was the child's spend


async def test_sub_agent_calls_of_one_reply_run_one_at_a_time_within_the_cap(
    store: EventStore,
) -> None:
    child, boss = child_model(output_tokens=2000), parent_model(*["helper"] * 4)
    _, parent = agents(child, boss, child_max=2000)
    async with engine(store, caps=budgets("0.05")) as e:
        await e.run(parent, "go", run_id="p", user_id="ann", surface="free")
    recorded = await events_of(store, "p")
    started = only(recorded, SubAgentStarted)
    ended = only(recorded, SubAgentEnded)
    assert [s.call_id for s in started] == ["c1", "c2", "c3", "c4"]
    # Each child starts after the one before it ended, with what that one left.
    assert types(recorded)[6:14] == ["sub_agent_started", "sub_agent_ended"] * 4
    for before, after, done in zip(started, started[1:], ended, strict=False):
        assert before.run_cap_usd is not None
        assert after.run_cap_usd == max(before.run_cap_usd - done.cost_usd, Decimal(0))
    statuses = [s.status for s in ended]
    assert statuses[:3] == ["completed"] * 3 and statuses[3] == "budget_exceeded"
    children = sum((s.cost_usd for s in ended), Decimal(0))
    ledger = fold_ledger(await store.read_stream(day_stream("ann", DAY)))
    assert ledger.settled <= Decimal("0.05")  # the parent and its children together
    assert children == 3 * _cost(2000)


# -- crashes and resume --------------------------------------------------------------------------


class CrashOn(FaultyStore):
    """Dies (``SimulatedCrash``) at the first append ``when`` picks, before or after it commits."""

    def __init__(
        self, store: EventStore, when: Callable[[Sequence[StreamAppend]], bool], *, after: bool
    ) -> None:
        super().__init__(store)
        self._when = when
        self._after = after
        self.crashed = False

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        hit = not self.crashed and self._when(appends)
        if hit and not self._after:
            self.crashed = True
            raise SimulatedCrash("before the append")
        recorded = await super().append(*appends)
        if hit:
            self.crashed = True
            raise SimulatedCrash("after the append")
        return recorded


def _child_writes(nth: int) -> Callable[[Sequence[StreamAppend]], bool]:
    seen = 0

    def when(appends: Sequence[StreamAppend]) -> bool:
        nonlocal seen
        if any(a.stream_id == f"run-{CHILD}" for a in appends):
            seen += 1
            return seen == nth
        return False

    return when


def _parent_records_the_end(appends: Sequence[StreamAppend]) -> bool:
    return any(
        a.stream_id == "run-p" and any(n.event.type == "sub_agent_ended" for n in a.events)
        for a in appends
    )


CRASHES: dict[str, Callable[[], Callable[[Sequence[StreamAppend]], bool]]] = {
    "before the child's first write": lambda: _child_writes(1),
    "in the middle of the child": lambda: _child_writes(2),
    "after the child ended, before the parent recorded it": lambda: _parent_records_the_end,
}
"""Where to crash (a fresh predicate per test: the child's writes are counted)."""


@pytest.mark.parametrize("where", list(CRASHES))
async def test_a_crash_anywhere_gives_one_child_run(store: EventStore, where: str) -> None:
    child, boss = child_model(), parent_model("helper")
    helper, parent = agents(child, boss)
    crashing = CrashOn(store, CRASHES[where](), after=False)
    async with engine(crashing, caps=budgets()) as first:
        with pytest.raises(SimulatedCrash):
            await first.run(parent, "go", run_id="p", user_id="ann", surface="free")
    assert crashing.crashed
    async with engine(store, caps=budgets(), ids="second") as second:
        second.register(helper)
        result = await second.resume("p", agent=parent)
    assert result.status == "completed"
    assert result.output is not None and "child answer" in result.output

    recorded = await events_of(store, "p")
    assert len(only(recorded, SubAgentStarted)) == 1 and len(only(recorded, SubAgentEnded)) == 1
    kid = await events_of(store, CHILD)
    assert types(kid).count("run_started") == 1 and types(kid)[-1] == "run_completed"
    assert [r.version for r in kid] == list(range(1, len(kid) + 1))
    # No child run under any other id.
    everything = await store.read_all(limit=10_000)
    starts = [r.stream_id for r in everything if r.type == "run_started"]
    assert sorted(starts) == sorted(["run-p", f"run-{CHILD}"])
    if where.startswith("after the child ended"):
        assert len(child.requests) == 1  # the ended child was not run again

    # The replay of the resumed parent answers the call from its log and replays the child
    # from its own, with no call to any model.
    calls = (len(boss.requests), len(child.requests))
    async with engine(store, caps=budgets()) as e:
        replayed = await e.replay("p", agent=parent)
    assert replayed.matches, replayed.divergence
    assert [c.run_id for c in replayed.children] == [CHILD]
    assert replayed.children[0].matches, replayed.children[0].divergence
    assert (len(boss.requests), len(child.requests)) == calls


async def test_replay_of_both_runs_reports_a_changed_child(store: EventStore) -> None:
    child, boss = child_model(), parent_model("helper")
    _, parent = agents(child, boss)
    async with engine(store) as e:
        await e.run(parent, "go", run_id="p")
        calls = (len(boss.requests), len(child.requests))
        same = await e.replay("p")
        assert same.matches and len(same.children) == 1 and same.children[0].matches
        changed_helper = Agent(name="helper", model=child, max_tokens=100, system_prompt="Terse.")
        # The same parent (its requests replay), whose sub-agent has another prompt.
        tool = subagent(changed_helper, name="helper", description="Ask the helper agent.")
        changed = dataclasses.replace(parent, tools=[tool])
        report = await e.replay("p", agent=changed)
    assert report.divergence is None  # the parent's own log replays: the call's answer is taped
    assert not report.children[0].matches and not report.matches
    assert "system_prompt" in report.children[0].divergence.reason  # type: ignore[union-attr]
    assert (len(boss.requests), len(child.requests)) == calls


# -- cancellation --------------------------------------------------------------------------------


class Stuck:
    """A model that never answers (until cancelled); ``entered`` is set when it is asked."""

    name = "stuck"
    price = Price.free()

    def __init__(self) -> None:
        self.entered = anyio.Event()

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_cancelling_the_parent_cancels_the_child(store: EventStore) -> None:
    stuck = Stuck()
    helper = Agent(name="helper", model=stuck)
    parent = Agent(name="boss", model=parent_model("helper"), tools=[subagent(helper)])
    results = []
    async with engine(store) as e:

        async def run() -> None:
            results.append(await e.run(parent, "go", run_id="p"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(5):
                await stuck.entered.wait()
            await e.cancel("p", reason="the user left")
    assert results[0].status == "cancelled"
    kid = await events_of(store, CHILD)
    assert types(kid)[-1] == "run_cancelled"
    assert kid[-1].event.reason == "its parent run p was cancelled"  # type: ignore[union-attr]
    recorded = await events_of(store, "p")
    assert types(recorded)[-2:] == ["tool_outcome_unknown", "run_cancelled"]
    assert recorded[-1].event.reason == "the user left"  # type: ignore[union-attr]
    assert kid[-1].position < recorded[-1].position  # the child stopped first


async def test_cancelling_a_stopped_parent_cancels_its_child_in_the_log(store: EventStore) -> None:
    child, boss = child_model(), parent_model("helper")
    _, parent = agents(child, boss)
    crashing = CrashOn(store, _child_writes(2), after=False)
    async with engine(crashing, caps=budgets()) as first:
        with pytest.raises(SimulatedCrash):
            await first.run(parent, "go", run_id="p", user_id="ann", surface="free")
    async with engine(store, caps=budgets(), ids="second") as second:
        await second.cancel("p")
        assert (await second.result(CHILD)).status == "cancelled"
        assert (await second.result("p")).status == "cancelled"
    # The child's open reservation went back to the user's day.
    ledger = fold_ledger(await store.read_stream(day_stream("ann", DAY)))
    assert not ledger.outstanding and ledger.settled == _cost(5)


# -- a child that waits for a person -------------------------------------------------------------


async def test_a_child_waiting_for_a_person_pauses_the_parent(store: EventStore) -> None:
    from pydantic import BaseModel

    from agentledger.engine import ToolContext, tool

    class Note(BaseModel):
        text: str

    @tool(confirm=True)
    async def send(args: Note, ctx: ToolContext) -> str:
        """Send a note."""
        return "sent"

    def child_answer(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("note sent")
        return reply(tool_calls=[call("send", {"text": "hi"}, id="s1")])

    helper = Agent(name="helper", model=ScriptedModel(child_answer), tools=[send])
    parent = Agent(name="boss", model=parent_model("helper"), tools=[subagent(helper)])
    async with engine(store) as e:
        first = await e.run(parent, "go", run_id="p")
        assert first.status == "paused"
        assert (await e.result(CHILD)).pending_confirmations == ("s1",)
        await e.approve(CHILD, "s1", by="ann")
        done = await e.resume("p")
        assert done.status == "completed" and done.output is not None
        assert "note sent" in done.output
        report = await e.replay("p")
    assert report.matches, report.divergence
    assert report.children[0].matches, report.children[0].divergence


# -- the command line ----------------------------------------------------------------------------


async def _record_parent(db: Path) -> None:
    child, boss = child_model(), parent_model("helper")
    _, parent = agents(child, boss)
    async with SqliteEventStore(db) as store, engine(store, caps=budgets()) as e:
        await e.run(parent, "go", run_id="p", user_id="ann", surface="free")


def test_show_lists_the_child_at_its_call_and_runs_marks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.db"
    anyio.run(_record_parent, db)
    assert main(["show", "p", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    label = next(line for line in out.splitlines() if "tool helper" in line)
    assert f"sub-agent run {CHILD} completed, ${_cost(5)}" in label
    assert f"sub_agent_ended child run {CHILD} completed, ${_cost(5)}: 'child answer'" in out

    assert main(["show", CHILD, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "parent" in out and "p (a sub-agent run)" in out

    assert main(["runs", "--db", str(db), "--json"]) == 0
    rows = {row["run_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[CHILD]["parent_run_id"] == "p" and rows["p"]["parent_run_id"] is None
    assert main(["runs", "--db", str(db)]) == 0
    assert "(sub-agent of p)" in capsys.readouterr().out


# -- ids, bad calls, nesting -------------------------------------------------------------------


def test_child_run_ids_are_readable_or_a_digest() -> None:
    from agentledger.engine.loop._subagents import child_run_id

    assert child_run_id("p", 2, "call_7") == "p.t2.call_7"
    long = child_run_id("r" * 190, 1, "c" * 40)
    assert long.startswith("sub-") and len(long) == 44
    assert long == child_run_id("r" * 190, 1, "c" * 40)  # the same in every session
    assert child_run_id("p", 1, "a\nb") != child_run_id("p", 1, "a b")
    assert child_run_id("p", 1, "a\nb").isprintable()


async def test_a_call_without_a_task_is_rejected_and_no_child_starts(store: EventStore) -> None:
    def answer(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("gave up")
        return reply(tool_calls=[call("helper", {"question": "?"}, id="c1")])

    helper = Agent(name="helper", model=child_model())
    parent = Agent(name="boss", model=ScriptedModel(answer), tools=[subagent(helper)])
    async with engine(store) as e:
        result = await e.run(parent, "go", run_id="p")
    assert result.output == "gave up"
    recorded = await events_of(store, "p")
    assert "tool_arguments_rejected" in types(recorded)
    assert not only(recorded, SubAgentStarted)
    assert await store.stream_version(f"run-{CHILD}") == 0


async def test_a_sub_agent_of_a_sub_agent_gets_what_its_parent_has_left(store: EventStore) -> None:
    leaf_model = child_model(output_tokens=50, text="leaf answer")
    leaf = Agent(name="leaf", model=leaf_model, max_tokens=100)

    def middle_answer(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("middle saw: " + request.messages[-1].content)
        return reply(tool_calls=[call("leaf", {"task": "dig"}, id="d1")])

    middle = Agent(
        name="middle",
        model=ScriptedModel(middle_answer, name="middle-model", price=PRICE),
        tools=[subagent(leaf)],
        max_tokens=100,
    )
    boss = parent_model("middle")
    parent = Agent(name="boss", model=boss, tools=[subagent(middle)], max_tokens=100)
    async with engine(store, caps=budgets("0.05")) as e:
        result = await e.run(parent, "go", run_id="p", user_id="ann", surface="free")
        assert result.status == "completed"
        assert result.output is not None and "leaf answer" in result.output
        report = await e.replay("p")
    assert report.matches and report.children[0].children[0].matches
    assert [c.run_id for c in report.children[0].children] == ["p.t1.c1.t1.d1"]

    (to_middle,) = only(await events_of(store, "p"), SubAgentStarted)
    (from_middle,) = only(await events_of(store, "p"), SubAgentEnded)
    (to_leaf,) = only(await events_of(store, CHILD), SubAgentStarted)
    assert to_middle.run_cap_usd == Decimal("0.05") - _cost(5)
    assert to_leaf.run_cap_usd == to_middle.run_cap_usd - _cost(5)  # the middle's own call
    # The middle's cost is its tree's: its two calls and the leaf's.
    assert from_middle.cost_usd == 2 * _cost(5) + _cost(50)
    ledger = fold_ledger(await store.read_stream(day_stream("ann", DAY)))
    assert ledger.settled == 2 * _cost(5) + from_middle.cost_usd
