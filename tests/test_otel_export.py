"""OpenTelemetry export through the SDK: recorded runs after the fact, live runs, OTLP/HTTP.

The SDK's ``InMemorySpanExporter`` catches what an exporter is handed; once, the spans travel
as OTLP protobuf over HTTP to a receiver in this test and are decoded there.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from otel_runs import paused_run, refused_run, rich_run

pytest.importorskip("opentelemetry.sdk.trace", reason="needs the 'otel' extra")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from agentledger.engine import JsonLinesSink, RunNotFoundError, combine_sinks
from agentledger.engine.otel import (
    ExportSummary,
    OtelExportError,
    OtelSink,
    console_exporter,
    export_run,
    export_runs,
    otlp_endpoint,
    otlp_exporter,
    run_trace_id,
)
from agentledger.events import MemoryEventStore, RecordedEvent, SqliteEventStore

ROOT = Path(__file__).resolve().parent.parent


def nanos(at: datetime) -> int:
    return int(at.timestamp()) * 10**9 + at.microsecond * 1000


def shape(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Everything a backend would see of each span, the resource's instance id aside."""
    return [
        (
            s.name,
            s.kind,
            s.context.trace_id,
            s.context.span_id,
            s.parent.span_id if s.parent else None,
            s.start_time,
            s.end_time,
            dict(s.attributes or {}),
            s.status.status_code,
            s.status.description,
            [(e.name, e.timestamp, dict(e.attributes or {})) for e in s.events],
        )
        for s in spans
    ]


async def test_a_recorded_run_is_exported_with_its_recorded_times(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SqliteEventStore(path) as store:
        await rich_run(store)
    # Later, in another session: only the file is left.
    exporter = InMemorySpanExporter()
    async with SqliteEventStore(path) as store:
        sent = await export_run(store, "r1", exporter, service_name="weather-bot")
        events = await store.read_stream("run-r1")
    spans = exporter.get_finished_spans()
    assert sent == len(spans) == 10

    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name.split(" ")[0], []).append(span)
    (root,) = by_name["invoke_agent"]
    assert root.parent is None and root.context.trace_id == run_trace_id("r1")
    assert root.kind == SpanKind.INTERNAL and root.status.status_code == StatusCode.UNSET
    assert (root.start_time, root.end_time) == (
        nanos(events[0].event.at),
        nanos(events[-1].event.at),
    )
    assert root.resource.attributes["service.name"] == "weather-bot"
    assert root.instrumentation_scope is not None
    assert root.instrumentation_scope.name == "agentledger"

    chats, tools, tiers = by_name["chat"], by_name["execute_tool"], by_name["tool_tier"]
    assert (len(chats), len(tools), len(tiers)) == (6, 2, 1)
    for span in chats + tools:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
    answers = [r.event for r in events if r.type in ("model_call_responded", "model_call_failed")]
    assert [c.end_time for c in chats] == [nanos(a.at) for a in answers]
    assert all(c.kind == SpanKind.CLIENT for c in chats)
    assert [c.status.status_code for c in chats] == [StatusCode.ERROR, StatusCode.UNSET] + [
        StatusCode.ERROR
    ] * 3 + [StatusCode.UNSET]
    assert chats[1].attributes is not None
    assert chats[1].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    (weather,) = [t for t in tools if t.attributes and t.attributes["gen_ai.tool.call.id"] == "c1"]
    assert tiers[0].parent is not None and tiers[0].parent.span_id == weather.context.span_id
    assert [e.name for e in root.events][:2] == ["turn_started", "model_call_retried"]

    # A second export is the same trace: same ids, same times.
    again = InMemorySpanExporter()
    async with SqliteEventStore(path) as store:
        await export_run(store, "r1", again, service_name="weather-bot")
    assert shape(again.get_finished_spans()) == shape(spans)


async def test_the_live_sink_sends_what_a_later_export_sends() -> None:
    live = InMemorySpanExporter()
    sink = OtelSink(live, batch=False)
    lines = io.BytesIO()
    async with MemoryEventStore() as store:
        await rich_run(store, combine_sinks(sink, JsonLinesSink(lines)))
        await refused_run(store)  # another run, through no sink
        events = await store.read_stream("run-r1")
        later = InMemorySpanExporter()
        await export_run(store, "r1", later)
    assert shape(live.get_finished_spans()) == shape(later.get_finished_spans())
    assert len(live.get_finished_spans()) == 10
    # The other sink got every event (the run's and its ledgers'), and the sink keeps no run.
    assert lines.getvalue().count(b"\n") >= len(events)
    assert sink.open_runs == ()


async def test_the_live_sink_sends_each_span_when_it_closes() -> None:
    live = InMemorySpanExporter()
    sink = OtelSink(live, batch=False)
    seen: list[tuple[str, int]] = []

    def spy(recorded: RecordedEvent) -> None:
        seen.append((recorded.type, len(live.get_finished_spans())))

    async with MemoryEventStore() as store:
        await rich_run(store, combine_sinks(sink, spy))
    # Each count is taken after the OtelSink saw the event: the spans it had sent by then.
    counts = dict(reversed(seen))  # the first time each type was seen
    assert counts["run_started"] == 0
    assert counts["model_call_failed"] == 1  # the first attempt, as soon as it failed
    assert seen[-1] == ("run_completed", 10)


async def test_the_batching_sink_sends_from_its_thread_and_flushes_on_shutdown() -> None:
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter)  # batch=True: a background thread exports
    async with MemoryEventStore() as store:
        await rich_run(store)  # no sink on this one: the sink below is fed by hand
        events = await store.read_stream("run-r1")
    for recorded in events:
        sink(recorded)
    assert sink.force_flush(10)
    assert len(exporter.get_finished_spans()) == 10
    sink.shutdown()


async def test_export_runs_sends_every_run_or_those_asked_for() -> None:
    exporter = InMemorySpanExporter()
    async with MemoryEventStore() as store:
        await rich_run(store, run_id="a")
        await refused_run(store, run_id="b")
        await paused_run(store, run_id="c")
        summary = await export_runs(store, exporter)
        assert summary.run_ids == ("a", "b", "c")
        # The paused run sends its closed span (the model's reply) only.
        assert (summary.runs, summary.spans) == (3, 10 + 2 + 1)
        assert len(exporter.get_finished_spans()) == summary.spans

        with_open = InMemorySpanExporter()
        one = await export_runs(store, with_open, ["c"], include_open=True)
        assert (one.runs, one.spans) == (1, 3)
        assert {s.context.trace_id for s in with_open.get_finished_spans()} == {run_trace_id("c")}

        nothing = await export_runs(
            store, with_open, started_after=datetime.max.replace(tzinfo=UTC)
        )
        assert nothing == ExportSummary(runs=0, spans=0, run_ids=())
        with pytest.raises(RunNotFoundError):
            await export_run(store, "nope", exporter)


async def test_a_failure_in_the_sink_is_logged_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(model: str) -> str:
        raise RuntimeError("no provider table")

    sink = OtelSink(InMemorySpanExporter(), batch=False, provider_of=broken)
    async with MemoryEventStore() as store:
        await rich_run(store, sink)  # asserts the run completed
    assert "could not build or send the spans of run-r1" in caplog.text


class _Refusing(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


async def test_an_exporter_that_fails_is_a_typed_error() -> None:
    async with MemoryEventStore() as store:
        await refused_run(store)
        with pytest.raises(OtelExportError, match="could not export 2 spans of run 'r2'"):
            await export_run(store, "r2", _Refusing())


# -- OTLP over HTTP, end to end ----------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A local OTLP/HTTP trace receiver: its base URL and what it received."""
    received: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def decoded(received: list[tuple[str, str, bytes]]) -> list[Any]:
    spans = []
    for path, content_type, body in received:
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    return spans


async def test_spans_reach_an_otlp_receiver_over_http(
    receiver: tuple[str, list[tuple[str, str, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = receiver
    # No endpoint given: the standard variable says where (its /v1/traces path is added).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    exporter = otlp_exporter()
    async with MemoryEventStore() as store:
        await rich_run(store)
        events = await store.read_stream("run-r1")
        try:
            sent = await export_run(store, "r1", exporter)
        finally:
            exporter.shutdown()
    spans = decoded(received)
    assert len(spans) == sent == 10
    root = next(s for s in spans if s.name == "invoke_agent forecaster")
    assert root.trace_id == run_trace_id("r1").to_bytes(16, "big")
    assert root.parent_span_id == b""
    assert root.start_time_unix_nano == nanos(events[0].event.at)
    assert root.end_time_unix_nano == nanos(events[-1].event.at)
    attributes = {a.key: a.value for a in root.attributes}
    assert attributes["gen_ai.agent.name"].string_value == "forecaster"
    assert attributes["gen_ai.usage.input_tokens"].int_value == 320
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 6 and all(c.parent_span_id == root.span_id for c in chats)
    failed = {a.key: a.value for a in chats[0].attributes}
    assert failed["error.type"].string_value == "ModelServerError"
    assert chats[0].status.code == chats[0].status.STATUS_CODE_ERROR

    # Live, through the batching sink, to an endpoint given by hand: the same spans arrive.
    received.clear()
    sink = OtelSink(otlp_exporter(url))
    async with MemoryEventStore() as store:
        await rich_run(store, sink)
    sink.shutdown()
    live = decoded(received)
    assert sorted(s.SerializeToString() for s in live) == sorted(
        s.SerializeToString() for s in spans
    )


def test_an_endpoint_without_a_path_gets_the_traces_path() -> None:
    assert otlp_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otlp_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otlp_endpoint("https://x.example/otlp/v1/traces") == "https://x.example/otlp/v1/traces"


async def test_the_console_exporter_writes_one_json_object_per_span() -> None:
    out = io.StringIO()
    async with MemoryEventStore() as store:
        await refused_run(store)
        await export_run(store, "r2", console_exporter(out))
    decoder = json.JSONDecoder()
    text, objects = out.getvalue().strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].strip()
    assert [o["name"] for o in objects] == ["chat gpt-4o", "invoke_agent spender"]
    assert objects[1]["attributes"]["error.type"] == "budget_exceeded"


def test_without_the_extra_the_engine_works_and_export_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        import agentledger.engine
        from agentledger.engine.otel import OtelNotInstalledError, OtelSink, build_spans
        assert build_spans([]) == []
        try:
            OtelSink(object())
        except OtelNotInstalledError as exc:
            assert isinstance(exc, ImportError)
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "OpenTelemetry export needs the 'otel' extra: pip install 'agentledger[otel]'"
    )


async def test_the_benchmark_in_small() -> None:
    # benchmarks/otel_export.py with 3 runs: the live spans are the exported ones, and every
    # span sent over OTLP/HTTP arrived.
    spec = importlib.util.spec_from_file_location(
        "otel_bench", ROOT / "benchmarks" / "otel_export.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = await bench.main(3)
    # 9 or 10 spans a run: the failing tier is skipped once its breaker opens.
    live = figures["live_spans"]
    assert 27 <= live <= 30 and figures["live_spans_differing_from_export"] == 0
    assert figures["otlp_http_spans_received"] == figures["otlp_http_spans_sent"] == live
    assert figures["runs_in_store"] == 7  # the warm-up run, 3 without the sink, 3 with it
