"""One event as a JSON line: the form of the JSON-lines sink, ``agentledger tail`` and history
files (which a history import reads back, so it holds everything an append needs)."""

from __future__ import annotations

import orjson

from ._codec import EventCodec
from ._envelope import RecordedEvent


def event_line(recorded: RecordedEvent) -> bytes:
    """``recorded`` as one JSON object on a line: the envelope (stream id, version, position,
    event id, recorded time), the type and schema version, and the event's own fields under
    ``event``, in the current shape of its type (so the schema version is the current one).
    Ends with a newline."""
    event = recorded.event
    envelope = (
        b'{"stream_id":%b,"version":%d,"position":%d,"event_id":%b,"recorded_at":%b,'
        b'"type":%b,"schema_version":%d,"event":'
        % (
            orjson.dumps(recorded.stream_id),
            recorded.version,
            recorded.position,
            orjson.dumps(recorded.event_id),
            orjson.dumps(recorded.recorded_at),
            orjson.dumps(event.type),
            EventCodec.schema_version(event.type),
        )
    )
    return envelope + EventCodec.encode(event) + b"}\n"
