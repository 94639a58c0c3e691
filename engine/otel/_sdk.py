"""The only module that touches the OpenTelemetry SDK: span records -> ``ReadableSpan``.

A ``ReadableSpan`` made here carries the ids and recorded times of its record and goes straight
to a ``SpanExporter`` (or a span processor); no tracer is involved, because a tracer would draw
new ids and stamp the time of the export.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING

from ._errors import OtelNotInstalledError
from ._records import SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCOPE = "agentledger"


def require_sdk() -> None:
    """Raise ``OtelNotInstalledError`` unless the ``otel`` extra is installed."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise OtelNotInstalledError(exc.name) from None


def nanos(at: datetime) -> int:
    """``at`` as integer nanoseconds since the epoch, exactly (no float on the way)."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


def resource(service_name: str | None) -> Resource:
    """The resource every exported span names: ``service.name`` is ``service_name``, else
    ``OTEL_SERVICE_NAME``, else ``agentledger`` (``OTEL_RESOURCE_ATTRIBUTES`` is honoured)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    if service_name is None and os.environ.get("OTEL_SERVICE_NAME"):
        return Resource.create({})
    return Resource.create({SERVICE_NAME: service_name or "agentledger"})


def to_readable(record: SpanRecord, on: Resource) -> ReadableSpan:
    """The SDK span of ``record``, with its ids, parent, times, status, events and links."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED)

    def context(span_id: int, trace_id: int = record.trace_id) -> SpanContext:
        return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)

    status = {
        "unset": Status(StatusCode.UNSET),
        "ok": Status(StatusCode.OK),
        "error": Status(StatusCode.ERROR, record.status_message),
    }[record.status]
    return ReadableSpan(
        name=record.name,
        context=context(record.span_id),
        parent=None if record.parent_span_id is None else context(record.parent_span_id),
        resource=on,
        attributes=dict(record.attributes),
        events=[Event(e.name, dict(e.attributes), nanos(e.at)) for e in record.events],
        links=[Link(context(span, trace)) for trace, span in record.links],
        kind=SpanKind.CLIENT if record.kind == "client" else SpanKind.INTERNAL,
        status=status,
        start_time=nanos(record.start),
        end_time=nanos(record.end),
        instrumentation_scope=InstrumentationScope(_SCOPE, _version()),
    )


@cache
def _version() -> str | None:
    try:
        return metadata.version("agentledger")
    except metadata.PackageNotFoundError:
        return None
