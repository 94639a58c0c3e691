"""``JsonLinesSink``: every appended event as one JSON line, for any log pipeline (pattern 3);
``combine_sinks`` to give an engine more than one sink."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO

from agentledger.events import RecordedEvent, event_line


class JsonLinesSink:
    """Writes each event the engine appends as a JSON line to a binary stream (default stdout).

    Give it to ``Engine(sink=...)``. Lines are written after the append commits, so a line never
    describes an event that is not in the log; a crash may lose the last lines, never add one.
    """

    def __init__(self, stream: IO[bytes] | None = None, *, flush: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._flush = flush

    def __call__(self, recorded: RecordedEvent) -> None:
        self._stream.write(event_line(recorded))
        if self._flush:
            self._stream.flush()


def combine_sinks(*sinks: Callable[[RecordedEvent], None]) -> Callable[[RecordedEvent], None]:
    """One sink that hands every event to each of ``sinks`` in turn, e.g.
    ``Engine(sink=combine_sinks(JsonLinesSink(), OtelSink(otlp_exporter())))``."""

    def fan_out(recorded: RecordedEvent) -> None:
        for sink in sinks:
            sink(recorded)

    return fan_out
