"""OpenTelemetry traces of runs, live and after the fact, after the GenAI semantic conventions.

A run's events already form a span tree; this package turns it into OpenTelemetry spans with
the recorded times and durations: ``invoke_agent`` for the run, ``chat`` for each model call
attempt, ``execute_tool`` for each tool call. The trace id comes from the run id, so a run
exported live and again next week is one trace::

    sink = OtelSink(otlp_exporter())          # OTEL_EXPORTER_OTLP_ENDPOINT is honoured
    async with Engine(store, sink=sink) as engine:
        await engine.run(agent, "Paris?")
    sink.shutdown()

    exporter = otlp_exporter("http://collector:4318")
    await export_run(store, "run-id", exporter)      # any recorded run, with its recorded times
    exporter.shutdown()

- ``build_spans(events)``: the pure builder (no extra needed): events -> ``SpanRecord`` s.
- ``export_run(store, run_id, exporter)`` / ``export_runs(store, exporter)``: recorded runs.
- ``OtelSink(exporter)``: live, as ``Engine(sink=...)`` (``combine_sinks`` adds others).
- ``otlp_exporter()`` (OTLP protobuf over HTTP) and ``console_exporter()``.

Everything but the builder needs the ``otel`` extra (``pip install 'agentledger[otel]'``);
without it they raise ``OtelNotInstalledError``, an ``ImportError`` that says so.
"""

from ._builder import SpanBuilder, build_spans
from ._errors import OtelExportError, OtelNotInstalledError
from ._export import ExportSummary, export_run, export_runs, stored_runs
from ._exporters import console_exporter, otlp_endpoint, otlp_exporter
from ._live import OtelSink
from ._providers import ProviderOf, default_provider
from ._records import AttributeValue, SpanEventRecord, SpanRecord, run_trace_id, span_id_of

__all__ = [
    "AttributeValue",
    "ExportSummary",
    "OtelExportError",
    "OtelNotInstalledError",
    "OtelSink",
    "ProviderOf",
    "SpanBuilder",
    "SpanEventRecord",
    "SpanRecord",
    "build_spans",
    "console_exporter",
    "default_provider",
    "export_run",
    "export_runs",
    "otlp_endpoint",
    "otlp_exporter",
    "run_trace_id",
    "span_id_of",
    "stored_runs",
]
