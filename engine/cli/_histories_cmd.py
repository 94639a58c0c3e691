"""``export`` and ``import``: run histories as JSON-lines files (``agentledger.replay``).

``export RUN... | --user U | --agent A -o FILE`` writes the runs with the ledger entries they
read (``-`` is stdout); ``import FILE`` appends a history to the store (``-`` is stdin),
idempotent by event id: importing twice adds nothing the second time. Import is the one
command besides ``demo`` that may create the database.
"""

from __future__ import annotations

import argparse
import sys

from agentledger.projections import RunFilter, find_runs
from agentledger.replay import export_history, import_history

from ._errors import NotFoundError, UsageError
from ._output import Output, note, plural
from ._runs import resolve_run
from ._store import open_store


async def export(options: argparse.Namespace, out: Output) -> int:
    """Write a history of the runs named (or matching ``--user``/``--agent``)."""
    if not options.runs and options.user is None and options.agent_name is None:
        raise UsageError("name the runs to export (RUN ids, or --user U / --agent NAME)")
    async with open_store(options.db) as store:
        run_ids = [await resolve_run(store, run) for run in options.runs]
        if options.user is not None or options.agent_name is not None:
            wanted = RunFilter(user_id=options.user, agent=options.agent_name)
            matching = [row.run_id for row in await find_runs(store, wanted)]
            run_ids = [r for r in matching if r in run_ids] if run_ids else matching
        if not run_ids:
            raise NotFoundError("no runs matched: nothing was exported")
        if options.output == "-":
            sys.stdout.flush()
            report = await export_history(store, run_ids, sys.stdout.buffer)
        else:
            report = await export_history(store, run_ids, options.output)
    summary = (
        f"exported {plural(len(report.runs), 'run')}, {plural(report.events, 'event')} from "
        f"{plural(report.streams, 'stream')} to {options.output}"
    )
    if options.output == "-":
        note(summary)  # stdout holds the history itself
    elif options.json:
        out.json(
            {
                "runs": report.runs,
                "events": report.events,
                "streams": report.streams,
                "ledger_events_left_out": report.ledger_events_left_out,
            }
        )
    else:
        out.line(summary)
    return 0


async def import_(options: argparse.Namespace, out: Output) -> int:
    """Append a history file to the store (creating a SQLite file if needed)."""
    async with open_store(options.db, create=True) as store:
        source = sys.stdin.buffer if options.file == "-" else options.file
        report = await import_history(store, source)
    if options.json:
        out.json(
            {
                "runs": report.runs,
                "events_imported": report.events_imported,
                "events_already_there": report.events_already_there,
            }
        )
        return 0
    out.line(
        f"imported {plural(report.events_imported, 'event')} of "
        f"{plural(len(report.runs), 'run')}; {report.events_already_there} were already there"
    )
    return 0
