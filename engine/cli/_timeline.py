"""A run's events as a tree of spans: turns, model calls (with their attempts, fallbacks and
budget), tool calls (with their tiers), each holding its events in log order.

Every event carries its span and its parent span (pattern 3), so the tree is read from the
log, not guessed from the order of events. A damaged event has no readable span: it is kept at
the top, where it happened in the log, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from agentledger.events import CorruptEventError, Event, RecordedEvent
from agentledger.projections import ParkedStream


@dataclass(frozen=True)
class Entry:
    """One event of the run: decoded, or the reason it could not be."""

    version: int
    event: Event | None
    damage: str | None = None


@dataclass
class Span:
    """A span of the run and what happened in it: its events and child spans, in log order.

    A model call's attempts are spans of their own (one request each); ``number`` counts the
    run's model calls from 1 (``show --context N`` names them so), the same for every attempt
    of one call (its retries and fallbacks), and ``attempt`` counts those from 1.
    """

    span_id: str
    items: list[Entry | Span] = field(default_factory=list)
    number: int | None = None
    attempt: int = 1

    def entries(self) -> Iterator[Entry]:
        """This span's own events (not its children's)."""
        return (item for item in self.items if isinstance(item, Entry))

    def events(self) -> list[Event]:
        """This span's own decoded events."""
        return [e.event for e in self.entries() if e.event is not None]

    def children(self) -> Iterator[Span]:
        """The spans under this one."""
        return (item for item in self.items if isinstance(item, Span))

    def all_events(self) -> Iterator[Event]:
        """This span's events and those of every span under it."""
        for item in self.items:
            if isinstance(item, Span):
                yield from item.all_events()
            elif item.event is not None:
                yield item.event

    @property
    def kind(self) -> str:
        """``turn``, ``model`` (a model call), ``tool`` (a tool call), or ``other``."""
        types = {event.type for event in self.events()}
        if "turn_started" in types:
            return "turn"
        if types & {"model_call_requested", "model_call_responded", "model_call_failed"}:
            return "model"
        if any(t.startswith(("tool_", "confirmation_", "sub_agent_")) for t in types):
            return "tool"
        return "other"

    def window(self) -> tuple[datetime, datetime] | None:
        """When the span's first and last events (children's included) happened."""
        times = [event.at for event in self.all_events()]
        return (min(times), max(times)) if times else None

    def cost(self) -> Decimal:
        """What the model calls in this span (and under it) cost, from their replies."""
        return sum(
            (e.cost_usd for e in self.all_events() if e.type == "model_call_responded"),
            Decimal(0),
        )


@dataclass(frozen=True)
class Timeline:
    """A run's span tree: ``root`` is the run's span; ``model_calls`` by number (from 1)."""

    root: Span
    model_calls: tuple[tuple[Span, ...], ...]
    """Each model call's attempts, in order; call N is ``model_calls[N - 1]``."""
    damage: tuple[Entry, ...]
    parked: str | None
    """Where and why the run is parked (its first damaged event), if it is."""


def build_timeline(recorded: Sequence[RecordedEvent]) -> Timeline:
    """The span tree of one run's events (its stream, in version order)."""
    root = Span("")
    spans: dict[str, Span] = {}
    calls: list[list[Span]] = []
    damage: list[Entry] = []
    parked: str | None = None
    for item in recorded:
        try:
            event = item.event
        except CorruptEventError as exc:
            entry = Entry(item.version, None, exc.reason)
            parked = parked or ParkedStream.of(exc).describe()
            damage.append(entry)
            root.items.append(entry)
            continue
        span = spans.get(event.span_id)
        if span is None:
            if not spans and event.parent_span_id is None:
                span = root  # the run's own span
                root.span_id = event.span_id
            else:
                span = Span(event.span_id)
                parent = spans.get(event.parent_span_id or "", root)
                parent.items.append(span)
            spans[event.span_id] = span
        if event.type == "model_call_requested" and span.number is None:
            if calls and _asks_again(calls[-1][-1], event.purpose):
                calls[-1].append(span)
                span.attempt = len(calls[-1])
            else:
                calls.append([span])
            span.number = len(calls)
        span.items.append(Entry(item.version, event))
    return Timeline(root, tuple(tuple(c) for c in calls), tuple(damage), parked)


_ASKED_AGAIN = {"model_call_retried", "model_fell_back", "model_call_interrupted"}


def _asks_again(attempt: Span, purpose: str) -> bool:
    """Whether a request is another attempt of the call ``attempt`` belongs to: that attempt
    got no reply and was retried, fell back or was cut off (the fallback's record is in the
    turn's span, after the attempt's)."""
    events = attempt.events()
    if any(e.type == "model_call_responded" for e in events):
        return False
    first = events[0] if events else None
    return (
        first is not None
        and first.type == "model_call_requested"
        and first.purpose == purpose
        and any(e.type in _ASKED_AGAIN or e.type == "model_call_failed" for e in events)
    )
