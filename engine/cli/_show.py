"""``agentledger show RUN``: a summary of the run, then its timeline as a tree of spans, then
the full error of a failure and the damage of a parked run. ``--context N`` is in ``_context``.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import orjson
from rich.text import Text
from rich.tree import Tree

from agentledger.events import (
    CorruptEventError,
    Event,
    EventStore,
    ModelCallRequested,
    RecordedEvent,
    event_line,
)
from agentledger.projections import RunIndex, RunSummary, fold, run_stream

from ._context import show_context
from ._details import clip, detail, millis, money
from ._escape import safe_text
from ._output import Output, lines, plural, text
from ._runs import RunRow, resolve_run, run_json, status_text
from ._store import open_store
from ._timeline import Entry, Span, Timeline, build_timeline

_BAD = {
    "run_failed",
    "model_call_failed",
    "tool_tier_failed",
    "tool_arguments_rejected",
    "tool_call_degraded",
    "tool_outcome_unknown",
    "budget_exceeded",
    "confirmation_denied",
}
_WARN = {
    "model_call_retried",
    "model_fell_back",
    "model_call_interrupted",
    "tool_tier_skipped",
    "revision_requested",
    "run_paused",
    "tool_call_claimed",
    "memory_compacted",
}
_GOOD = {"run_completed", "tool_call_succeeded", "tool_result_reused", "model_call_responded"}


def _style(event_type: str) -> str:
    if event_type in _BAD:
        return "red"
    if event_type in _WARN:
        return "yellow"
    if event_type in _GOOD:
        return "green"
    if event_type.startswith("budget_"):
        return "magenta"
    return ""


def _offset(at: datetime, start: datetime | None) -> str:
    return "" if start is None else f"+{(at - start).total_seconds():.3f}s "


def entry_text(entry: Entry, start: datetime | None) -> Text:
    """One event's line: time since the run started, version, type, detail."""
    if entry.event is None:
        return Text.assemble(
            text(f"v{entry.version} ", "dim"), text("(corrupt) ", "bold red"), text(entry.damage)
        )
    event = entry.event
    return Text.assemble(
        text(_offset(event.at, start), "dim"),
        text(f"v{entry.version} ", "dim"),
        text(event.type, _style(event.type)),
        " ",
        lines(_short_failure(event) if event.type == "run_failed" else detail(event)),
    )


def _short_failure(event: Event) -> str:
    # The tree keeps one line for the failure; the whole error follows the tree.
    assert event.type == "run_failed"
    first = (event.message.splitlines() or [""])[0]
    whole = first == event.message and len(first) <= 160
    return f"{event.error_type}: {clip(first, 160)}" + ("" if whole else " (in full below)")


def _tool_outcome(events: list[Event]) -> tuple[str, str]:
    """How a tool call ended, from its span's events (the last outcome wins)."""
    for event in reversed(events):
        match event.type:
            case "tool_call_succeeded":
                return f"ok via {event.tier}", "green"
            case "tool_result_reused":
                return "cache hit, not run again", "green"
            case "tool_call_degraded":
                return "degraded: every tier failed", "red"
            case "tool_outcome_unknown":
                return "outcome unknown", "red"
            case "tool_arguments_rejected":
                return "arguments rejected", "red"
            case "confirmation_denied":
                return "denied", "red"
            case "confirmation_requested":
                return "waiting for a yes", "yellow"
    return "in flight", "yellow"


def _span_label(span: Span, start: datetime | None) -> Text:
    events = span.events()
    window = span.window()
    took = "" if window is None else f", {millis((window[1] - window[0]).total_seconds() * 1000)}"
    cost = span.cost()
    spent = f", {money(cost)}" if cost else ""
    first = events[0] if events else None
    at = text(_offset(first.at, start), "dim") if first is not None else Text()
    match span.kind:
        case "turn":
            turn = next(e for e in span.entries() if e.event and e.event.type == "turn_started")
            return Text.assemble(
                at,
                text(f"v{turn.version} ", "dim"),
                text(f"turn {getattr(turn.event, 'turn', '?')}", "bold"),
                text(f"{took}{spent}"),
            )
        case "model":
            request = next((e for e in events if isinstance(e, ModelCallRequested)), None)
            model = "?" if request is None else request.model
            purpose = "agent" if request is None else request.purpose
            attempt = "" if span.attempt == 1 else f", attempt {span.attempt}"
            return Text.assemble(
                at,
                text(f"model call #{span.number}", "bold blue"),
                text(f" {model} ({purpose}{attempt}{took}{spent})"),
            )
        case "tool":
            named = next((e for e in events if hasattr(e, "tool_name")), None)
            name = getattr(named, "tool_name", "?")
            call = getattr(named, "call_id", "?")
            outcome, style = _tool_outcome(events)
            return Text.assemble(
                at,
                text(f"tool {name}", "bold"),
                text(f" [{call}]{took}: "),
                text(outcome, style),
            )
    return Text.assemble(at, text(f"span {span.span_id}{took}"))


def _add(tree: Tree, span: Span, start: datetime | None) -> None:
    for item in span.items:
        if isinstance(item, Entry):
            if span.kind != "turn" or item.event is None or item.event.type != "turn_started":
                tree.add(entry_text(item, start))  # a turn's start is its label
            continue
        single = list(item.items)
        if len(single) == 1 and isinstance(single[0], Entry):
            tree.add(entry_text(single[0], start))  # a span of one event is that event
        else:
            _add(tree.add(_span_label(item, start)), item, start)


def render_tree(out: Output, run_id: str, timeline: Timeline) -> None:
    """The span tree: the run, its turns, their model and tool calls, each event a line."""
    first = next(timeline.root.all_events(), None)
    start = None if first is None else first.at
    tree = Tree(text(f"run {run_id}", "bold"), guide_style="dim")
    _add(tree, timeline.root, start)
    out.print(tree)


def _header(out: Output, run_id: str, row: RunSummary | None, timeline: Timeline) -> None:
    fields: list[tuple[str, Text]] = [("run", text(run_id, "cyan"))]
    if row is None:
        fields.append(("status", status_text("parked")))
    else:
        status = "parked" if timeline.damage else row.status
        flagged = text(" (flagged)", "yellow") if row.flagged else Text()
        ended = row.ended_at or row.last_event_at
        took = (ended - row.started_at).total_seconds()
        fields += [
            ("status", Text.assemble(status_text(status), flagged)),
            ("agent", text(f"{row.agent} on {row.model}")),
            ("user", text(f"{row.user_id} (surface {row.surface})")),
            (
                "started",
                text(
                    f"{row.started_at:%Y-%m-%d %H:%M:%S %Z}, {took:.3f} s, "
                    f"{plural(row.turns, 'turn')}"
                ),
            ),
            (
                "cost",
                text(
                    f"{money(row.cost_usd)}, {row.input_tokens:,} input + "
                    f"{row.output_tokens:,} output tokens, "
                    f"{plural(len(timeline.model_calls), 'model call')}"
                ),
            ),
        ]
        if row.forked_from:
            fields.append(("forked", text(f"from {row.forked_from}")))
    for event in timeline.root.events():
        if event.type == "run_started":
            if event.conversation_id:
                after = f", after {event.follows}" if event.follows else ""
                fields.append(("conversation", text(f"{event.conversation_id}{after}")))
            fields.append(("task", text(clip(event.task.replace("\n", " "), 160))))
        elif event.type == "run_completed":
            fields.append(("output", text(clip(event.output.replace("\n", " "), 160))))
        elif event.type == "run_failed":
            fields.append(("error", text(f"{event.error_type} (in full below)", "red")))
    width = max(len(key) for key, _ in fields) + 2
    for key, value in fields:
        out.print(Text.assemble(text(key.ljust(width), "dim"), value))
    out.line()


def _failure(out: Output, timeline: Timeline) -> None:
    for event in timeline.root.events():
        if event.type == "run_failed":
            out.line()
            out.line(f"error: {event.error_type}", "bold red")
            for line in event.message.splitlines() or [""]:
                out.line(f"  {line}")


def _damage(out: Output, run_id: str, timeline: Timeline) -> None:
    if timeline.parked is not None:
        out.line()
        out.line(f"parked {run_id}: {timeline.parked}", "bold red")


def _summary_row(events: list[RecordedEvent]) -> RunSummary | None:
    good = []
    for recorded in events:
        try:
            recorded.event  # noqa: B018 - decoding is the check
        except CorruptEventError:
            continue
        good.append(recorded)
    rows = fold(RunIndex(), good)
    return next(iter(rows.values()), None)


def _event_json(recorded: RecordedEvent) -> Any:
    try:
        return orjson.loads(event_line(recorded))
    except CorruptEventError as exc:
        return {"stream_id": recorded.stream_id, "version": recorded.version, "corrupt": exc.reason}


def show_json(
    run_id: str, row: RunSummary | None, timeline: Timeline, events: list[RecordedEvent]
) -> Any:
    """What ``show --json`` prints: the summary, the numbered model calls, every event."""
    summary = run_json(RunRow(run_id, row, None))
    if timeline.damage:
        summary["status"] = "parked"
    summary["parked"] = timeline.parked
    calls = []
    for number, attempts in enumerate(timeline.model_calls, 1):
        tried = []
        for span in attempts:
            for entry in span.entries():
                if isinstance(entry.event, ModelCallRequested):
                    tried.append(
                        {
                            "version": entry.version,
                            "model": entry.event.model,
                            "span_id": span.span_id,
                        }
                    )
                    break
        purpose = next(
            (e.purpose for e in attempts[0].events() if isinstance(e, ModelCallRequested)), None
        )
        calls.append({"number": number, "purpose": purpose, "attempts": tried})
    return {"run": summary, "model_calls": calls, "events": [_event_json(r) for r in events]}


async def read_run(store: EventStore, run_id: str) -> tuple[str, list[RecordedEvent]]:
    """The run an id (or an id prefix) names, and its events."""
    found = await resolve_run(store, run_id)
    return found, await store.read_stream(run_stream(found))


async def command(options: argparse.Namespace, out: Output) -> int:
    """``show RUN [--context N] [--json]``."""
    async with open_store(options.db) as store:
        run_id, events = await read_run(store, options.run_id)
    timeline = build_timeline(events)
    if options.context is not None:
        return show_context(out, run_id, events, timeline, options.context, as_json=options.json)
    row = _summary_row(events)
    if options.json:
        out.json(show_json(run_id, row, timeline, events))
        return 0
    _header(out, run_id, row, timeline)
    render_tree(out, safe_text(run_id), timeline)
    _failure(out, timeline)
    _damage(out, run_id, timeline)
    return 0
