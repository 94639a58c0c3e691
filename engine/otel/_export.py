"""Retroactive export: the spans of any recorded run, with the times its events recorded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import anyio.to_thread

from agentledger.engine._engine import RunNotFoundError
from agentledger.events import EventStore, RunStarted
from agentledger.projections._streams import is_run_stream, run_stream

from ._builder import build_spans
from ._errors import OtelExportError
from ._providers import ProviderOf, default_provider
from ._records import SpanRecord
from ._sdk import require_sdk, resource, to_readable

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

_PAGE = 1000
_BATCH = 512
"""Spans per export call of ``export_runs``: a week of runs is not one HTTP request per run."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What ``export_runs`` sent: how many runs and spans, and which runs."""

    runs: int
    spans: int
    run_ids: tuple[str, ...]


async def export_run(
    store: EventStore,
    run_id: str,
    exporter: SpanExporter,
    *,
    include_open: bool = False,
    service_name: str | None = None,
    provider_of: ProviderOf = default_provider,
) -> int:
    """Send the spans of run ``run_id`` to ``exporter``; returns how many were sent.

    The spans carry the run's recorded times, and ids derived from its log, so exporting a run
    again gives the same trace. Only closed spans go, unless ``include_open`` (see
    ``build_spans``). The exporter is not shut down: it is the caller's. Raises
    ``RunNotFoundError`` for a run with no events, ``OtelExportError`` when the exporter
    reports a failure and ``OtelNotInstalledError`` without the ``otel`` extra.
    """
    require_sdk()
    on = resource(service_name)
    spans = [to_readable(s, on) for s in await _spans(store, run_id, include_open, provider_of)]
    if spans:
        await send(exporter, spans, [run_id])
    return len(spans)


async def export_runs(
    store: EventStore,
    exporter: SpanExporter,
    run_ids: Iterable[str] | None = None,
    *,
    started_after: datetime | None = None,
    include_open: bool = False,
    service_name: str | None = None,
    provider_of: ProviderOf = default_provider,
) -> ExportSummary:
    """Send the spans of many runs: ``run_ids``, or every run in the store (optionally only
    those started after ``started_after``), in the order given or started, several runs to an
    export call. Raises like ``export_run``; the runs of the calls before a failure were sent."""
    require_sdk()
    on = resource(service_name)
    ids = list(run_ids) if run_ids is not None else await stored_runs(store, started_after)
    sent = 0
    batch: list[ReadableSpan] = []
    runs: list[str] = []
    for run_id in ids:
        batch += [
            to_readable(s, on) for s in await _spans(store, run_id, include_open, provider_of)
        ]
        runs.append(run_id)
        if len(batch) >= _BATCH:
            await send(exporter, batch, runs)
            sent, batch, runs = sent + len(batch), [], []
    if batch:
        await send(exporter, batch, runs)
        sent += len(batch)
    return ExportSummary(runs=len(ids), spans=sent, run_ids=tuple(ids))


async def stored_runs(store: EventStore, started_after: datetime | None = None) -> list[str]:
    """The ids of every run in ``store``, in the order they started (by global position)."""
    found: list[str] = []
    after = 0
    while page := await store.read_all(after=after, limit=_PAGE):
        after = page[-1].position
        for recorded in page:
            # Only a run's first event is decoded: the type is known without it.
            if recorded.type != "run_started" or not is_run_stream(recorded.stream_id):
                continue
            started = recorded.event
            assert isinstance(started, RunStarted)
            if started_after is None or started.at > started_after:
                found.append(started.run_id)
    return found


async def _spans(
    store: EventStore, run_id: str, include_open: bool, provider_of: ProviderOf
) -> list[SpanRecord]:
    events = await store.read_stream(run_stream(run_id))
    if not events:
        raise RunNotFoundError(f"no run {run_id!r} in the store")
    return build_spans(events, include_open=include_open, provider_of=provider_of)


async def send(exporter: SpanExporter, spans: Sequence[ReadableSpan], runs: Sequence[str]) -> None:
    """Hand ``spans`` (of ``runs``) to ``exporter`` in a worker thread (an exporter blocks on
    its network call); raises ``OtelExportError`` if it reports a failure."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    result = await anyio.to_thread.run_sync(exporter.export, spans)
    if result is not SpanExportResult.SUCCESS:
        which = f"run {runs[0]!r}" if len(runs) == 1 else f"{len(runs)} runs ({runs[0]!r}...)"
        raise OtelExportError(
            f"{type(exporter).__name__} could not export {len(spans)} spans of {which} "
            "(see its log for the reason)"
        )
