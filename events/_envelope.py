"""The envelope around a stored event, and the shapes an append is made of."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ._catalog import Event


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended, with the id its writer chose for it.

    The id is made by the writer, not the store, so that an append whose outcome is unknown (a
    lost connection at commit) can be checked with ``get_event(event_id)`` instead of repeated.
    """

    event: Event
    event_id: str


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at ``expected_version``.

    ``expected_version=0`` means the stream must not exist yet; ``None`` skips the check.
    """

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the store holds it.

    ``version`` counts from 1 within the stream without gaps; ``position`` counts from 1 across
    the whole store without gaps, in commit order. ``recorded_at`` is the store's clock at commit,
    ``schema_version`` the shape the event was written in (it is upcast on read).
    """

    stream_id: str
    version: int
    position: int
    event_id: str
    recorded_at: datetime
    schema_version: int
    event: Event
