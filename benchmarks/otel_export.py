"""OpenTelemetry export: what the live sink costs a run, and how fast recorded runs are exported.

Each run is the test suite's richest one (``tests/otel_runs.py``): 2 turns, 6 model attempts
(server errors, retries, a fallback), 2 tool calls (one rejected, one whose first tier fails):
10 spans, 9 once the failing tier's breaker is open (a skipped tier is a span event). Runs are
recorded in a SQLite file, in turns without a sink and with a batching ``OtelSink`` (in-memory
exporter), then exported after the fact with ``export_runs``: to the SDK's in-memory exporter,
and as OTLP protobuf over HTTP to a receiver in this process. The live spans are compared with
the exported ones.

    python benchmarks/otel_export.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from otel_runs import engine, rich_run, rich_run_in

from agentledger.engine.otel import OtelSink, export_runs, otlp_exporter
from agentledger.events import SqliteEventStore


class _Receiver(BaseHTTPRequestHandler):
    spans = 0
    requests = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self.lock:
            _Receiver.spans += count
            _Receiver.requests += 1
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _key(span: ReadableSpan) -> tuple[Any, ...]:
    return (
        span.context.span_id,
        span.parent.span_id if span.parent else None,
        span.name,
        span.start_time,
        span.end_time,
        tuple(sorted((span.attributes or {}).items())),
        span.status.status_code,
        tuple((e.name, e.timestamp) for e in span.events),
    )


async def _record(path: Path, runs: int, sink: OtelSink) -> tuple[float, float]:
    """Seconds spent on ``runs`` runs by an engine without a sink and on ``runs`` by one with
    ``sink``, on one store, taken in turns so that the store's growth weighs on both alike."""
    spent = [0.0, 0.0]
    async with (
        SqliteEventStore(path) as store,
        engine(store, None, ids="bare") as bare,
        engine(store, sink, ids="live") as live,
    ):
        for i in range(runs):
            for with_sink, running in ((False, bare), (True, live)):
                started = time.perf_counter()
                await rich_run_in(running, f"{'live' if with_sink else 'bare'}{i}")
                spent[with_sink] += time.perf_counter() - started
    return spent[0], spent[1]


async def main(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.db"
        async with SqliteEventStore(path) as store:  # imports, the provider table, the file
            await rich_run(store, OtelSink(InMemorySpanExporter(), batch=False), run_id="warm")
        live_exporter = InMemorySpanExporter()
        sink = OtelSink(live_exporter)
        bare, with_sink = await _record(path, runs, sink)
        sink.shutdown()
        live = [s for s in live_exporter.get_finished_spans()]

        later = InMemorySpanExporter()
        async with SqliteEventStore(path) as store:
            ids = [f"live{i}" for i in range(runs)]
            started = time.perf_counter()
            summary = await export_runs(store, later, ids)
            in_memory = time.perf_counter() - started
            every = await export_runs(store, InMemorySpanExporter())

            server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            exporter = otlp_exporter(f"http://127.0.0.1:{server.server_address[1]}")
            try:
                started = time.perf_counter()
                over_http = await export_runs(store, exporter, ids)
                http_s = time.perf_counter() - started
            finally:
                exporter.shutdown()
                server.shutdown()
                server.server_close()
    mismatched = len(set(map(_key, live)) ^ set(map(_key, later.get_finished_spans())))
    return {
        "benchmark": "otel_export",
        "store": "sqlite (file)",
        "runs": runs,
        "spans_per_run": summary.spans / runs,
        "us_per_run_without_sink": round(bare / runs * 1e6, 1),
        "us_per_run_with_otel_sink": round(with_sink / runs * 1e6, 1),
        "live_spans": len(live),
        "live_spans_differing_from_export": mismatched,
        "export_in_memory_spans_per_s": round(summary.spans / in_memory),
        "export_otlp_http_spans_per_s": round(over_http.spans / http_s),
        "otlp_http_requests": _Receiver.requests,
        "otlp_http_spans_received": _Receiver.spans,
        "otlp_http_spans_sent": over_http.spans,
        "runs_in_store": every.runs,
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, 20 if options.quick else 300)))
