"""What the builder makes: span records (plain data, no OpenTelemetry types) and their ids.

Ids are derived from the run's log, never drawn at random: the trace id from the run id, each
span id from the run id and the span id its events carry. Exporting a run twice, live and
again next week, gives the same trace, and a backend that dedupes by id sees one trace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

AttributeValue = str | bool | int | float | tuple[str, ...]
"""An attribute value OpenTelemetry accepts (a sequence is a tuple of strings here)."""

SpanKindName = Literal["internal", "client"]
StatusName = Literal["unset", "ok", "error"]


@dataclass(frozen=True, slots=True)
class SpanEventRecord:
    """Something that happened inside a span at ``at`` (a retry, a skipped tier, a verdict)."""

    name: str
    at: datetime
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span of a run's trace, with its recorded times, ready for any exporter.

    ``source`` is the span id the run's events carry (``span_id`` of ``EventBase``) that this
    span was built from; ``links`` are ``(trace_id, span_id)`` pairs (a forked run links to the
    root of the run it was forked from).
    """

    name: str
    kind: SpanKindName
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start: datetime
    end: datetime
    attributes: Mapping[str, AttributeValue]
    status: StatusName = "unset"
    status_message: str | None = None
    events: tuple[SpanEventRecord, ...] = ()
    links: tuple[tuple[int, int], ...] = ()
    source: str = ""


def _digest(*parts: str) -> bytes:
    # NUL cannot occur in run ids or span ids (they are checked identifiers), so the join is
    # unambiguous.
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def run_trace_id(run_id: str) -> int:
    """The 128-bit OpenTelemetry trace id of a run: the same on every export of it."""
    return int.from_bytes(_digest("agentledger-trace", run_id)[:16], "big") or 1


def span_id_of(run_id: str, source: str) -> int:
    """The 64-bit OpenTelemetry span id of the span the run's events call ``source``.

    The run's own span is ``span_id_of(run_id, run_id)``: its events carry the run id as span.
    """
    return int.from_bytes(_digest("agentledger-span", run_id, source)[:8], "big") or 1
