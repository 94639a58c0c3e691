"""Conversations: runs that continue one another, and the history each one is sent.

A conversation is a projection; its runs stay separate streams. Two things are folded here:

- the conversation's own stream (``conversation-<id>``) holds one ``ConversationJoined`` per
  run, in order; ``fold_conversation`` lists them, and its version is what a new run expects
  when it joins (so of two runs racing to continue one conversation, one is recorded);
- a run of a conversation starts with a ``ConversationContinued`` in its own stream: the
  history it is sent, carried over from the run it follows (``carry_history``). The history is
  recorded in the run, not read again later, so a resumed run or a replay on another machine
  needs the run's own stream only.

The history is each earlier run's task and final answer as a user and an assistant message
(tool turns stay in their run: they were that run's work, and its answer says what came of
them). A run that ended without an answer adds nothing. Under a ``MemoryPolicy`` the history
stays within ``policy.history_tokens``: the last ``keep_recent_exchanges`` exchanges verbatim as
far as they fit, the older ones truncated into a summary of at most ``summary_max_tokens``
(newest text kept), and the event names the runs it moved into the summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from agentledger.events import ConversationContinued, ConversationJoined, Exchange, RecordedEvent

from ._memory_view import MESSAGE_OVERHEAD_TOKENS, Estimator, MemoryPolicy
from ._messages import AssistantMessage, Message, SystemMessage, UserMessage

HISTORY_SUMMARY_HEADING = "Summary of the earlier conversation:"
"""The heading under which a conversation's summary is added to the system message."""

_SEPARATOR = "\n\n"


# -- the conversation's stream ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation as its stream describes it: its runs in order, and the stream's version
    (the expected version of the next run's join)."""

    conversation_id: str
    joined: tuple[ConversationJoined, ...] = ()
    version: int = 0

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The conversation's runs, oldest first."""
        return tuple(j.run_id for j in self.joined)

    @property
    def last_run_id(self) -> str | None:
        """The run a new run of the conversation continues (``None``: no run yet)."""
        return self.joined[-1].run_id if self.joined else None


def fold_conversation(conversation_id: str, events: Sequence[RecordedEvent]) -> ConversationState:
    """Fold a conversation's stream (oldest first)."""
    joined = tuple(r.event for r in events if isinstance(r.event, ConversationJoined))
    version = events[-1].version if events else 0
    return ConversationState(conversation_id, joined, version)


@dataclass(frozen=True, slots=True)
class ConversationRun:
    """One run of a conversation: which run it follows, where it stands, its task and answer."""

    run_id: str
    follows: str | None
    status: str
    task: str
    output: str | None


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation: its runs in the order they joined it."""

    conversation_id: str
    runs: tuple[ConversationRun, ...]
    version: int
    """The version of the conversation's stream."""

    @property
    def last_run_id(self) -> str | None:
        """The run a new run of the conversation would continue."""
        return self.runs[-1].run_id if self.runs else None


# -- the history a run is sent ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class History:
    """What a new run of a conversation is sent of its earlier runs (the fields of its
    ``ConversationContinued``)."""

    summary: str
    exchanges: tuple[Exchange, ...]
    summarised_runs: tuple[str, ...]


def exchange_tokens(exchange: Exchange, estimator: Estimator) -> int:
    """What an exchange costs in a request: a user and an assistant message."""
    return 2 * MESSAGE_OVERHEAD_TOKENS + estimator(exchange.task) + estimator(exchange.answer)


def exchange_bytes(exchange: Exchange) -> int:
    """What an exchange's texts take in the log (JSON)."""
    return len(orjson.dumps(exchange.task)) + len(orjson.dumps(exchange.answer))


def summary_limit(policy: MemoryPolicy) -> int:
    """The most tokens a conversation's summary may have under ``policy``."""
    return min(policy.summary_max_tokens, policy.history_tokens // 2)


def summary_room(policy: MemoryPolicy) -> int:
    """The most a conversation's summary adds to a request: its text, heading and separators,
    and a message of its own when the run has no system prompt."""
    estimate = policy.estimator
    return (
        summary_limit(policy)
        + MESSAGE_OVERHEAD_TOKENS
        + estimate(HISTORY_SUMMARY_HEADING)
        + 2 * estimate(_SEPARATOR)
    )


def carry_history(
    previous: ConversationContinued | None,
    exchange: Exchange | None,
    policy: MemoryPolicy | None,
    *,
    max_bytes: int | None = None,
) -> History:
    """The history of a run that follows a run whose history was ``previous`` and whose own
    task and answer are ``exchange`` (``None``: it ended without an answer).

    Without a policy every exchange is kept, as far as their JSON fits in ``max_bytes`` (the
    oldest are dropped, and named, beyond it: an event must stay storable). With one, the
    history's tokens (see ``history_tokens``) stay within ``policy.history_tokens`` whenever
    that is at least ``summary_room(policy)``: exchanges are kept newest first, at most
    ``keep_recent_exchanges``, while they fit beside the summary's room; the rest are appended
    to the summary, whose newest ``summary_limit(policy)`` tokens are kept.
    """
    summary = previous.summary if previous is not None else ""
    exchanges = previous.exchanges if previous is not None else ()
    if exchange is not None:
        exchanges = (*exchanges, exchange)
    if policy is None:
        kept = len(exchanges)
        if max_bytes is not None:
            size = sum(exchange_bytes(e) for e in exchanges)
            while kept and size > max_bytes:
                size -= exchange_bytes(exchanges[len(exchanges) - kept])
                kept -= 1
        dropped = exchanges[: len(exchanges) - kept]
        return History(summary, exchanges[len(dropped) :], tuple(e.run_id for e in dropped))
    estimator = policy.estimator
    used = summary_room(policy)
    kept = 0
    for candidate in reversed(exchanges[max(len(exchanges) - policy.keep_recent_exchanges, 0) :]):
        cost = exchange_tokens(candidate, estimator)
        if used + cost > policy.history_tokens:
            break
        used += cost
        kept += 1
    dropped = exchanges[: len(exchanges) - kept]
    if not dropped:
        # Clipped again: the run followed may have been of an agent with a larger summary.
        return History(clip_start(summary, summary_limit(policy), estimator), exchanges, ())
    lines = [summary] if summary else []
    lines += [f"User: {e.task}\nAssistant: {e.answer}" for e in dropped]
    return History(
        clip_start(_SEPARATOR.join(lines), summary_limit(policy), estimator),
        exchanges[len(dropped) :],
        tuple(e.run_id for e in dropped),
    )


def clip_start(text: str, limit: int, estimator: Estimator) -> str:
    """The shortest end of ``text`` cut at a start within ``limit`` tokens: the newest part of
    a running summary is kept, the oldest falls off."""
    if estimator(text) <= limit:
        return text
    low, high = 0, len(text)  # text[high:] fits (it is empty), text[low:] does not
    while high - low > 1:
        middle = (low + high) // 2
        if estimator(text[middle:]) <= limit:
            high = middle
        else:
            low = middle
    return text[high:].lstrip()


def history_tokens(event: ConversationContinued, estimator: Estimator) -> int:
    """An upper bound of what ``event``'s history adds to a request (``estimator`` must be
    subadditive, as ``MemoryPolicy`` requires)."""
    total = sum(exchange_tokens(e, estimator) for e in event.exchanges)
    if event.summary:
        total += (
            MESSAGE_OVERHEAD_TOKENS
            + estimator(HISTORY_SUMMARY_HEADING)
            + 2 * estimator(_SEPARATOR)
            + estimator(event.summary)
        )
    return total


def with_history(
    messages: Sequence[Message],
    versions: Sequence[int],
    event: ConversationContinued,
    version: int,
) -> tuple[tuple[Message, ...], tuple[int, ...]]:
    """A new run's messages (its system prompt, if any, then its task) with ``event``'s history:
    the summary added to the system message (one is made when there is none), the exchanges as
    user and assistant messages before the task. History messages carry ``version``."""
    head, head_versions = list(messages[:-1]), list(versions[:-1])
    if event.summary:
        block = HISTORY_SUMMARY_HEADING + _SEPARATOR + event.summary
        if head and isinstance(head[0], SystemMessage):
            head[0] = SystemMessage(content=head[0].content + _SEPARATOR + block)
        else:
            head.insert(0, SystemMessage(content=block))
            head_versions.insert(0, version)
    turns: list[Message] = []
    for exchange in event.exchanges:
        turns += [UserMessage(content=exchange.task), AssistantMessage(content=exchange.answer)]
    return (
        (*head, *turns, *messages[-1:]),
        (*head_versions, *(version,) * len(turns), *versions[-1:]),
    )
