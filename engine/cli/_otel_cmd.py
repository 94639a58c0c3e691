"""``otel-export RUN... | --all``: recorded runs as OpenTelemetry traces, after the fact.

Spans carry the times the log recorded and ids derived from it, so exporting a run twice gives
the same trace. ``--endpoint URL`` sends them over OTLP/HTTP (default: the SDK's environment,
else http://localhost:4318); ``--console`` prints them as JSON instead. Needs the ``otel``
extra; without it the error says how to install it, in one line.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._details import clip
from ._errors import CliError, NotFoundError, UsageError
from ._output import Output, note, plural
from ._progress import progress_bar
from ._runs import resolve_run
from ._store import open_store


class _Step:
    def __init__(self, done: int, total: int) -> None:
        self.done = done
        self.total = total


class _Last(logging.Handler):
    """Keeps the SDK's first complaint instead of letting it print its retries on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # The first complaint names the cause (e.g. connection refused); later ones repeat it.
        self.message = self.message or record.getMessage()


@contextmanager
def _sdk_log() -> Iterator[_Last]:
    logger = logging.getLogger("opentelemetry")
    last = _Last()
    saved = logger.propagate
    logger.addHandler(last)
    logger.propagate = False
    try:
        yield last
    finally:
        logger.removeHandler(last)
        logger.propagate = saved


def _exporter(options: argparse.Namespace) -> Any:
    from agentledger.engine.otel import OtelNotInstalledError, console_exporter, otlp_exporter

    try:
        if options.console:
            return console_exporter()
        return otlp_exporter(options.endpoint)
    except OtelNotInstalledError as exc:
        raise CliError(str(exc)) from None


async def command(options: argparse.Namespace, out: Output) -> int:
    """Export the runs' spans; prints how many runs and spans went (to stderr with --console)."""
    # Imported here: the SDK behind it is an extra, and every other command starts without it.
    from agentledger.engine.otel import OtelExportError, export_run, stored_runs

    if options.runs and options.all:
        raise UsageError("give RUN ids or --all, not both")
    if not options.runs and not options.all:
        raise UsageError("name the runs (RUN ids or prefixes) or pass --all")
    if options.console and options.endpoint:
        raise UsageError("--console prints the spans; it takes no --endpoint")
    async with open_store(options.db) as store:
        if options.runs:
            run_ids = [await resolve_run(store, run) for run in options.runs]
        else:
            run_ids = await stored_runs(store, options.since)
        if not run_ids:
            raise NotFoundError("no runs matched: nothing was exported")
        exporter = _exporter(options)
        spans = 0
        try:
            with _sdk_log() as last, progress_bar("exporting") as bar:
                for done, run_id in enumerate(run_ids, 1):
                    try:
                        spans += await export_run(
                            store,
                            run_id,
                            exporter,
                            include_open=options.include_open,
                            service_name=options.service_name,
                        )
                    except OtelExportError as exc:
                        why = f": {clip(last.message, 300)}" if last.message else ""
                        raise CliError(f"{exc}{why}") from None
                    bar(_Step(done, len(run_ids)))
        finally:
            exporter.shutdown()
    summary = f"exported {plural(spans, 'span')} of {plural(len(run_ids), 'run')}"
    if options.json:
        out.json({"runs": run_ids, "spans": spans})
    elif options.console:
        note(summary)  # stdout holds the spans
    else:
        out.line(summary + (f" to {options.endpoint}" if options.endpoint else ""))
    return 0
