"""Where spans go: OTLP over HTTP (a collector, Jaeger, Tempo, Honeycomb...) or the console."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from ._sdk import require_sdk

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

_TRACES_PATH = "/v1/traces"


def otlp_endpoint(endpoint: str) -> str:
    """The traces URL for ``endpoint``: a URL without a path (``http://collector:4318``) gets
    ``/v1/traces``, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` does; a URL with a path is kept."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + _TRACES_PATH
    return endpoint


def otlp_exporter(
    endpoint: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> SpanExporter:
    """An exporter of spans as OTLP protobuf over HTTP.

    Without ``endpoint``, the SDK's settings apply: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``, else ``http://localhost:4318/v1/traces``
    (and ``OTEL_EXPORTER_OTLP_HEADERS`` when ``headers`` is not given). Call its ``shutdown()``
    when done.
    """
    require_sdk()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=None if endpoint is None else otlp_endpoint(endpoint),
        headers=dict(headers) if headers is not None else None,
        timeout=timeout,
    )


def console_exporter(out: IO[str] | None = None) -> SpanExporter:
    """An exporter that writes each span as a JSON object to ``out`` (default: stdout)."""
    require_sdk()
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(out=out if out is not None else sys.stdout)
