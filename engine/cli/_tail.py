"""``agentledger tail [-f]``: the log as JSON lines, exact (only escaped for the terminal).

A damaged event is printed with its envelope and ``corrupt`` (the reason) instead of
``event``, and a one-line note goes to stderr; the tail goes on past it.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from agentledger.events import CorruptEventError, RecordedEvent, event_line
from agentledger.projections import ParkedStream

from ._escape import safe_json
from ._output import Output, note
from ._store import open_store


def tail_line(recorded: RecordedEvent) -> bytes:
    """The event's JSON line (``corrupt`` instead of ``event`` for a damaged one)."""
    try:
        return safe_json(event_line(recorded))
    except CorruptEventError as exc:
        note(ParkedStream.of(exc).describe())
        envelope = {
            "stream_id": recorded.stream_id,
            "version": recorded.version,
            "position": recorded.position,
            "event_id": recorded.event_id,
            "recorded_at": recorded.recorded_at,
            "schema_version": recorded.schema_version,
            "corrupt": exc.reason,
        }
        return safe_json(orjson.dumps(envelope) + b"\n")


async def command(options: argparse.Namespace, out: Output) -> int:
    """Print every event after ``--after``; with ``-f``, keep printing new ones."""
    sys.stdout.flush()
    write = sys.stdout.buffer.write
    async with open_store(options.db) as store:
        if not options.follow:
            position = options.after
            while batch := await store.read_all(after=position, limit=1000):
                for recorded in batch:
                    write(tail_line(recorded))
                position = batch[-1].position
            sys.stdout.buffer.flush()
            return 0
        async for recorded in store.subscribe(after=options.after):
            write(tail_line(recorded))
            sys.stdout.buffer.flush()
    return 0
