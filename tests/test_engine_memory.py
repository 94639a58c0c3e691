"""Bounded memory (pattern 2) in real runs: compaction by summary or by truncation, what the model
is sent afterwards, a context that cannot fit, resume, and a property over random runs.

The agent models here are providers whose tokeniser *is* the policy's estimator: they report the
estimator's count of what they were sent (in the property, sometimes plus an overhead, as for tool
definitions, or nothing at all), so the engine's counts agree with the estimator's or err on the
safe side. Every assertion reads the log back from the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from decimal import Decimal
from typing import Any

import anyio
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    MemoryPolicy,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    RetryPolicy,
    ToolContext,
    tool,
)
from agentledger.engine.loop._requests import SUMMARY_INSTRUCTIONS
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    BudgetReserved,
    BudgetSettled,
    EventStore,
    MemoryCompacted,
    MemoryEventStore,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunCompleted,
    RunFailed,
    ToolCall,
    ToolCallSucceeded,
    TurnStarted,
    Usage,
)
from agentledger.projections import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
    fold_run,
    memory_view,
)
from agentledger.projections._memory_view import (
    SUMMARY_HEADING,
    Estimator,
    clip_summary,
    compacted_content,
    count_tokens,
    estimate_tokens,
    truncated_content,
)
from agentledger.projections._tool_results import tool_result_ok

TASK = "Read pages 10 and 20 and tell me what they say."
SUMMARY = "Page 10 holds 4000 characters of lorem ipsum; nothing else of note."
POLICY = MemoryPolicy(
    max_tokens=3_000, compact_at=2_000, keep_recent_turns=1, summary_max_tokens=100
)


# -- the tool and the models -------------------------------------------------------------------


class FetchArgs(BaseModel):
    page: int
    size: int


def body(page: int, size: int) -> str:
    """``size`` characters of page ``page``, with quotes, a backslash and a non-ASCII dash."""
    unit = f'page {page}: lorem "ipsum" dolor \u2013 sit\\amet\n'
    return (unit * (size // len(unit) + 1))[:size]


@tool(name="fetch")
async def fetch(args: FetchArgs, ctx: ToolContext) -> dict[str, object]:
    """Fetch a page; its text is ``size`` characters long."""
    return {"page": args.page, "body": body(args.page, args.size)}


def fetched(call_: ToolCall) -> dict[str, object]:
    """What ``fetch`` returns for a call (to check the log against)."""
    args = json.loads(call_.arguments)
    return {"page": args["page"], "body": body(args["page"], args["size"])}


class Planner:
    """An agent model's script: in turn ``k`` it fetches one page per size of ``plan[k - 1]``
    (in parallel), then it answers ``"Done."``. It reports the estimator's count of what it was
    sent plus ``overhead`` as its input tokens (``None``: it reports none)."""

    def __init__(
        self, plan: Sequence[Sequence[int]], estimator: Estimator, overhead: int | None = 0
    ) -> None:
        self.plan = plan
        self.estimator = estimator
        self.overhead = overhead

    def __call__(self, request: ModelRequest) -> ModelReply:
        turn = 1 + sum(1 for m in request.messages if isinstance(m, AssistantMessage))
        reported = (
            0
            if self.overhead is None
            else count_tokens(request.messages, self.estimator) + self.overhead
        )
        usage = Usage(input_tokens=reported, output_tokens=7)
        if turn > len(self.plan):
            return reply("Done.", usage=usage)
        calls = [
            call("fetch", {"page": 10 * turn + i, "size": size}, id=f"c{turn}_{i}")
            for i, size in enumerate(self.plan[turn - 1])
        ]
        return reply(tool_calls=calls, usage=usage)


class StallingModel:
    """Answers like ``script``, but call number ``stall_at`` never returns: the process dies
    while the model is thinking."""

    def __init__(self, script: Callable[[ModelRequest], ModelReply], stall_at: int) -> None:
        self.script = script
        self.stall_at = stall_at
        self.price = Price.free()
        self.requests: list[ModelRequest] = []
        self.entered = anyio.Event()

    @property
    def name(self) -> str:
        return "agent-model"

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if len(self.requests) == self.stall_at:
            self.entered.set()
            await anyio.sleep_forever()
        return self.script(request)


class Summariser:
    """A summary model that answers by ``kinds`` in order (then ``ok``): ``ok`` a short summary,
    ``long`` one far above ``summary_max_tokens``, ``empty`` nothing, ``error`` a 503."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = list(kinds)
        self.price = Price.free()
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return "summariser"

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        kind = self.kinds.pop(0) if self.kinds else "ok"
        if kind == "error":
            raise ModelServerError(self.name, "overloaded", status_code=503)
        text = {"ok": "Pages were fetched.", "long": "word " * 4_000, "empty": ""}[kind]
        return reply(text, usage=Usage(input_tokens=100, output_tokens=20))


def memory_agent(
    model: Any, summariser: Any, policy: MemoryPolicy = POLICY, *, max_turns: int = 10
) -> Agent:
    return Agent(
        name="reader",
        model=model,
        summary_model=summariser,
        tools=[fetch],
        memory=policy,
        max_turns=max_turns,
        retry=RetryPolicy(max_attempts=3, base_delay=1.0),
    )


def engine_for(store: EventStore, prefix: str = "id", agents: Sequence[Agent] = ()) -> Engine:
    return Engine(store, clock=FakeClock(), ids=SequentialIds(prefix), agents=agents)


# -- reading the log ---------------------------------------------------------------------------


async def run_log(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}")


def types(log: Sequence[RecordedEvent]) -> list[str]:
    """Event types, model events with their purpose (``model_call_requested:summary``)."""
    named = []
    for r in log:
        e = r.event
        if isinstance(e, ModelCallRequested | ModelCallResponded):
            named.append(f"{e.type}:{e.purpose}")
        else:
            named.append(e.type)
    return named


def answers(log: Sequence[RecordedEvent]) -> list[AssistantMessage]:
    """The agent's replies as recorded: the assistant messages every request must repeat."""
    return [
        AssistantMessage(content=r.event.text, tool_calls=r.event.tool_calls)
        for r in log
        if isinstance(r.event, ModelCallResponded) and r.event.purpose == "agent"
    ]


def original(log: Sequence[RecordedEvent], call_id: str) -> str:
    """The tool result message content of ``call_id`` as the log records it."""
    (result,) = [
        r.event.result
        for r in log
        if isinstance(r.event, ToolCallSucceeded) and r.event.call_id == call_id
    ]
    return tool_result_ok(result)


def assert_paired(messages: Sequence[Message]) -> None:
    """Every tool call has exactly one result right after its assistant message, and every
    result answers a call of the assistant message before it."""
    open_calls: list[str] = []
    for message in messages:
        if isinstance(message, ToolResultMessage):
            assert message.tool_call_id in open_calls, f"orphan result {message.tool_call_id}"
            open_calls.remove(message.tool_call_id)
            continue
        assert not open_calls, f"calls without a result: {open_calls}"
        if isinstance(message, AssistantMessage):
            open_calls = [c.id for c in message.tool_calls]
    assert not open_calls, f"calls without a result: {open_calls}"


def assert_raw_log_untouched(log: Sequence[RecordedEvent]) -> None:
    """Every tool result in the log is what the tool returned; compactions name earlier tool
    results, each at most once."""
    calls = {c.id: c for a in answers(log) for c in a.tool_calls}
    by_version = {r.version: r for r in log}
    replaced: set[int] = set()
    for r in log:
        if isinstance(r.event, ToolCallSucceeded):
            assert r.event.result == fetched(calls[r.event.call_id])
        if isinstance(r.event, MemoryCompacted):
            for version in r.event.replaced_versions:
                assert version < r.version
                assert isinstance(by_version[version].event, ToolCallSucceeded)
                assert version not in replaced
                replaced.add(version)


def assert_recent_turns_verbatim(
    sent: Sequence[Message], log: Sequence[RecordedEvent], keep_recent_turns: int
) -> None:
    """The tool results of the last ``keep_recent_turns`` turns are sent as recorded."""
    turns = [i for i, m in enumerate(sent) if isinstance(m, AssistantMessage)]
    if keep_recent_turns == 0 or not turns:
        return
    start = turns[-keep_recent_turns] if len(turns) >= keep_recent_turns else 0
    for message in sent[start:]:
        if isinstance(message, ToolResultMessage):
            assert message.content == original(log, message.tool_call_id)


def assert_requests_follow_the_log(
    requests: Sequence[ModelRequest], log: Sequence[RecordedEvent], policy: MemoryPolicy
) -> None:
    """What the agent model got is the memory view of the log folded up to each request: within
    the ceiling, no orphan, every assistant message as the model wrote it."""
    asked = [
        i
        for i, r in enumerate(log)
        if isinstance(r.event, ModelCallRequested) and r.event.purpose == "agent"
    ]
    replies = answers(log)
    assert len(asked) == len(requests)
    for k, (request, at) in enumerate(zip(requests, asked, strict=True)):
        sent = list(request.messages)
        requested = log[at].event
        assert isinstance(requested, ModelCallRequested)
        assert requested.message_count == len(sent)
        assert count_tokens(sent, policy.estimator) <= policy.max_tokens
        assert_paired(sent)
        assert [m for m in sent if isinstance(m, AssistantMessage)] == replies[:k]
        assert_recent_turns_verbatim(sent, log, policy.keep_recent_turns)
        state = fold_run(list(log[: at + 1]))
        assert memory_view(state.messages, state.message_versions, state.compactions) == sent


async def interrupt_when(
    entered: anyio.Event, work: Callable[[], Coroutine[Any, Any, object]]
) -> None:
    """Run ``work`` and cut it off, like a process dying, once ``entered`` is set."""
    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await entered.wait()
            crash.cancel()


TWO_FETCHES = [
    "run_started",
    "turn_started",
    "model_call_requested:agent",
    "model_call_responded:agent",
    "tool_call_intended",
    "tool_call_succeeded",  # version 6: the result compacted in turn 3
    "turn_started",
    "model_call_requested:agent",
    "model_call_responded:agent",
    "tool_call_intended",
    "tool_call_succeeded",
    "turn_started",
]
ANSWER = ["model_call_requested:agent", "model_call_responded:agent", "run_completed"]


# -- compaction by summary ---------------------------------------------------------------------


async def test_old_tool_results_are_summarised_and_the_model_is_sent_the_view(
    store: EventStore,
) -> None:
    planner = Planner([[4_000], [4_000]], POLICY.estimator)
    model = ScriptedModel(planner, name="agent-model")
    summariser = ScriptedModel(
        [reply(SUMMARY, usage=Usage(input_tokens=1_050, output_tokens=20))],
        name="summariser",
        price=Price(Decimal(3), Decimal(15)),
    )
    agent = memory_agent(model, summariser)
    async with engine_for(store) as engine:
        result = await engine.run(agent, TASK, run_id="r1")
    log = await run_log(store, "r1")

    assert types(log) == [
        *TWO_FETCHES,
        "model_call_requested:summary",
        "model_call_responded:summary",
        "memory_compacted",
        *ANSWER,
    ]
    assert result.status == "completed" and result.output == "Done."
    turn3 = log[11].event
    compacted = log[14].event
    assert isinstance(turn3, TurnStarted) and turn3.turn == 3
    assert isinstance(compacted, MemoryCompacted)
    assert compacted.replaced_versions == (6,)
    assert (compacted.method, compacted.summary, compacted.kept_chars) == ("summary", SUMMARY, 0)
    # The summary is a call of the turn like the agent's, and its compaction is in the turn too.
    for r in log[12:17]:
        assert r.event.parent_span_id == turn3.span_id

    # The summariser was sent the results it replaces, nothing else.
    first, second = original(log, "c1_0"), original(log, "c2_0")
    (asked,) = summariser.requests
    assert list(asked.messages) == [
        SystemMessage(content=SUMMARY_INSTRUCTIONS),
        UserMessage(content=f"fetch (call c1_0):\n{first}"),
    ]
    assert asked.max_tokens == POLICY.summary_max_tokens

    # The model gets the summary in the system prompt and a stub in place of the old result,
    # its call id kept; its own messages are as it wrote them.
    replies = answers(log)
    sent = list(model.requests[2].messages)
    assert sent == [
        SystemMessage(
            content=f"{agent.full_system_prompt()}\n\n{SUMMARY_HEADING}\n\n{SUMMARY}",
        ),
        UserMessage(content=TASK),
        replies[0],
        ToolResultMessage(tool_call_id="c1_0", tool_name="fetch", content=compacted_content(first)),
        replies[1],
        ToolResultMessage(tool_call_id="c2_0", tool_name="fetch", content=second),
    ]
    assert json.loads(sent[3].content)["status"] == "compacted"
    before = count_tokens(model.requests[1].messages, estimate_tokens) + count_tokens(
        [replies[1], sent[5]], estimate_tokens
    )
    assert compacted.tokens_before == before > POLICY.compact_at
    assert count_tokens(sent, estimate_tokens) == compacted.tokens_after <= POLICY.max_tokens
    assert_requests_follow_the_log(model.requests, log, POLICY)
    assert_raw_log_untouched(log)

    # The summary is charged like any call: its tokens and cost are the run's.
    summary_cost = Decimal("0.00345")  # 1050 input at $3/M + 20 output at $15/M
    responded = log[13].event
    assert isinstance(responded, ModelCallResponded) and responded.cost_usd == summary_cost
    completed = log[-1].event
    assert isinstance(completed, RunCompleted)
    agent_input = sum(count_tokens(r.messages, estimate_tokens) for r in model.requests)
    assert completed.usage == Usage(input_tokens=agent_input + 1_050, output_tokens=3 * 7 + 20)
    assert completed.cost_usd == result.cost_usd == summary_cost
    assert result.usage == completed.usage


def budgeted(*events: str) -> list[str]:
    """``events`` with every model call's reservation and settlement, as under a budget."""
    named: list[str] = []
    for name in events:
        named.append(name)
        if name.startswith("model_call_requested"):
            named.append("budget_reserved")
        elif name.startswith("model_call_responded"):
            named.append("budget_settled")
    return named


async def test_the_summary_is_reserved_and_settled_against_the_budget_like_any_call() -> None:
    model = ScriptedModel(Planner([[4_000], [4_000]], POLICY.estimator), name="agent-model")
    summariser = ScriptedModel(
        [reply(SUMMARY, usage=Usage(input_tokens=1_050, output_tokens=20))] * 2,
        name="summariser",
        price=Price(Decimal(3), Decimal(15)),
    )
    agent = memory_agent(model, summariser)
    roomy = Budgets({"default": BudgetPolicy(per_run_usd=Decimal(1))})
    tight = Budgets({"tight": BudgetPolicy(per_run_usd=Decimal("0.001"))})
    async with MemoryEventStore() as store:
        async with Engine(store, clock=FakeClock(), ids=SequentialIds("a"), budgets=roomy) as e:
            paid = await e.run(agent, TASK, run_id="paid")
        async with Engine(store, clock=FakeClock(), ids=SequentialIds("b"), budgets=tight) as e:
            cut = await e.run(agent, TASK, run_id="cut", surface="tight")
        paid_log, cut_log = await run_log(store, "paid"), await run_log(store, "cut")

    summary = ["model_call_requested:summary", "model_call_responded:summary"]
    assert types(paid_log) == budgeted(*TWO_FETCHES, *summary, "memory_compacted", *ANSWER)
    reserved, settled = paid_log[17].event, paid_log[19].event
    assert isinstance(reserved, BudgetReserved) and isinstance(settled, BudgetSettled)
    assert reserved.model == "summariser" and settled.reservation_id == reserved.reservation_id
    # The worst case (input bound and summary_max_tokens at the summariser's price) is
    # reserved, the real cost settled.
    assert reserved.amount_usd >= Decimal(POLICY.summary_max_tokens * 15) / 1_000_000
    assert settled.actual_usd == paid.cost_usd == Decimal("0.00345")

    # A summary the run cannot afford ends the run before the summariser is asked.
    assert types(cut_log) == [
        *budgeted(*TWO_FETCHES),
        "model_call_requested:summary",
        "budget_exceeded",
    ]
    assert cut.status == "budget_exceeded" and len(summariser.requests) == 1
    assert not any(isinstance(r.event, MemoryCompacted) for r in cut_log)


# -- the summariser fails ----------------------------------------------------------------------

SERVER_ERRORS = [ModelServerError("summariser", "overloaded", status_code=503)] * 3


@pytest.mark.parametrize(
    ("script", "summary_events"),
    [
        pytest.param(
            SERVER_ERRORS,
            [
                "model_call_requested:summary",
                "model_call_failed",
                "model_call_retried",
                "model_call_requested:summary",
                "model_call_failed",
                "model_call_retried",
                "model_call_requested:summary",
                "model_call_failed",
            ],
            id="server-errors",
        ),
        pytest.param(
            [reply("", usage=Usage(input_tokens=1_050, output_tokens=0))],
            ["model_call_requested:summary", "model_call_responded:summary"],
            id="empty-summary",
        ),
        pytest.param(
            [reply(" \n ", usage=Usage(input_tokens=1_050, output_tokens=2))],
            ["model_call_requested:summary", "model_call_responded:summary"],
            id="blank-summary",
        ),
    ],
)
async def test_a_failed_summary_falls_back_to_a_marked_truncation(
    script: list[ModelReply | BaseException], summary_events: list[str]
) -> None:
    model = ScriptedModel(Planner([[4_000], [4_000]], POLICY.estimator), name="agent-model")
    summariser = ScriptedModel(script, name="summariser")
    agent = memory_agent(model, summariser)
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(agent, TASK, run_id="r1")
        log = await run_log(store, "r1")

    assert types(log) == [*TWO_FETCHES, *summary_events, "memory_compacted", *ANSWER]
    assert result.status == "completed" and result.output == "Done."
    compacted = log[len(TWO_FETCHES) + len(summary_events)].event
    assert isinstance(compacted, MemoryCompacted)
    assert compacted.method == "truncation" and compacted.summary == ""
    assert compacted.replaced_versions == (6,)

    first = original(log, "c1_0")
    assert 0 < compacted.kept_chars < len(first)
    sent = list(model.requests[2].messages)
    # No summary to show: the system prompt is as it was; the old result keeps its head and
    # says how much was cut.
    assert sent[0] == SystemMessage(content=agent.full_system_prompt())
    stub = sent[3]
    assert stub == ToolResultMessage(
        tool_call_id="c1_0",
        tool_name="fetch",
        content=truncated_content(first, compacted.kept_chars),
    )
    shown = json.loads(stub.content)
    assert shown["status"] == "truncated"
    assert shown["head"] == first[: compacted.kept_chars]
    assert f"{len(first) - compacted.kept_chars} characters removed" in shown["note"]
    assert count_tokens(sent, estimate_tokens) == compacted.tokens_after <= POLICY.max_tokens
    assert_requests_follow_the_log(model.requests, log, POLICY)
    assert_raw_log_untouched(log)


# -- a context that cannot fit -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "task", "expected"),
    [
        pytest.param(
            # The one result is in the most recent turn, which stays verbatim.
            [[16_000]],
            TASK,
            TWO_FETCHES[:7],
            id="recent-result-too-big",
        ),
        pytest.param([], "x" * 14_000, ["run_started", "turn_started"], id="task-too-big"),
    ],
)
async def test_a_conversation_that_cannot_fit_fails_as_context_exhausted(
    plan: list[list[int]], task: str, expected: list[str]
) -> None:
    model = ScriptedModel(Planner(plan, POLICY.estimator), name="agent-model")
    summariser = ScriptedModel([], name="summariser")
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(memory_agent(model, summariser), task, run_id="r1")
        log = await run_log(store, "r1")

    assert types(log) == [*expected, "run_failed"]
    failed = log[-1].event
    assert isinstance(failed, RunFailed) and failed.error_type == "context_exhausted"
    assert f"the memory ceiling is {POLICY.max_tokens}" in failed.message
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith("context_exhausted: ")
    assert len(model.requests) == len(plan) and summariser.requests == []


# -- resume ------------------------------------------------------------------------------------


async def test_a_fresh_engine_folding_the_log_sends_what_the_writer_sent() -> None:
    summariser = ScriptedModel([reply(SUMMARY)], name="summariser")
    planner = Planner([[4_000], [4_000]], POLICY.estimator)
    stalling = StallingModel(planner, stall_at=3)  # the first call after the compaction
    async with MemoryEventStore() as store:
        async with engine_for(store, "a") as engine:
            work = memory_agent(stalling, summariser)
            await interrupt_when(stalling.entered, lambda: engine.run(work, TASK, run_id="r1"))
        log = await run_log(store, "r1")
        # The summary (a model's answer) was written before the next model call; the compaction
        # made of it rides with that call's answer, which never came.
        written = [*TWO_FETCHES, "model_call_requested:summary", "model_call_responded:summary"]
        assert types(log) == written
        cut_off = list(stalling.requests[-1].messages)

        model = ScriptedModel(planner, name="agent-model")
        async with engine_for(store, "b", [memory_agent(model, summariser)]) as engine:
            state = await engine.load("r1")
            assert state.summary_reply == SUMMARY and not state.compactions
            result = await engine.resume("r1")
        log = await run_log(store, "r1")

    assert result.status == "completed" and result.output == "Done."
    # The compaction is recorded from the summary in the log, and the model sent what it was.
    assert types(log) == [*written, "run_resumed", "memory_compacted", *ANSWER]
    # The same request again, not a second compaction or summary.
    assert [list(r.messages) for r in model.requests] == [cut_off]
    assert len(summariser.requests) == 1
    assert_requests_follow_the_log([*stalling.requests[:2], *model.requests], log, POLICY)


# -- a property over random runs ---------------------------------------------------------------


def words_and_chars(value: str) -> int:
    """A second subadditive estimator, so nothing depends on ``ceil(len / 4)``."""
    return len(value.split()) + -(-len(value) // 8)


@st.composite
def memory_runs(draw: st.DrawFn) -> tuple[MemoryPolicy, list[list[int]], int | None, list[str]]:
    """A policy, a plan of fetches (sizes in proportion to the ceiling, up to parallel four),
    what the provider reports, and how the summariser answers its calls."""
    max_tokens = draw(st.integers(2_000, 6_000), label="max_tokens")
    compact_at = draw(st.integers(max_tokens // 2, max_tokens), label="compact_at")
    policy = MemoryPolicy(
        max_tokens=max_tokens,
        compact_at=compact_at,
        keep_recent_turns=draw(st.integers(0, 2), label="keep_recent_turns"),
        summary_max_tokens=draw(st.integers(16, compact_at // 4), label="summary_max_tokens"),
        estimator=draw(st.sampled_from([estimate_tokens, words_and_chars]), label="estimator"),
    )
    chars = max_tokens * 4
    size = st.one_of(
        st.integers(0, 200),
        st.integers(200, chars // 12),
        st.integers(chars // 12, chars // 4),
        st.integers(chars // 4, chars * 5 // 4),  # may alone be more than the ceiling
    )
    plan = draw(st.lists(st.lists(size, min_size=1, max_size=4), min_size=1, max_size=8))
    overhead = draw(st.sampled_from([None, 0, 40]), label="reported overhead")
    kinds = st.sampled_from(["ok", "long", "empty", "error"])
    summaries = draw(st.lists(kinds, max_size=12), label="summariser")
    return policy, plan, overhead, summaries


async def random_run(
    policy: MemoryPolicy, plan: list[list[int]], overhead: int | None, summaries: list[str]
) -> None:
    model = ScriptedModel(Planner(plan, policy.estimator, overhead), name="agent-model")
    summariser = Summariser(summaries)
    agent = memory_agent(model, summariser, policy, max_turns=len(plan) + 1)
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(agent, TASK, run_id="r1")
        log = await run_log(store, "r1")

    assert_requests_follow_the_log(model.requests, log, policy)
    assert_raw_log_untouched(log)
    for index, r in enumerate(log):
        if not isinstance(r.event, MemoryCompacted):
            continue
        # A compaction records the summary the summariser just gave, clipped, if it gave one.
        last = log[index - 1].event
        if isinstance(last, ModelCallResponded) and last.text.strip():
            assert r.event.method == "summary"
            assert r.event.summary == clip_summary(last.text, policy)
        else:
            assert r.event.method == "truncation" and r.event.summary == ""
        event(f"compaction by {r.event.method}")
    if result.status == "completed":
        assert result.output == "Done."
        assert len(model.requests) == len(plan) + 1
    else:
        assert result.status == "failed" and result.error is not None
        assert result.error.startswith("context_exhausted: ")
    event(f"run {result.status}")


@settings(max_examples=25, deadline=None)
@given(run=memory_runs())
def test_every_request_of_a_random_run_is_the_bounded_view_of_its_log(
    run: tuple[MemoryPolicy, list[list[int]], int | None, list[str]],
) -> None:
    anyio.run(random_run, *run)
