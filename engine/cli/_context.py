"""``show RUN --context N``: the exact messages model call N was sent, rebuilt from the log,
and what changed since the run's previous agent call.

The engine builds an agent call's messages from the run's state alone
(``engine.loop._requests.build_request``): the fold of the run's events before the request,
through the memory view (compactions applied). This does the same with the same functions
(``fold_run``, ``memory_view``), so what is shown is what was sent, and the count is checked
against the ``message_count`` the request recorded. A message that vanished or shrank between
two calls shows next to the compaction or truncation that did it.

A summary's or a judge's request is built from the agent's configuration (its memory policy, its
judge), which the log does not hold; for those calls this says so rather than guess.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from rich.text import Text

from agentledger.events import CorruptEventError, MemoryCompacted, ModelCallRequested, RecordedEvent
from agentledger.projections import Message, fold_run, memory_view

from ._details import detail
from ._errors import CliError, NotFoundError
from ._output import Output, text
from ._timeline import Span, Timeline

_MESSAGE = TypeAdapter(Message)


@dataclass(frozen=True)
class SentContext:
    """The messages of one agent model call, rebuilt, with where its request is in the log."""

    number: int
    request: ModelCallRequested
    version: int
    messages: tuple[Message, ...]


def _request(span: Span) -> tuple[ModelCallRequested, int]:
    for entry in span.entries():
        if isinstance(entry.event, ModelCallRequested):
            return entry.event, entry.version
    raise AssertionError("a numbered model call has a request")  # build_timeline numbers them so


def rebuild(events: Sequence[RecordedEvent], span: Span) -> SentContext:
    """What model call ``span`` was sent: the run's state before its request, through the
    memory view. ``CliError`` for a run damaged before the request."""
    request, version = _request(span)
    before = [r for r in events if r.version < version]
    try:
        state = fold_run(before)
    except CorruptEventError as exc:
        raise CliError(
            f"cannot rebuild model call #{span.number}: event v{exc.version} before it is damaged"
        ) from None
    messages = memory_view(state.messages, state.message_versions, state.compactions)
    assert span.number is not None
    return SentContext(span.number, request, version, tuple(messages))


def _agent_call(timeline: Timeline, number: int) -> Span:
    calls = timeline.model_calls
    if not 1 <= number <= len(calls):
        raise NotFoundError(f"model call #{number} is not in this run (it has {len(calls)})")
    span = calls[number - 1][0]  # every attempt of a call is sent the same messages
    request, _ = _request(span)
    if request.purpose != "agent":
        raise CliError(
            f"model call #{number} is a {request.purpose} call: its request is built from the "
            "agent's configuration, which the log does not hold (only agent calls are rebuilt)"
        )
    return span


def _previous_agent_call(timeline: Timeline, number: int) -> Span | None:
    for attempts in reversed(timeline.model_calls[: number - 1]):
        if _request(attempts[0])[0].purpose == "agent":
            return attempts[0]
    return None


def _key(message: Message) -> str:
    return _MESSAGE.dump_json(message).decode()


def _who(message: Message) -> str:
    if message.role == "tool":
        return f"tool {message.tool_name} [{message.tool_call_id}]"
    return message.role


def _body(message: Message) -> list[str]:
    lines = message.content.splitlines() if message.content else []
    if message.role == "assistant":
        lines += [f"-> {c.name}({c.arguments}) [{c.id}]" for c in message.tool_calls]
    return lines or [""]


def _print_message(out: Output, mark: str, index: int, message: Message, style: str) -> None:
    body = _body(message)
    out.print(
        Text.assemble(
            text(f"{mark} {index:>3} ", style),
            text(_who(message), "bold"),
            " ",
            text(body[0], style),
        )
    )
    for line in body[1:]:
        out.print(Text.assemble("        ", text(line, style)) if line else Text())


@dataclass(frozen=True)
class Diff:
    """How call N's messages differ from the previous call's (indices from 1, in call N)."""

    added: tuple[int, ...]
    changed: tuple[tuple[int, Message, Message], ...]
    removed: tuple[Message, ...]


def diff(before: Sequence[Message], after: Sequence[Message]) -> Diff:
    """What was added, changed (replaced in place, e.g. compacted) and removed."""
    matcher = difflib.SequenceMatcher(
        None, [_key(m) for m in before], [_key(m) for m in after], autojunk=False
    )
    added: list[int] = []
    changed: list[tuple[int, Message, Message]] = []
    removed: list[Message] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        pairs = min(i2 - i1, j2 - j1) if op == "replace" else 0
        changed += [(j1 + k + 1, before[i1 + k], after[j1 + k]) for k in range(pairs)]
        added += range(j1 + pairs + 1, j2 + 1)
        removed += before[i1 + pairs : i2]
    return Diff(tuple(added), tuple(changed), tuple(removed))


def _compactions(
    events: Sequence[RecordedEvent], after: int, before: int
) -> list[tuple[int, MemoryCompacted]]:
    found = []
    for recorded in events:
        if after < recorded.version < before and recorded.type == "memory_compacted":
            event = recorded.event
            assert isinstance(event, MemoryCompacted)
            found.append((recorded.version, event))
    return found


def _dump(message: Message) -> Any:
    return message.model_dump(mode="json")


def context_json(
    run_id: str,
    sent: SentContext,
    previous: SentContext | None,
    changes: Diff | None,
    compactions: list[tuple[int, MemoryCompacted]],
) -> Any:
    """What ``show --context N --json`` prints."""
    return {
        "run_id": run_id,
        "call": sent.number,
        "version": sent.version,
        "model": sent.request.model,
        "recorded_message_count": sent.request.message_count,
        "messages": [_dump(m) for m in sent.messages],
        "previous_call": None
        if previous is None
        else {"call": previous.number, "version": previous.version},
        "added": [] if changes is None else list(changes.added),
        "changed": []
        if changes is None
        else [{"index": i, "before": _dump(b), "after": _dump(a)} for i, b, a in changes.changed],
        "removed": [] if changes is None else [_dump(m) for m in changes.removed],
        "compactions": [{"version": v, **c.model_dump(mode="json")} for v, c in compactions],
    }


def _render(
    out: Output,
    sent: SentContext,
    previous: SentContext | None,
    changes: Diff | None,
    compactions: list[tuple[int, MemoryCompacted]],
) -> None:
    recorded = sent.request.message_count
    out.print(
        Text.assemble(
            text(f"model call #{sent.number}", "bold blue"),
            text(
                f" (v{sent.version}, {sent.request.model}) was sent {len(sent.messages)} "
                f"messages, rebuilt from events v1-v{sent.version - 1}"
            ),
        )
    )
    if recorded and recorded != len(sent.messages):
        out.line(
            f"warning: the request recorded {recorded} messages; the log rebuilds "
            f"{len(sent.messages)} (written by another version of the engine?)",
            "bold red",
        )
    added = set() if changes is None else set(changes.added)
    changed = {} if changes is None else {i: b for i, b, _ in changes.changed}
    for index, message in enumerate(sent.messages, 1):
        mark, style = (
            ("+", "green") if index in added else ("~", "yellow") if index in changed else (" ", "")
        )
        _print_message(out, mark, index, message, style)
    out.line()
    if previous is None or changes is None:
        out.line("the run's first agent call: nothing to compare with")
        return
    out.line(
        f"since model call #{previous.number} (v{previous.version}, {len(previous.messages)} "
        f"messages): {len(changes.added)} added, {len(changes.changed)} changed, "
        f"{len(changes.removed)} removed"
    )
    for index, before, after in changes.changed:
        out.line(f"~ {index:>3} {_who(after)} was:", "yellow")
        for line in _body(before):
            out.print(Text.assemble("        ", text(line, "dim")) if line else Text())
    for message in changes.removed:
        _print_message(out, "-", 0, message, "red")
    for version, compaction in compactions:
        out.print(
            Text.assemble(text(f"v{version} memory_compacted ", "yellow"), text(detail(compaction)))
        )


def show_context(
    out: Output,
    run_id: str,
    events: list[RecordedEvent],
    timeline: Timeline,
    number: int,
    *,
    as_json: bool,
) -> int:
    """``show RUN --context N``: print call N's messages and the diff against the call before."""
    sent = rebuild(events, _agent_call(timeline, number))
    before = _previous_agent_call(timeline, number)
    previous = None if before is None else rebuild(events, before)
    changes = None if previous is None else diff(previous.messages, sent.messages)
    compactions = _compactions(events, 0 if previous is None else previous.version, sent.version)
    if as_json:
        out.json(context_json(run_id, sent, previous, changes, compactions))
    else:
        _render(out, sent, previous, changes, compactions)
    return 0
