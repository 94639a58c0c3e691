"""``OtelSink``: spans while runs happen, each sent when the event that closes it commits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentledger.events import RecordedEvent
from agentledger.projections._streams import is_run_stream

from ._builder import SpanBuilder
from ._providers import ProviderOf, default_provider
from ._sdk import require_sdk, resource, to_readable

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("agentledger.engine.otel")


class OtelSink:
    """A sink for ``Engine(sink=...)`` that sends each run's spans to ``exporter`` live.

    It folds every committed event of a run with the same builder ``export_run`` uses, so a run
    sent live and exported again later gives the same spans (same ids, same times). With
    ``batch`` (the default) spans are queued and a background thread sends them (the SDK's
    ``BatchSpanProcessor``): the event loop never waits on the network. ``batch=False`` sends
    each span in the calling thread (tests, the console). Call ``shutdown()`` when done.

    A failure here never reaches the run: it is logged (logger ``agentledger.engine.otel``).
    The sink folds what it sees: a run it meets after its start (resumed in a new process)
    gets the spans that open and close in this process, without its ``invoke_agent`` span;
    ``export_run`` gives the whole run once it has ended. A paused run's fold is kept in memory
    until the run ends.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        batch: bool = True,
        service_name: str | None = None,
        provider_of: ProviderOf = default_provider,
    ) -> None:
        require_sdk()
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self._processor: SpanProcessor = (
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )
        self._resource = resource(service_name)
        self._provider_of = provider_of
        self._runs: dict[str, SpanBuilder] = {}

    def __call__(self, recorded: RecordedEvent) -> None:
        # A run's events are also appended to ledger streams (a budget day, a key): only its
        # own stream counts, or they would be folded twice.
        if not is_run_stream(recorded.stream_id):
            return
        try:
            self._fold(recorded)
        except Exception:
            logger.exception("could not build or send the spans of %s", recorded.stream_id)

    def _fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        builder = self._runs.get(event.run_id)
        if builder is None:
            builder = self._runs[event.run_id] = SpanBuilder(provider_of=self._provider_of)
        spans = builder.add(event)
        if builder.ended:
            del self._runs[event.run_id]
        for span in spans:
            self._processor.on_end(to_readable(span, self._resource))

    @property
    def open_runs(self) -> tuple[str, ...]:
        """The runs whose end this sink has not seen yet (running or paused)."""
        return tuple(self._runs)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Send what is queued; ``False`` if that did not finish within ``timeout_s``."""
        return self._processor.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Send what is queued, then shut the exporter down."""
        self._processor.shutdown()
