"""Bounded memory (pattern 2): the memory view, token counts and compaction plans.

The property tests drive the loop the engine runs: the conversation grows turn by turn (parallel
tool calls, huge results, revision requests) and before every model call a plan is asked for;
a plan that fits is recorded as a ``MemoryCompacted`` by summary or, as when the summariser
fails, by truncation. What would be sent is checked after every step against the ceiling, the
call/result pairing and the original messages; the "log" (messages with versions, and
compactions) is then folded in two parts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from agentledger.events import MemoryCompacted, ToolCall
from agentledger.projections import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)
from agentledger.projections._memory_view import (
    MESSAGE_OVERHEAD_TOKENS,
    SUMMARY_HEADING,
    CompactionFields,
    CompactionPlan,
    Estimator,
    MemoryPolicy,
    clip_summary,
    compacted_content,
    count_tokens,
    estimate_tokens,
    memory_view,
    plan_compaction,
    summary_fields,
    truncated_content,
    truncation_fallback,
)
from agentledger.projections._tool_results import tool_result_ok

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
_PATTERN = 'lorem "ipsum" dolor \u2013 sit\\amet, consectetur\n'


def text(n: int) -> str:
    """``n`` characters with quotes, a backslash, a newline and a non-ASCII dash in them."""
    return (_PATTERN * (n // len(_PATTERN) + 1))[:n]


def words_and_chars(value: str) -> int:
    """A second subadditive estimator, to show nothing depends on ``ceil(len / 4)``."""
    return len(value.split()) + -(-len(value) // 8)


def recorded(fields: CompactionFields) -> MemoryCompacted:
    return MemoryCompacted(run_id="r", span_id="memory", at=T0, **fields)


def compaction(versions: Sequence[int], summary: str = "", **more: Any) -> MemoryCompacted:
    return MemoryCompacted(
        run_id="r",
        span_id="memory",
        at=T0,
        replaced_versions=tuple(versions),
        summary=summary,
        **more,
    )


@dataclass
class Conversation:
    """A run's conversation as the run-state fold keeps it, and its log, entry by entry."""

    messages: list[Message] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    compactions: list[MemoryCompacted] = field(default_factory=list)
    log: list[tuple[Message, int] | MemoryCompacted] = field(default_factory=list)
    version: int = 0
    turn: int = 0

    def add(self, message: Message, version: int) -> None:
        self.messages.append(message)
        self.versions.append(version)
        self.log.append((message, version))

    def next_version(self, skip: int = 0) -> int:
        self.version += 1 + skip  # TurnStarted, ModelCallRequested... are events too
        return self.version

    def start(self, system: str | None, task: str) -> None:
        version = self.next_version()
        if system is not None:
            self.add(SystemMessage(content=system), version)
        self.add(UserMessage(content=task), version)

    def tool_turn(self, calls: Sequence[tuple[str, int, int]]) -> None:
        self.turn += 1
        tool_calls = tuple(
            ToolCall(id=f"call_{self.turn}_{i}", name=name, arguments=json.dumps({"q": text(n)}))
            for i, (name, n, _) in enumerate(calls)
        )
        self.add(
            AssistantMessage(content="let me look" if self.turn % 2 else "", tool_calls=tool_calls),
            self.next_version(skip=2),
        )
        for call, (_, _, size) in zip(tool_calls, calls, strict=True):
            result = ToolResultMessage(
                tool_call_id=call.id, tool_name=call.name, content=tool_result_ok(text(size))
            )
            self.add(result, self.next_version(skip=1))

    def answer_and_revision(self, size: int) -> None:
        self.turn += 1
        self.add(AssistantMessage(content=text(size)), self.next_version(skip=2))
        self.add(UserMessage(content="Please revise: " + text(size // 3)), self.next_version())

    def record(self, fields: CompactionFields) -> None:
        event = recorded(fields)
        self.next_version()
        self.compactions.append(event)
        self.log.append(event)

    def view(self) -> list[Message]:
        return memory_view(self.messages, self.versions, self.compactions)


def fold_log(
    entries: Sequence[tuple[Message, int] | MemoryCompacted],
    state: tuple[tuple[Message, ...], tuple[int, ...], tuple[MemoryCompacted, ...]] = ((), (), ()),
) -> tuple[tuple[Message, ...], tuple[int, ...], tuple[MemoryCompacted, ...]]:
    messages, versions, compactions = state
    for entry in entries:
        if isinstance(entry, MemoryCompacted):
            compactions = (*compactions, entry)
        else:
            messages, versions = (*messages, entry[0]), (*versions, entry[1])
    return messages, versions, compactions


# -- what the properties check --------------------------------------------------------------


def assert_pairs_and_originals(view: Sequence[Message], conversation: Conversation) -> None:
    """Every result follows its call, every call has one result, and nothing but the content
    of tool results (and the summaries in the system message) differs from the original."""
    originals = conversation.messages

    def of(kind: type[Message], messages: Sequence[Message]) -> list[Message]:
        return [m for m in messages if isinstance(m, kind)]

    assert of(AssistantMessage, view) == of(AssistantMessage, originals)
    assert of(UserMessage, view) == of(UserMessage, originals)
    tool_view = [m for m in view if isinstance(m, ToolResultMessage)]
    tool_originals = [m for m in originals if isinstance(m, ToolResultMessage)]
    assert [(m.tool_call_id, m.tool_name) for m in tool_view] == [
        (m.tool_call_id, m.tool_name) for m in tool_originals
    ]
    for result in tool_view:
        json.loads(result.content)  # stubs and truncations are JSON like every result

    systems = of(SystemMessage, view)
    original_systems = of(SystemMessage, originals)
    assert len(systems) <= 1
    if original_systems:
        assert systems[0].content.startswith(original_systems[0].content)
    if systems:
        assert view[0] == systems[0]

    unanswered: set[str] = set()
    for message in view:
        if isinstance(message, ToolResultMessage):
            assert message.tool_call_id in unanswered, "a result without its call before it"
            unanswered.remove(message.tool_call_id)
        else:
            assert not unanswered, "a call without its result before the next message"
            if isinstance(message, AssistantMessage):
                unanswered = {call.id for call in message.tool_calls}
                assert len(unanswered) == len(message.tool_calls)
    assert not unanswered


def recent_start(messages: Sequence[Message], keep: int) -> int:
    if keep == 0:
        return len(messages)
    assistants = [i for i, m in enumerate(messages) if m.role == "assistant"]
    return 0 if len(assistants) < keep else assistants[-keep]


def replaceable_versions(conversation: Conversation, policy: MemoryPolicy) -> list[int]:
    """Tool results outside the recent turns, not replaced yet, whose stub is smaller."""
    already = {v for c in conversation.compactions for v in c.replaced_versions}
    start = recent_start(conversation.messages, policy.keep_recent_turns)
    found = []
    for message, version in zip(conversation.messages[:start], conversation.versions, strict=False):
        if isinstance(message, ToolResultMessage) and version not in already:
            stub = message.model_copy(update={"content": compacted_content(message.content)})
            if count_tokens([stub], policy.estimator) < count_tokens([message], policy.estimator):
                found.append(version)
    return found


def best_possible_tokens(conversation: Conversation, policy: MemoryPolicy) -> int:
    """The smallest view any compaction could be sure of: every replaceable result stubbed and
    room for a summary, or no compaction at all."""
    now = conversation.view()
    before = count_tokens(now, policy.estimator)
    replaceable = replaceable_versions(conversation, policy)
    if not replaceable:
        return before
    stubbed = memory_view(
        conversation.messages,
        conversation.versions,
        [*conversation.compactions, compaction(replaceable)],
    )
    return min(before, count_tokens(stubbed, policy.estimator) + policy.summary_reserve_tokens)


def before_model_call(
    conversation: Conversation, policy: MemoryPolicy, data: st.DataObject
) -> bool:
    """What the engine does before each model call; False when the run has to fail."""
    plan = plan_compaction(
        conversation.messages, conversation.versions, conversation.compactions, policy
    )
    estimate = policy.estimator
    if plan is None:
        view = conversation.view()
        assert count_tokens(view, estimate) <= policy.max_tokens
        assert_pairs_and_originals(view, conversation)
        return True

    assert plan.tokens_before == count_tokens(conversation.view(), estimate)
    assert plan.tokens_before > policy.compact_at
    if not plan.fits:
        # The only way out is an error: nothing recordable gets the view under the ceiling.
        assert best_possible_tokens(conversation, policy) > policy.max_tokens
        with pytest.raises(ValueError):
            truncation_fallback(plan)
        return False

    replaceable = replaceable_versions(conversation, policy)
    assert list(plan.replaced_versions) == replaceable[: len(plan.replaced_versions)]
    assert plan.replaced_versions, "a plan that fits replaces something"
    if plan.tokens_after > policy.compact_at:
        assert list(plan.replaced_versions) == replaceable  # it stopped short only when done
    by_version = dict(zip(conversation.versions, conversation.messages, strict=True))
    for version in plan.replaced_versions:
        replaced = by_version[version]
        assert isinstance(replaced, ToolResultMessage)
        assert replaced.content in plan.text_to_summarise

    if data.draw(st.booleans(), label="summariser fails"):
        event("a truncation recorded")
        fields = truncation_fallback(plan)
    else:
        size = data.draw(st.integers(0, policy.summary_max_tokens * 8), label="summary chars")
        fields = summary_fields(plan, "Found: " + text(size))
        event("a summary recorded")
        assert estimate(fields["summary"]) <= policy.summary_max_tokens
    conversation.record(fields)

    view = conversation.view()
    sent = count_tokens(view, estimate)
    assert sent == fields["tokens_after"]
    assert sent <= plan.tokens_after <= policy.max_tokens
    assert_pairs_and_originals(view, conversation)
    return True


# -- strategies -----------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> MemoryPolicy:
    max_tokens = draw(st.integers(3_000, 16_000), label="max_tokens")
    compact_at = draw(st.integers(max_tokens // 2, max_tokens), label="compact_at")
    estimator: Estimator = draw(st.sampled_from([estimate_tokens, words_and_chars]))
    return MemoryPolicy(
        max_tokens=max_tokens,
        compact_at=compact_at,
        keep_recent_turns=draw(st.integers(0, 2), label="keep_recent_turns"),
        summary_max_tokens=draw(st.integers(8, compact_at // 4), label="summary_max_tokens"),
        estimator=estimator,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[MemoryPolicy, dict[str, Any]]:
    """A policy and a conversation with sizes in proportion to its ceiling (in characters).

    Half are *tame*: the recent turns fit under the ceiling, so the run goes on compacting
    again and again. The others are *wild*: a result or a task may alone be bigger than the
    ceiling, and the run has to fail when it lands where nothing may be compacted.
    """
    policy = draw(policies())
    ceiling = policy.max_tokens * 4

    def share(low: float, high: float) -> st.SearchStrategy[int]:
        return st.integers(int(low * ceiling), int(high * ceiling))

    tiny, medium = share(0, 0.01), share(0.01, 0.05)
    if draw(st.booleans(), label="wild"):
        results = st.one_of(tiny, medium, share(0.05, 0.3), share(0.3, 1.2))
        task = st.integers(1, 2_000) | share(0, 1.1)
    else:
        biggest = 0.6 / (4 * max(policy.keep_recent_turns, 1))  # 4 parallel calls at most
        results = st.one_of(tiny, share(0.01, biggest), share(biggest / 2, biggest))
        task = st.integers(1, 2_000)
    call = st.tuples(
        st.sampled_from(["search", "fetch_page", "sql"]),
        st.integers(0, 200) | share(0, 0.01),  # argument characters
        results,
    )
    # No call: an answer the critic sends back for revision.
    no_call: list[tuple[str, int, int]] = []
    calls = st.lists(call, min_size=1, max_size=4) | st.just(no_call)
    spec = {
        "system": draw(st.none() | st.integers(1, 2_000).map(text), label="system"),
        "task": text(draw(task, label="task")),
        "turns": draw(st.lists(calls, min_size=4, max_size=16), label="turns"),
    }
    return policy, spec


def run_loop(policy: MemoryPolicy, spec: dict[str, Any], data: st.DataObject) -> Conversation:
    conversation = Conversation()
    conversation.start(spec["system"], spec["task"])
    if not before_model_call(conversation, policy, data):
        return conversation
    for calls in spec["turns"]:
        if calls:
            conversation.tool_turn(calls)
        else:
            conversation.answer_and_revision(data.draw(st.integers(1, 2_000), label="answer"))
        if not before_model_call(conversation, policy, data):
            event("the run fails: what cannot be compacted is over the ceiling")
            break
    count = len(conversation.compactions)
    event(f"compactions: {count if count < 3 else '3 or more'}")
    return conversation


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_what_is_sent_stays_within_the_ceiling_and_keeps_every_pair(
    scenario: tuple[MemoryPolicy, dict[str, Any]], data: st.DataObject
) -> None:
    # (a), (b), (c) are asserted at every step inside the loop.
    run_loop(*scenario, data)


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_the_view_is_a_pure_fold_of_the_log(
    scenario: tuple[MemoryPolicy, dict[str, Any]], data: st.DataObject
) -> None:
    conversation = run_loop(*scenario, data)
    log = conversation.log
    whole = memory_view(*fold_log(log))
    assert whole == conversation.view()
    assert memory_view(*fold_log(log)) == whole  # no hidden state between calls

    split = data.draw(st.integers(0, len(log)), label="split")
    prefix, suffix = log[:split], log[split:]
    assert memory_view(*fold_log(suffix, fold_log(prefix))) == whole
    if not any(isinstance(entry, MemoryCompacted) for entry in suffix):
        # Without a new compaction, new messages only append: what was sent stays a prefix
        # (and a provider's prompt cache stays valid).
        earlier = memory_view(*fold_log(prefix))
        assert whole[: len(earlier)] == earlier


# -- examples -------------------------------------------------------------------------------


def small_run(*, system: str | None = "You are a researcher.") -> Conversation:
    """Three turns: one call, two parallel calls, one call, with 4,000-character results."""
    conversation = Conversation()
    conversation.start(system, "find things")
    for calls in ([("search", 10, 4_000)], [("fetch_page", 10, 4_000)] * 2, [("sql", 10, 4_000)]):
        conversation.tool_turn(calls)
    return conversation


def tool_versions(conversation: Conversation) -> list[int]:
    return [
        v
        for m, v in zip(conversation.messages, conversation.versions, strict=True)
        if isinstance(m, ToolResultMessage)
    ]


def test_a_summary_stubs_its_results_and_joins_the_system_message() -> None:
    conversation = small_run()
    first, second, third, _ = tool_versions(conversation)
    conversation.compactions.append(compaction([first, second], summary="It rained."))
    conversation.compactions.append(compaction([third], summary="It snowed."))
    view = conversation.view()

    assert view[0] == SystemMessage(
        content=f"You are a researcher.\n\n{SUMMARY_HEADING}\n\nIt rained.\n\nIt snowed."
    )
    assert len(view) == len(conversation.messages)
    changed = [
        i for i, (a, b) in enumerate(zip(view, conversation.messages, strict=True)) if a != b
    ]
    assert changed == [0, 3, 5, 6]
    assert json.loads(view[3].content) == {
        "status": "compacted",
        "note": (
            f"[compacted by agentledger: {len(conversation.messages[3].content)} characters "
            "summarised in the system prompt]"
        ),
    }
    assert view[3] == conversation.messages[3].model_copy(update={"content": view[3].content})
    assert view[8] == conversation.messages[8]  # the fourth result is not replaced


def test_without_a_system_message_the_summary_gets_its_own_at_the_start() -> None:
    conversation = small_run(system=None)
    first = tool_versions(conversation)[0]
    assert memory_view(conversation.messages, conversation.versions, [compaction([first])]) == [
        *conversation.messages[:2],
        conversation.messages[2].model_copy(
            update={"content": compacted_content(conversation.messages[2].content)}
        ),
        *conversation.messages[3:],
    ]  # an empty summary adds nothing
    conversation.compactions.append(compaction([first], summary="Sunny."))
    view = conversation.view()
    assert view[0] == SystemMessage(content=f"{SUMMARY_HEADING}\n\nSunny.")
    assert view[1:3] == conversation.messages[:2]


def test_a_truncation_keeps_the_head_and_says_what_it_removed() -> None:
    conversation = small_run()
    first = tool_versions(conversation)[0]
    original = conversation.messages[3].content
    conversation.compactions.append(compaction([first], method="truncation", kept_chars=30))
    view = conversation.view()

    assert view[0] == conversation.messages[0]  # a truncation adds no summary
    assert json.loads(view[3].content) == {
        "status": "truncated",
        "head": original[:30],
        "note": f"[truncated by agentledger: {len(original) - 30} characters removed]",
    }
    assert truncated_content("short", 30) == "short"


def test_only_tool_results_are_ever_replaced_and_the_first_compaction_wins() -> None:
    conversation = small_run()
    first = tool_versions(conversation)[0]
    started, assistant = conversation.versions[0], conversation.versions[2]
    conversation.compactions.append(compaction([started, assistant, first]))
    conversation.compactions.append(compaction([first], method="truncation", kept_chars=10))
    view = conversation.view()
    assert view[:3] == conversation.messages[:3]
    assert view[3].content == compacted_content(conversation.messages[3].content)
    assert view[4:] == conversation.messages[4:]


def test_policy_is_checked_when_made() -> None:
    MemoryPolicy(max_tokens=2_000, compact_at=2_000)
    for max_tokens, compact_at, keep, summary in (
        (0, 0, 2, 512),
        (1_000, 1_001, 2, 512),
        (1_000, 800, -1, 512),
        (1_000, 800, 2, 0),
        (1_000, 500, 2, 490),  # a summary and its heading would fill the threshold
    ):
        with pytest.raises(ValueError):
            MemoryPolicy(max_tokens, compact_at, keep, summary)


def test_count_tokens_uses_the_reported_count_for_what_was_sent() -> None:
    conversation = small_run()
    messages = conversation.messages
    each = [MESSAGE_OVERHEAD_TOKENS + estimate_tokens(m.content) for m in messages[:2]]
    assert count_tokens(messages[:2], estimate_tokens) == sum(each)

    estimated = count_tokens(messages, estimate_tokens)
    rest = count_tokens(messages[4:], estimate_tokens)
    assert count_tokens(messages, estimate_tokens, reported_input_tokens=5_000, reported_for=4) == (
        5_000 + rest
    )
    assert count_tokens(messages, estimate_tokens, reported_for=4) == estimated
    with pytest.raises(ValueError):
        count_tokens(messages, estimate_tokens, reported_input_tokens=1, reported_for=99)


def plan_for(conversation: Conversation, policy: MemoryPolicy, **reported: int) -> CompactionPlan:
    plan = plan_compaction(
        conversation.messages, conversation.versions, conversation.compactions, policy, **reported
    )
    assert plan is not None
    return plan


def test_plans_take_the_oldest_results_first_and_spare_the_recent_turns() -> None:
    conversation = small_run()  # 3 turns, 4 results of ~1,000 tokens each
    total = count_tokens(conversation.view(), estimate_tokens)
    first, second, third, fourth = tool_versions(conversation)
    lenient = MemoryPolicy(max_tokens=total, compact_at=total, summary_max_tokens=64)
    assert plan_compaction(conversation.messages, conversation.versions, [], lenient) is None

    # One result fewer, plus a summary, gets under this threshold: only the oldest goes.
    one = MemoryPolicy(max_tokens=total, compact_at=total - 500, summary_max_tokens=64)
    plan = plan_for(conversation, one)
    assert plan.replaced_versions == (first,)
    assert plan.fits and plan.tokens_after <= total - 500
    assert plan.text_to_summarise.startswith('search (call call_1_0):\n{"result":"lorem')

    # Nothing is enough, but only the first turn is outside the last two.
    tight = MemoryPolicy(max_tokens=total, compact_at=1_000, summary_max_tokens=64)
    assert plan_for(conversation, tight).replaced_versions == (first,)
    tighter = MemoryPolicy(1_000_000, 1_000, keep_recent_turns=1, summary_max_tokens=64)
    assert plan_for(conversation, tighter).replaced_versions == (first, second, third)
    everything = MemoryPolicy(1_000_000, 1_000, keep_recent_turns=0, summary_max_tokens=64)
    assert plan_for(conversation, everything).replaced_versions == (first, second, third, fourth)

    # What is replaced already is not again.
    conversation.compactions.append(compaction([first, second], summary="S."))
    assert plan_for(conversation, everything).replaced_versions == (third, fourth)


def test_a_plan_that_cannot_fit_says_so_and_cannot_be_recorded() -> None:
    conversation = Conversation()
    conversation.start("You help.", text(20_000))  # a 5,000-token task
    conversation.tool_turn([("search", 10, 40_000)])
    policy = MemoryPolicy(max_tokens=4_000, compact_at=3_000, keep_recent_turns=0)
    plan = plan_for(conversation, policy)
    assert plan.replaced_versions == tuple(tool_versions(conversation))
    assert not plan.fits and plan.tokens_after > 4_000
    with pytest.raises(ValueError):
        summary_fields(plan, "summary")

    # Nothing to compact at all, and over the ceiling: a plan without replacements.
    bare = Conversation()
    bare.start(None, text(20_000))
    plan = plan_for(bare, policy)
    assert (plan.replaced_versions, plan.fits) == ((), False)
    # ... but within the ceiling, though past the threshold, there is nothing to do.
    roomy = MemoryPolicy(max_tokens=10_000, compact_at=3_000)
    assert plan_compaction(bare.messages, bare.versions, [], roomy) is None


def test_reported_usage_can_trigger_a_compaction_the_estimate_would_not() -> None:
    conversation = small_run()
    estimated = count_tokens(conversation.view(), estimate_tokens)
    policy = MemoryPolicy(max_tokens=estimated + 2_000, compact_at=estimated + 1_000)
    assert plan_compaction(conversation.messages, conversation.versions, [], policy) is None
    sent = len(conversation.messages) - 2  # the last call was sent all but its own turn
    reported = count_tokens(conversation.messages[:sent], estimate_tokens) + 1_500
    plan = plan_for(conversation, policy, reported_input_tokens=reported, reported_for=sent)
    assert plan.tokens_before == estimated + 1_500
    assert plan.fits and plan.tokens_after <= policy.compact_at


def test_truncation_fallback_stays_within_the_plan_with_many_results() -> None:
    conversation = Conversation()
    conversation.start("sys", "task")
    for _ in range(60):
        conversation.tool_turn([("fetch_page", 5, 600)] * 3)
    policy = MemoryPolicy(max_tokens=12_000, compact_at=9_000, summary_max_tokens=256)
    plan = plan_for(conversation, policy)
    assert plan.fits and len(plan.replaced_versions) > 100

    fields = truncation_fallback(plan)
    conversation.record(fields)
    view = conversation.view()
    assert count_tokens(view, estimate_tokens) == fields["tokens_after"] <= plan.tokens_after
    truncated = [m for m in view if m.role == "tool" and '"status":"truncated"' in m.content]
    assert len(truncated) == len(plan.replaced_versions)
    assert fields["kept_chars"] > 0  # the summary's room is spent on the heads instead
    assert_pairs_and_originals(view, conversation)


def test_summaries_are_clipped_to_their_budget() -> None:
    policy = MemoryPolicy(max_tokens=2_000, compact_at=1_500, summary_max_tokens=10)
    assert clip_summary("short", policy) == "short"
    clipped = clip_summary("a long summary " * 20, policy)
    assert estimate_tokens(clipped) <= 10
    assert ("a long summary " * 20).startswith(clipped) and len(clipped) >= 36
