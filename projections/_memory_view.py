"""Bounded memory (pattern 2): what a model is sent, with old tool results compacted.

The conversation (``RunState.messages``) holds every message uncompacted, each with the stream
version of the event it came from (``RunState.message_versions``). A ``MemoryCompacted`` event
names the versions of tool results it replaces; ``memory_view`` folds those events over the
conversation into the messages actually sent:

- a replaced tool result keeps its message and ``tool_call_id`` (so no provider sees a tool call
  without its result, or a result without its call); only its JSON content becomes a stub
  (``method="summary"``) or its first ``kept_chars`` characters and a marker saying how many
  were removed (``method="truncation"``, the fallback when the summariser fails);
- the summaries are appended, in log order, to the first system message under
  ``SUMMARY_HEADING`` (a system message is inserted at the start if the run has none);
- nothing else changes: system, user and assistant messages, tool calls and their arguments are
  sent as recorded.

``plan_compaction`` decides when to compact and what: the oldest tool results first, never those
of the last ``keep_recent_turns`` turns, until the view is at or below ``compact_at``.
``summary_fields`` and ``truncation_fallback`` turn a plan into the fields of the
``MemoryCompacted`` event to record.

Token counts use the policy's estimator, which must return 0 or more, be *subadditive* (a
text counts at most the sum of its parts) and never count a prefix of a text more than the
text; ``ceil(len / 4)`` is all three, a real tokeniser nearly. Then a plan's ``tokens_after``
bounds the view after either event is recorded, whatever summary (within
``summary_max_tokens``) the summariser returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from agentledger.events import MemoryCompacted

from ._messages import AssistantMessage, Message, SystemMessage, ToolResultMessage

Estimator = Callable[[str], int]
"""Counts the tokens of a text (an estimate: providers tokenise differently)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens counted for every message on top of its text: role and framing in the provider's
format."""

SUMMARY_HEADING = "Summary of earlier tool results:"
"""The heading under which summaries are appended to the system message."""

_SEPARATOR = "\n\n"


def estimate_tokens(text: str) -> int:
    """The default estimator: one token per four characters, rounded up."""
    return -(-len(text) // 4)


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """How much of the conversation is sent, and when old tool results are compacted.

    ``max_tokens`` is the ceiling of what is sent; past ``compact_at`` (at most ``max_tokens``)
    old tool results are compacted. The last ``keep_recent_turns`` turns (an assistant message
    and the tool results answering it) stay verbatim. A summary is at most
    ``summary_max_tokens`` by ``estimator``, which counts a text's tokens (default
    ``estimate_tokens``; ``MESSAGE_OVERHEAD_TOKENS`` is added per message).
    """

    max_tokens: int
    compact_at: int
    keep_recent_turns: int = 2
    summary_max_tokens: int = 512
    estimator: Estimator = estimate_tokens
    keep_recent_exchanges: int = 4
    """Of a conversation's earlier runs, how many exchanges (task and answer) at most are sent
    verbatim; older ones are truncated into the conversation's summary."""
    history_max_tokens: int | None = None
    """The ceiling of a conversation's history in what is sent (default: half of
    ``compact_at``), so the run's own turns keep the rest."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("MemoryPolicy.max_tokens must be at least 1")
        if not 1 <= self.compact_at <= self.max_tokens:
            raise ValueError("MemoryPolicy.compact_at must be between 1 and max_tokens")
        if self.keep_recent_turns < 0:
            raise ValueError("MemoryPolicy.keep_recent_turns cannot be negative")
        if self.summary_max_tokens < 1:
            raise ValueError("MemoryPolicy.summary_max_tokens must be at least 1")
        if self.keep_recent_exchanges < 0:
            raise ValueError("MemoryPolicy.keep_recent_exchanges cannot be negative")
        if self.history_max_tokens is not None and not 0 <= self.history_max_tokens <= (
            self.compact_at
        ):
            raise ValueError("MemoryPolicy.history_max_tokens must be between 0 and compact_at")
        if self.summary_reserve_tokens >= self.compact_at:
            # Every summary would by itself fill the view up to the threshold.
            raise ValueError(
                f"MemoryPolicy.compact_at ({self.compact_at}) must be above the room a summary "
                f"takes ({self.summary_reserve_tokens} tokens: summary_max_tokens plus heading)"
            )

    @property
    def history_tokens(self) -> int:
        """The ceiling of a conversation's history: ``history_max_tokens`` or half of
        ``compact_at``."""
        if self.history_max_tokens is not None:
            return self.history_max_tokens
        return self.compact_at // 2

    @property
    def summary_reserve_tokens(self) -> int:
        """The most a new summary can add to the view: its text, heading and separators, and
        a message of its own when the run has no system message."""
        estimate = self.estimator
        return (
            self.summary_max_tokens
            + MESSAGE_OVERHEAD_TOKENS
            + estimate(SUMMARY_HEADING)
            + 2 * estimate(_SEPARATOR)
        )


class CompactionFields(TypedDict):
    """The fields of a ``MemoryCompacted`` event, less the envelope ones (run, span, time)."""

    replaced_versions: tuple[int, ...]
    summary: str
    method: Literal["summary", "truncation"]
    tokens_before: int
    tokens_after: int
    kept_chars: int


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """Which tool results to compact, and what the view will cost afterwards.

    ``replaced_versions`` are the versions of the tool results to replace, oldest first, and
    ``text_to_summarise`` their contents with tool names and call ids, for the summariser.
    ``tokens_after`` bounds the view after the compaction is recorded, by summary or by
    truncation; ``fits`` says whether that is within ``policy.max_tokens``. A plan that does not
    fit must not be recorded: what cannot be compacted (system, user and assistant messages,
    the recent turns, the summaries so far) is too big, and the run cannot go on.
    """

    replaced_versions: tuple[int, ...]
    text_to_summarise: str
    tokens_before: int
    tokens_after: int
    fits: bool
    policy: MemoryPolicy
    truncation_kept_chars: int
    """How many leading characters of each replaced result a truncation keeps."""
    truncation_tokens_after: int
    stubbed_tokens: int
    """The view with the results replaced by stubs, less the message summaries go in."""
    summary_host: str | None
    """The content of the message summaries go in (the first system message), if any."""
    has_summaries: bool


def count_tokens(
    messages: Sequence[Message],
    estimator: Estimator,
    *,
    reported_input_tokens: int | None = None,
    reported_for: int = 0,
) -> int:
    """The tokens of ``messages``: per message, ``MESSAGE_OVERHEAD_TOKENS`` plus the estimate of
    its text (content, tool calls with their arguments, tool call id).

    When a provider reported ``reported_input_tokens`` for a request made of the first
    ``reported_for`` of ``messages`` (``ModelCallResponded.usage.input_tokens`` for the
    ``ModelCallRequested.message_count`` messages it was sent), that count stands for those
    messages and only the rest are estimated. It is the provider's own count, tool
    definitions included, so the more accurate one; it only holds while the view's first
    ``reported_for`` messages are those that were sent, i.e. until the next compaction.
    """
    if not 0 <= reported_for <= len(messages):
        raise ValueError(f"reported_for={reported_for} is not within 0..{len(messages)}")
    if reported_input_tokens is None or reported_for == 0:
        reported_input_tokens, reported_for = 0, 0
    return reported_input_tokens + sum(
        _message_tokens(m, estimator) for m in messages[reported_for:]
    )


def memory_view(
    messages: Sequence[Message],
    versions: Sequence[int],
    compactions: Sequence[MemoryCompacted],
) -> list[Message]:
    """The messages sent to the model: ``messages`` with ``compactions`` applied (see the
    module docstring). ``versions[i]`` is the stream version ``messages[i]`` came from;
    ``compactions`` are in log order. Pure: the same inputs give equal views."""
    _check_parallel(messages, versions)
    replacing = _replacing(compactions)
    view: list[Message] = []
    for message, version in zip(messages, versions, strict=True):
        compaction = replacing.get(version)
        if compaction is not None and isinstance(message, ToolResultMessage):
            message = _replaced(message, compaction)
        view.append(message)
    summaries = [c.summary for c in compactions if c.method == "summary" and c.summary]
    return _with_summaries(view, summaries)


def plan_compaction(
    messages: Sequence[Message],
    versions: Sequence[int],
    compactions: Sequence[MemoryCompacted],
    policy: MemoryPolicy,
    *,
    reported_input_tokens: int | None = None,
    reported_for: int = 0,
) -> CompactionPlan | None:
    """What to compact before the next model call, or ``None`` when the view is fine as it is.

    The view is counted with ``count_tokens`` (``reported_for`` counts messages of the *view*,
    as sent). At or below ``policy.compact_at`` nothing is done. Above it, tool results are
    picked oldest first, never one of the last ``policy.keep_recent_turns`` turns, never one
    already replaced and never one whose stub would not be smaller, until the projected view
    (stubs, plus room for a summary of ``summary_max_tokens``) is at or below ``compact_at``, or
    every candidate is taken. ``None`` too when compacting would not shrink the view and it is
    within ``max_tokens``; when it is not, the plan replaces nothing and does not ``fit``.
    """
    view = memory_view(messages, versions, compactions)
    estimator = policy.estimator
    before = count_tokens(
        view, estimator, reported_input_tokens=reported_input_tokens, reported_for=reported_for
    )
    if before <= policy.compact_at:
        return None

    reserve = policy.summary_reserve_tokens
    chosen: list[_Candidate] = []
    saved = 0
    for candidate in _candidates(messages, versions, compactions, policy):
        chosen.append(candidate)
        saved += candidate.tokens - candidate.floor
        if before - saved + reserve <= policy.compact_at:
            break
    after = before - saved + reserve
    host = next((m for m in view if isinstance(m, SystemMessage)), None)
    has_summaries = any(c.method == "summary" and c.summary for c in compactions)
    if not chosen or after >= before:
        if before <= policy.max_tokens:
            return None
        return CompactionPlan(
            replaced_versions=(),
            text_to_summarise="",
            tokens_before=before,
            tokens_after=before,
            fits=False,
            policy=policy,
            truncation_kept_chars=0,
            truncation_tokens_after=before,
            stubbed_tokens=before,
            summary_host=None if host is None else host.content,
            has_summaries=has_summaries,
        )

    stubbed = before - sum(c.tokens - c.stub for c in chosen)
    if host is not None:
        stubbed -= _message_tokens(host, estimator)
    kept_chars, truncated = _truncation(chosen, sum(c.floor for c in chosen) + reserve, estimator)
    return CompactionPlan(
        replaced_versions=tuple(c.version for c in chosen),
        text_to_summarise=_SEPARATOR.join(
            f"{c.message.tool_name} (call {c.message.tool_call_id}):\n{c.message.content}"
            for c in chosen
        ),
        tokens_before=before,
        tokens_after=after,
        fits=after <= policy.max_tokens,
        policy=policy,
        truncation_kept_chars=kept_chars,
        truncation_tokens_after=before - sum(c.tokens for c in chosen) + truncated,
        stubbed_tokens=stubbed,
        summary_host=None if host is None else host.content,
        has_summaries=has_summaries,
    )


def clip_summary(summary: str, policy: MemoryPolicy) -> str:
    """The longest start of ``summary`` within ``policy.summary_max_tokens`` by its estimator.

    A model's ``max_tokens`` counts its provider's tokens, not the estimator's, so a summary is
    clipped before it is recorded or the plan's bound would not hold.
    """
    limit, estimate = policy.summary_max_tokens, policy.estimator
    if estimate(summary) <= limit:
        return summary
    low, high = 0, len(summary)  # summary[:low] fits (or is empty), summary[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        if estimate(summary[:middle]) <= limit:
            low = middle
        else:
            high = middle
    return summary[:low].rstrip()


def summary_fields(plan: CompactionPlan, summary: str) -> CompactionFields:
    """The ``MemoryCompacted`` fields that record ``plan`` with the summariser's ``summary``
    (clipped with ``clip_summary``); ``tokens_after`` is the view's count with it."""
    if not plan.fits:
        raise ValueError("a compaction plan that does not fit cannot be recorded")
    summary = clip_summary(summary, plan.policy)
    after = plan.stubbed_tokens
    if summary:
        host = _appended(plan.summary_host, plan.has_summaries, summary)
        after += _message_tokens(SystemMessage(content=host), plan.policy.estimator)
    elif plan.summary_host is not None:
        after += _message_tokens(SystemMessage(content=plan.summary_host), plan.policy.estimator)
    return CompactionFields(
        replaced_versions=plan.replaced_versions,
        summary=summary,
        method="summary",
        tokens_before=plan.tokens_before,
        tokens_after=after,
        kept_chars=0,
    )


def truncation_fallback(plan: CompactionPlan) -> CompactionFields:
    """The ``MemoryCompacted`` fields that record ``plan`` when the summariser failed: each
    replaced result keeps its first ``plan.truncation_kept_chars`` characters, chosen so the
    view stays within ``plan.tokens_after``."""
    if not plan.fits:
        raise ValueError("a compaction plan that does not fit cannot be recorded")
    return CompactionFields(
        replaced_versions=plan.replaced_versions,
        summary="",
        method="truncation",
        tokens_before=plan.tokens_before,
        tokens_after=plan.truncation_tokens_after,
        kept_chars=plan.truncation_kept_chars,
    )


# -- rendering -------------------------------------------------------------------------------


def compacted_content(content: str) -> str:
    """What a tool result summarised in the system prompt is replaced by."""
    return _dumps(
        {
            "status": "compacted",
            "note": (
                f"[compacted by agentledger: {len(content)} characters summarised in the "
                "system prompt]"
            ),
        }
    )


def truncated_content(content: str, kept_chars: int) -> str:
    """What a truncated tool result is replaced by: its first ``kept_chars`` characters (the
    whole content if that is all of it) and how many were removed."""
    if kept_chars >= len(content):
        return content
    kept_chars = max(kept_chars, 0)
    return _dumps(
        {
            "status": "truncated",
            "head": content[:kept_chars],
            "note": (f"[truncated by agentledger: {len(content) - kept_chars} characters removed]"),
        }
    )


def _replaced(message: ToolResultMessage, compaction: MemoryCompacted) -> ToolResultMessage:
    if compaction.method == "truncation":
        content = truncated_content(message.content, compaction.kept_chars)
    else:
        content = compacted_content(message.content)
    return ToolResultMessage(
        tool_call_id=message.tool_call_id, tool_name=message.tool_name, content=content
    )


def _appended(host: str | None, has_summaries: bool, summary: str) -> str:
    """The summary message's content once ``summary`` is added to it; ``host`` is its content
    so far (``None``: no system message yet) and ``has_summaries`` whether it has the heading.

    The one place the summary block is laid out, so a plan's projection and the view agree.
    """
    if host is None:
        return SUMMARY_HEADING + _SEPARATOR + summary
    if has_summaries:
        return host + _SEPARATOR + summary
    return host + _SEPARATOR + SUMMARY_HEADING + _SEPARATOR + summary


def _with_summaries(view: list[Message], summaries: Sequence[str]) -> list[Message]:
    if not summaries:
        return view
    index = next((i for i, m in enumerate(view) if isinstance(m, SystemMessage)), None)
    host = _appended(None if index is None else view[index].content, False, summaries[0])
    for summary in summaries[1:]:
        host = _appended(host, True, summary)
    if index is None:
        return [SystemMessage(content=host), *view]
    view[index] = SystemMessage(content=host)
    return view


def _replacing(compactions: Sequence[MemoryCompacted]) -> dict[int, MemoryCompacted]:
    """Which compaction replaces each version: the first to name it."""
    replacing: dict[int, MemoryCompacted] = {}
    for compaction in compactions:
        for version in compaction.replaced_versions:
            replacing.setdefault(version, compaction)
    return replacing


def _message_tokens(message: Message, estimator: Estimator) -> int:
    match message:
        case AssistantMessage():
            parts = [message.content]
            for call in message.tool_calls:
                parts += (call.id, call.name, call.arguments)
            text = "\n".join(parts)
        case ToolResultMessage():
            text = message.tool_call_id + "\n" + message.content
        case _:
            text = message.content
    return MESSAGE_OVERHEAD_TOKENS + estimator(text)


def _dumps(body: dict[str, str]) -> str:
    # Sorted and compact like every tool result, so a replayed run sends the same bytes.
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_parallel(messages: Sequence[Message], versions: Sequence[int]) -> None:
    if len(messages) != len(versions):
        raise ValueError(
            f"{len(messages)} messages but {len(versions)} versions: they must be parallel"
        )


# -- planning --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A tool result that may be compacted, with its token counts as it is, as a stub, and at
    most once replaced (the larger of the stub and an empty truncation)."""

    version: int
    message: ToolResultMessage
    tokens: int
    stub: int
    floor: int


def _candidates(
    messages: Sequence[Message],
    versions: Sequence[int],
    compactions: Sequence[MemoryCompacted],
    policy: MemoryPolicy,
) -> list[_Candidate]:
    """The tool results a new compaction may replace, oldest first."""
    replaced = {v for c in compactions for v in c.replaced_versions}
    estimator = policy.estimator
    candidates: list[_Candidate] = []
    for message, version in zip(
        messages[: _recent_turns_start(messages, policy.keep_recent_turns)], versions, strict=False
    ):
        if not isinstance(message, ToolResultMessage) or version in replaced:
            continue
        tokens = _message_tokens(message, estimator)
        stub = _message_tokens(
            _with_content(message, compacted_content(message.content)), estimator
        )
        empty = _with_content(message, truncated_content(message.content, 0))
        floor = max(stub, _message_tokens(empty, estimator))
        if floor < tokens:
            candidates.append(_Candidate(version, message, tokens, stub, floor))
    return candidates


def _recent_turns_start(messages: Sequence[Message], keep_recent_turns: int) -> int:
    """The index of the first message of the last ``keep_recent_turns`` turns."""
    if keep_recent_turns == 0:
        return len(messages)
    turns = [i for i, m in enumerate(messages) if isinstance(m, AssistantMessage)]
    return 0 if len(turns) < keep_recent_turns else turns[-keep_recent_turns]


def _truncation(chosen: Sequence[_Candidate], budget: int, estimator: Estimator) -> tuple[int, int]:
    """The most characters a truncation can keep of each chosen result with their tokens
    within ``budget``, and those tokens. Keeping none is within it by construction (``floor``)."""

    def tokens(kept_chars: int) -> int:
        return sum(
            _message_tokens(
                _with_content(c.message, truncated_content(c.message.content, kept_chars)),
                estimator,
            )
            for c in chosen
        )

    low, high = 0, max(len(c.message.content) for c in chosen) + 1
    while high - low > 1:  # tokens(low) is within budget; high is not known to be
        middle = (low + high) // 2
        if tokens(middle) <= budget:
            low = middle
        else:
            high = middle
    return low, tokens(low)


def _with_content(message: ToolResultMessage, content: str) -> ToolResultMessage:
    return ToolResultMessage(
        tool_call_id=message.tool_call_id, tool_name=message.tool_name, content=content
    )
