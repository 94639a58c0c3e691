"""Conversations: runs that continue one another keep the earlier runs' tasks and answers in
view, the conversation is a projection of separate run streams, a race to continue one is
decided by the store, the history stays bounded under a memory policy, and a run of a
conversation replays and resumes from its own stream.

Every test runs over the real stores (memory, SQLite, PostgreSQL) and reads the log back.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import StoreFactory
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    ConversationBusyError,
    ConversationConflictError,
    ConversationNotFoundError,
    Engine,
    MemoryPolicy,
    ModelReply,
    ModelRequest,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.cli import main
from agentledger.engine.otel import build_spans, run_trace_id, span_id_of
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    ConversationContinued,
    EventStore,
    Exchange,
    MemoryEventStore,
    RecordedEvent,
    RunStarted,
    SqliteEventStore,
    StreamAppend,
)
from agentledger.projections import AssistantMessage, SystemMessage, ToolResultMessage, UserMessage
from agentledger.projections._conversation import (
    HISTORY_SUMMARY_HEADING,
    carry_history,
    history_tokens,
    summary_room,
)
from agentledger.projections._memory_view import count_tokens
from agentledger.replay import export_history, import_history

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SYSTEM = "You are a helpful assistant."


def answer_of(request: ModelRequest) -> ModelReply:
    """A model that answers the last user message: the same request, the same answer."""
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return reply(f"The lookup said: {json.loads(last.content)['result']}.")
    assert isinstance(last, UserMessage)
    if last.content.startswith("look up"):
        return reply(tool_calls=[call("lookup", {"what": last.content[8:]})])
    return reply(f"Answer to: {last.content}")


class LookupArgs(BaseModel):
    what: str


class LetterArgs(BaseModel):
    to: str


@tool
async def lookup(args: LookupArgs, ctx: ToolContext) -> str:
    """Look something up."""
    return f"facts about {args.what}"


def chat_agent(model: object, *, memory: MemoryPolicy | None = None) -> Agent:
    return Agent(
        name="chat",
        model=model,  # type: ignore[arg-type]
        system_prompt=SYSTEM,
        tools=[lookup],
        memory=memory,
    )


def system_of(agent: Agent) -> SystemMessage:
    return SystemMessage(content=agent.full_system_prompt())


def engine_for(store: EventStore, prefix: str = "id", agents: list[Agent] | None = None) -> Engine:
    return Engine(store, agents=agents or [], clock=FakeClock(T0), ids=SequentialIds(prefix))


async def run_log(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}")


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


def exchange_messages(*pairs: tuple[str, str]) -> list[object]:
    out: list[object] = []
    for task, answer in pairs:
        out += [UserMessage(content=task), AssistantMessage(content=answer)]
    return out


# -- three runs of one conversation -----------------------------------------------------------


async def test_the_third_run_is_sent_the_first_two_exchanges_and_the_projection_lists_all(
    store: EventStore,
) -> None:
    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model)
    async with engine_for(store) as engine:
        first = await engine.run(agent, "Hi, I am Ada.", run_id="r1", conversation_id="c1")
        second = await engine.run(agent, "What is 2+2?", run_id="r2", conversation_id="c1")
        # The run it follows is enough: the conversation is that run's.
        third = await engine.run(agent, "What is my name?", run_id="r3", follows="r2")
        convo = await engine.conversation("c1")

    assert [r.conversation_id for r in (first, second, third)] == ["c1"] * 3
    assert list(model.requests[-1].messages) == [
        system_of(agent),
        *exchange_messages(
            ("Hi, I am Ada.", "Answer to: Hi, I am Ada."),
            ("What is 2+2?", "Answer to: What is 2+2?"),
        ),
        UserMessage(content="What is my name?"),
    ]
    # The first run is sent no history; the second only the first exchange.
    assert len(model.requests[0].messages) == 2 and len(model.requests[1].messages) == 4

    assert convo.conversation_id == "c1" and convo.last_run_id == "r3"
    assert [(r.run_id, r.follows, r.status) for r in convo.runs] == [
        ("r1", None, "completed"),
        ("r2", "r1", "completed"),
        ("r3", "r2", "completed"),
    ]
    assert [r.output for r in convo.runs] == [
        "Answer to: Hi, I am Ada.",
        "Answer to: What is 2+2?",
        "Answer to: What is my name?",
    ]

    # Each run is its own stream; what it was sent is in it.
    log = await run_log(store, "r3")
    assert types(log)[:2] == ["run_started", "conversation_continued"]
    started, continued = log[0].event, log[1].event
    assert isinstance(started, RunStarted) and isinstance(continued, ConversationContinued)
    assert (started.conversation_id, started.follows) == ("c1", "r2")
    assert continued.follows == "r2" and continued.follows_version == len(
        await run_log(store, "r2")
    )
    assert [e.run_id for e in continued.exchanges] == ["r1", "r2"]
    assert types(await run_log(store, "r1"))[0] == "run_started"  # no history for the first
    joins = await store.read_stream("conversation-c1")
    assert [(r.version, r.event.run_id) for r in joins] == [(1, "r1"), (2, "r2"), (3, "r3")]


async def test_tool_turns_stay_in_their_run_only_task_and_answer_are_carried(
    store: EventStore,
) -> None:
    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model)
    async with engine_for(store) as engine:
        await engine.run(agent, "look up tides", run_id="r1", conversation_id="c1")
        await engine.run(agent, "Thanks!", run_id="r2", conversation_id="c1")
    sent = list(model.requests[-1].messages)
    assert sent == [
        system_of(agent),
        *exchange_messages(("look up tides", "The lookup said: facts about tides.")),
        UserMessage(content="Thanks!"),
    ]


# -- who may continue a conversation ----------------------------------------------------------


async def test_follows_alone_starts_a_conversation_named_after_the_run_and_bad_links_are_typed(
    store: EventStore,
) -> None:
    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model)
    async with engine_for(store) as engine:
        await engine.run(agent, "One", run_id="a")
        b = await engine.run(agent, "Two", run_id="b", follows="a")
        assert b.conversation_id == "a"
        assert [r.run_id for r in (await engine.conversation("a")).runs] == ["a", "b"]
        assert list(model.requests[-1].messages)[1:3] == exchange_messages(
            ("One", "Answer to: One")
        )

        with pytest.raises(ConversationConflictError, match="not the last run"):
            await engine.run(agent, "Branch", run_id="x1", follows="a")
        with pytest.raises(ConversationConflictError, match="belongs to conversation 'a'"):
            await engine.run(agent, "Elsewhere", run_id="x2", follows="b", conversation_id="z")
        with pytest.raises(ConversationNotFoundError, match="no run 'nope'"):
            await engine.run(agent, "Ghost", run_id="x3", follows="nope")
        with pytest.raises(ConversationNotFoundError, match="no conversation 'z'"):
            await engine.conversation("z")
        # A run of no conversation cannot be pulled into one of another name.
        await engine.run(agent, "Lone", run_id="lone")
        with pytest.raises(ConversationConflictError, match="belongs to conversation 'lone'"):
            await engine.run(agent, "Join", run_id="x4", follows="lone", conversation_id="q")

    for refused in ("x1", "x2", "x3", "x4"):
        assert await store.stream_version(f"run-{refused}") == 0
    assert await store.stream_version("conversation-a") == 2  # a, b
    assert await store.stream_version("conversation-z") == 0


@tool(confirm=True)
async def send_letter(args: LetterArgs, ctx: ToolContext) -> str:
    """Send a letter (a person must approve)."""
    return "sent"


async def test_a_conversation_whose_last_run_has_not_ended_is_busy(store: EventStore) -> None:
    def wants_letter(request: ModelRequest) -> ModelReply:
        if isinstance(request.messages[-1], ToolResultMessage):
            return reply("Sent.")
        return reply(tool_calls=[call("send_letter", {"to": "Bob"})])

    agent = Agent(name="post", model=ScriptedModel(wants_letter), tools=[send_letter])
    async with engine_for(store, agents=[agent]) as engine:
        paused = await engine.run(agent, "Write to Bob", run_id="r1", conversation_id="c1")
        assert paused.status == "paused"
        with pytest.raises(ConversationBusyError, match="'r1' of conversation 'c1' has not ended"):
            await engine.run(agent, "And to Eve", run_id="r2", conversation_id="c1")
        assert await store.stream_version("run-r2") == 0
        await engine.approve("r1", paused.pending_confirmations[0])
        assert (await engine.resume("r1")).status == "completed"
        done = await engine.run(agent, "Thanks", run_id="r2", conversation_id="c1")
    assert done.conversation_id == "c1"


class JoinGate:
    """Holds every append that joins a conversation until ``count`` of them are waiting: every
    racer has read the conversation (and its day ledger) before any of them writes."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.open = anyio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.count:
            self.open.set()
        await self.open.wait()


class GatedStore:
    """A store whose appends to a conversation's stream pass ``gate`` first."""

    def __init__(self, store: EventStore, gate: JoinGate) -> None:
        self._store = store
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        if any(a.stream_id.startswith("conversation-") for a in appends):
            await self._gate.arrive()
        return await self._store.append(*appends)


PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped"])
async def test_racing_continuations_one_is_recorded_the_other_gets_the_typed_error(
    store_factory: StoreFactory, capped: bool
) -> None:
    # Capped, the first write is the reservation, before the model is called, and it races
    # on the user's day ledger too.
    caps = Budgets({"default": BudgetPolicy(per_user_day_usd=Decimal(1))}) if capped else None
    model = ScriptedModel(answer_of, name="chat-model", price=PRICE)
    agent = chat_agent(model)
    async with (
        store_factory() as setup,
        Engine(setup, clock=FakeClock(T0), ids=SequentialIds("s"), budgets=caps) as first,
    ):
        await first.run(agent, "Hello", run_id="r1", conversation_id="c1")

    gate = JoinGate(2)
    outcomes: dict[str, str] = {}
    # Two engines on two store objects: two processes continuing one conversation at once.
    async with store_factory() as one, store_factory() as two:

        async def go(store: EventStore, run_id: str) -> None:
            gated: Any = GatedStore(store, gate)
            ids = SequentialIds(run_id)
            async with Engine(gated, clock=FakeClock(T0), ids=ids, budgets=caps) as engine:
                try:
                    await engine.run(agent, "Next", run_id=run_id, conversation_id="c1")
                    outcomes[run_id] = "recorded"
                except ConversationConflictError as exc:
                    assert "was continued by another run meanwhile" in str(exc)
                    outcomes[run_id] = "refused"

        async with anyio.create_task_group() as tg:
            tg.start_soon(go, one, "rA")
            tg.start_soon(go, two, "rB")

        assert sorted(outcomes.values()) == ["recorded", "refused"]
        assert gate.arrived >= 2  # both had read before either wrote
        # Uncapped, the loser's model call was made before its first write; capped, the race
        # was lost at the reservation, before any call.
        assert len(model.requests) == (2 if capped else 3)
        winner = next(r for r, o in outcomes.items() if o == "recorded")
        loser = next(r for r, o in outcomes.items() if o == "refused")
        # The loser wrote nothing at all (no reservation either); the conversation has the
        # winner as its next run.
        assert await one.stream_version(f"run-{loser}") == 0
        assert [r.event.run_id for r in await one.read_stream("conversation-c1")] == [
            "r1",
            winner,
        ]
        if capped:
            day = await one.read_stream(f"budget-anonymous-{T0.date().isoformat()}")
            assert {r.event.run_id for r in day} == {"r1", winner}
        async with engine_for(one, "t") as engine:
            convo = await engine.conversation("c1")
            assert [r.run_id for r in convo.runs] == ["r1", winner]
            assert convo.runs[1].follows == "r1"


# -- bounded memory across a long conversation ------------------------------------------------

LONG_POLICY = MemoryPolicy(
    max_tokens=700, compact_at=600, summary_max_tokens=80, keep_recent_exchanges=3
)


async def test_a_forty_run_conversation_stays_under_the_policy_ceiling(store: EventStore) -> None:
    def wordy(request: ModelRequest) -> ModelReply:
        last = request.messages[-1]
        assert isinstance(last, UserMessage)
        return reply(f"Reply to {last.content}: " + "lorem ipsum " * 12)

    model = ScriptedModel(wordy, name="chat-model")
    agent = chat_agent(model, memory=LONG_POLICY)
    async with engine_for(store) as engine:
        for n in range(1, 41):
            task = f"Question {n}: " + "tell me more " * 6
            result = await engine.run(agent, task, run_id=f"r{n:02}", conversation_id="c1")
            assert result.status == "completed"
        convo = await engine.conversation("c1")
    assert len(convo.runs) == 40

    estimator = LONG_POLICY.estimator
    sizes = [count_tokens(r.messages, estimator) for r in model.requests]
    assert max(sizes) <= LONG_POLICY.max_tokens
    # It grows for a few runs, then stays flat however long the conversation gets.
    assert sizes[0] < sizes[3] and max(sizes[10:]) == max(sizes[30:])

    histories = []
    for n in range(2, 41):
        continued = (await run_log(store, f"r{n:02}"))[1].event
        assert isinstance(continued, ConversationContinued)
        assert history_tokens(continued, estimator) <= LONG_POLICY.history_tokens
        assert len(continued.exchanges) <= LONG_POLICY.keep_recent_exchanges
        histories.append(continued)
    # Every earlier run's exchange went into the summary exactly once, in order, when it left
    # the verbatim window; the last run sees the newest exchanges verbatim, the rest summarised.
    moved = [r for c in histories for r in c.summarised_runs]
    last = histories[-1]
    assert moved + [e.run_id for e in last.exchanges] == [f"r{n:02}" for n in range(1, 40)]
    # Two exchanges fit beside the summary's room (three would pass history_tokens).
    assert [e.run_id for e in last.exchanges] == ["r38", "r39"]
    sent = model.requests[-1].messages
    assert isinstance(sent[0], SystemMessage) and HISTORY_SUMMARY_HEADING in sent[0].content
    assert last.summary and last.summary in sent[0].content
    assert "Question 39" in sent[-3].content and sent[-1].content.startswith("Question 40")


def test_carry_history_bounds_the_history_and_keeps_the_newest_verbatim() -> None:
    policy = MemoryPolicy(max_tokens=400, compact_at=300, summary_max_tokens=40)
    previous = None
    for n in range(60):
        big = "x" * (n * 7 % 300)
        exchange = Exchange(run_id=f"r{n}", task=f"task {n} {big}", answer=f"answer {n}")
        history = carry_history(previous, exchange, policy)
        previous = ConversationContinued(
            run_id=f"r{n + 1}",
            span_id=f"r{n + 1}",
            at=T0,
            conversation_id="c",
            follows=f"r{n}",
            summary=history.summary,
            exchanges=history.exchanges,
            summarised_runs=history.summarised_runs,
        )
        assert history_tokens(previous, policy.estimator) <= policy.history_tokens
        # The newest exchange is kept whenever it fits beside the summary's room.
        if history.exchanges:
            assert history.exchanges[-1].run_id == f"r{n}"
    # Small exchanges: the last keep_recent_exchanges stay verbatim, the rest are summarised.
    small = None
    for n in range(10):
        kept = carry_history(small, Exchange(run_id=f"s{n}", task="hi", answer="ok"), policy)
        small = previous.model_copy(
            update={
                "summary": kept.summary,
                "exchanges": kept.exchanges,
                "summarised_runs": kept.summarised_runs,
            }
        )
        assert [e.run_id for e in kept.exchanges] == [f"s{i}" for i in range(max(n - 3, 0), n + 1)]
        assert kept.summarised_runs == ((f"s{n - 4}",) if n >= 4 else ())
    assert small is not None and "User: hi\nAssistant: ok" in small.summary
    # Without a policy, nothing is dropped; but what is carried stays storable in one event.
    assert carry_history(previous, None, None).exchanges == previous.exchanges
    big = [Exchange(run_id=f"b{n}", task="t" * 100, answer="a" * 396) for n in range(5)]
    unbounded = previous.model_copy(update={"exchanges": tuple(big[:4]), "summary": ""})
    capped = carry_history(unbounded, big[4], None, max_bytes=1_500)
    assert [e.run_id for e in capped.exchanges] == ["b2", "b3", "b4"]  # 500 bytes each
    assert capped.summarised_runs == ("b0", "b1") and capped.summary == ""


# -- replay and resume ------------------------------------------------------------------------


async def test_a_run_of_a_conversation_replays_here_and_alone_on_another_machine(
    store: EventStore,
) -> None:
    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model, memory=LONG_POLICY)
    async with engine_for(store, agents=[agent]) as engine:
        await engine.run(agent, "look up tides", run_id="r1", conversation_id="c1")
        await engine.run(agent, "And the moon?", run_id="r2", conversation_id="c1")
        await engine.run(agent, "Summarise", run_id="r3", conversation_id="c1")
        calls = len(model.requests)
        report = await engine.replay("r3")
        assert report.matches, report.divergence
        assert len(model.requests) == calls  # no model was called
        assert report.replayed[1].event.type == "conversation_continued"

    # Only r3's own history moves: the earlier runs are not needed to replay it.
    file = io.BytesIO()
    await export_history(store, ["r3"], file)
    file.seek(0)
    async with MemoryEventStore() as elsewhere:
        await import_history(elsewhere, file)
        assert await elsewhere.stream_version("run-r1") == 0
        fresh = ScriptedModel(answer_of, name="chat-model")
        async with engine_for(elsewhere, "b", [chat_agent(fresh, memory=LONG_POLICY)]) as engine:
            report = await engine.replay("r3")
        assert report.matches, report.divergence
        assert fresh.requests == []

    # The whole conversation moves with its runs, and goes on in the other store.
    whole = io.BytesIO()
    await export_history(store, ["r1", "r2", "r3"], whole)
    whole.seek(0)
    async with MemoryEventStore() as elsewhere:
        await import_history(elsewhere, whole)
        going_on = ScriptedModel(answer_of, name="chat-model")
        async with engine_for(elsewhere, "c") as engine:
            moved = await engine.conversation("c1")
            assert [r.run_id for r in moved.runs] == ["r1", "r2", "r3"]
            await engine.run(chat_agent(going_on), "Bye", run_id="r4", conversation_id="c1")
        sent = going_on.requests[-1].messages
        assert [m.content for m in sent if isinstance(m, UserMessage)] == [
            "look up tides",
            "And the moon?",
            "Summarise",
            "Bye",
        ]


class StallingModel:
    """Answers like ``answer_of``, but call number ``stall_at`` never returns: the process dies
    while the model is thinking."""

    def __init__(self, stall_at: int) -> None:
        self.stall_at = stall_at
        self.price = Price.free()
        self.requests: list[ModelRequest] = []
        self.entered = anyio.Event()

    @property
    def name(self) -> str:
        return "chat-model"

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if len(self.requests) == self.stall_at:
            self.entered.set()
            await anyio.sleep_forever()
        return answer_of(request)


async def test_a_crashed_run_of_a_conversation_resumes_with_its_history(
    store: EventStore,
) -> None:
    async with engine_for(store, "a") as engine:
        agent = chat_agent(ScriptedModel(answer_of, name="chat-model"))
        await engine.run(agent, "Hi, I am Ada.", run_id="r1", conversation_id="c1")

    # The second run looks something up, then its process dies waiting for the model.
    stalling = StallingModel(stall_at=2)
    async with engine_for(store, "b") as engine:
        with anyio.CancelScope() as crash:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: engine.run(
                        chat_agent(stalling), "look up Ada", run_id="r2", conversation_id="c1"
                    )
                )
                await stalling.entered.wait()
                crash.cancel()
    cut_off = list(stalling.requests[-1].messages)
    assert cut_off[1:3] == exchange_messages(("Hi, I am Ada.", "Answer to: Hi, I am Ada."))
    assert "conversation_continued" in types(await run_log(store, "r2"))

    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model)
    async with engine_for(store, "c", [agent]) as engine:
        # It has not ended: the conversation waits for it.
        with pytest.raises(ConversationBusyError):
            await engine.run(agent, "Hello?", run_id="r3", conversation_id="c1")
        result = await engine.resume("r2")
        assert result.status == "completed"
        # The request the crash cut off is made again, history and all.
        assert list(model.requests[0].messages) == cut_off
        third = await engine.run(agent, "Who am I?", run_id="r3", conversation_id="c1")
        assert third.status == "completed"
        report = await engine.replay("r2")
        assert report.matches, report.divergence
    assert list(model.requests[-1].messages)[1:5] == exchange_messages(
        ("Hi, I am Ada.", "Answer to: Hi, I am Ada."),
        ("look up Ada", "The lookup said: facts about Ada."),
    )


# -- the command line -------------------------------------------------------------------------


def test_the_cli_lists_a_conversation_and_filters_runs_by_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.db"

    async def record() -> None:
        async with SqliteEventStore(db) as store, engine_for(store) as engine:
            agent = chat_agent(ScriptedModel(answer_of, name="chat-model"))
            await engine.run(agent, "Hi, I am Ada.", run_id="r1", conversation_id="c1")
            await engine.run(agent, "Something else", run_id="solo")
            await engine.run(agent, "What is my name?", run_id="r2", conversation_id="c1")

    anyio.run(record)
    assert main(["--db", str(db), "conversation", "c1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["conversation_id"] == "c1"
    assert [(r["run_id"], r["follows"], r["status"]) for r in shown["runs"]] == [
        ("r1", None, "completed"),
        ("r2", "r1", "completed"),
    ]
    assert shown["runs"][1]["output"] == "Answer to: What is my name?"

    assert main(["--db", str(db), "conversation", "c1"]) == 0
    table = capsys.readouterr().out
    assert "r1" in table and "What is my name?" in table and "solo" not in table

    assert main(["--db", str(db), "runs", "--conversation", "c1", "--json"]) == 0
    assert sorted(r["run_id"] for r in json.loads(capsys.readouterr().out)) == ["r1", "r2"]

    assert main(["--db", str(db), "show", "r2"]) == 0
    shown_run = capsys.readouterr().out
    assert "c1, after r1" in shown_run
    assert "conversation_continued after r1 (v" in shown_run
    assert "1 earlier exchanges" in shown_run

    assert main(["--db", str(db), "conversation", "nope"]) == 1
    assert "no conversation 'nope'" in capsys.readouterr().err
    assert main(["--db", str(db), "runs", "--conversation", "nope"]) == 1


async def test_a_fork_of_a_conversation_run_keeps_its_history_and_stream_shows_the_join(
    store: EventStore,
) -> None:
    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model)
    async with engine_for(store, agents=[agent]) as engine:
        await engine.run(agent, "Hi, I am Ada.", run_id="r1", conversation_id="c1")
        seen = [
            r.event.type
            async for r in engine.stream(agent, "Who am I?", run_id="r2", conversation_id="c1")
        ]
        assert seen[:2] == ["run_started", "conversation_continued"]
        sent = list(model.requests[-1].messages)

        fork = await engine.fork("r2", new_run_id="f1")
        assert (await engine.resume("f1")).status == "completed"
        # The fork is sent what the original was; it is not a run of the conversation.
        assert list(model.requests[-1].messages) == sent
        assert [r.run_id for r in (await engine.conversation("c1")).runs] == ["r1", "r2"]
    assert fork == "f1"
    assert [r.event.type for r in await run_log(store, "f1")][:2] == [
        "run_started",
        "conversation_continued",
    ]


async def test_otel_spans_name_the_conversation_and_link_the_run_followed() -> None:
    model = ScriptedModel(answer_of, name="chat-model")
    agent = chat_agent(model)
    async with MemoryEventStore() as store:
        async with engine_for(store) as engine:
            await engine.run(agent, "Hello", run_id="r1", conversation_id="c1")
            await engine.run(agent, "look up tides", run_id="r2", conversation_id="c1")
            await engine.run(agent, "Alone", run_id="solo")
        spans = build_spans(await run_log(store, "r2"))
        solo = build_spans(await run_log(store, "solo"))
    assert len(spans) > 2
    assert {s.attributes["gen_ai.conversation.id"] for s in spans} == {"c1"}
    run_span = next(s for s in spans if s.name == "invoke_agent chat")
    assert run_span.attributes["agentledger.run.follows"] == "r1"
    assert run_span.links == ((run_trace_id("r1"), span_id_of("r1", "r1")),)
    assert {s.attributes["gen_ai.conversation.id"] for s in solo} == {"solo"}


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 900), st.integers(0, 900), st.booleans()), max_size=25),
    compact_at=st.integers(300, 2_000),
    summary_max=st.integers(1, 200),
    keep=st.integers(0, 6),
)
def test_property_the_carried_history_stays_within_its_ceiling_and_loses_no_run(
    sizes: list[tuple[int, int, bool]], compact_at: int, summary_max: int, keep: int
) -> None:
    # summary_reserve_tokens must stay below compact_at for a valid policy
    summary_max = min(summary_max, compact_at - 30)
    policy = MemoryPolicy(
        max_tokens=compact_at,
        compact_at=compact_at,
        summary_max_tokens=summary_max,
        keep_recent_exchanges=keep,
    )
    previous: ConversationContinued | None = None
    answered: list[str] = []
    moved: list[str] = []
    for n, (task_len, answer_len, has_answer) in enumerate(sizes):
        exchange = None
        if has_answer:
            exchange = Exchange(run_id=f"r{n}", task="t" * task_len, answer="a" * answer_len)
            answered.append(f"r{n}")
        history = carry_history(previous, exchange, policy)
        previous = ConversationContinued(
            run_id=f"r{n + 1}",
            span_id=f"r{n + 1}",
            at=T0,
            conversation_id="c",
            follows=f"r{n}",
            summary=history.summary,
            exchanges=history.exchanges,
            summarised_runs=history.summarised_runs,
        )
        moved += history.summarised_runs
        assert history_tokens(previous, policy.estimator) <= max(
            policy.history_tokens, summary_room(policy)
        )
        assert len(history.exchanges) <= keep
        # Every answered run is either verbatim or was moved into the summary, in order.
        assert [*moved, *(e.run_id for e in history.exchanges)] == answered
