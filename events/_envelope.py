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

    def __post_init__(self) -> None:
        check_id("event id", self.event_id)


def check_id(what: str, value: str) -> None:
    """Raise ``ValueError`` for an id no backend can store: empty, or holding a NUL character
    (PostgreSQL text cannot), so every backend refuses the same ids up front."""
    if not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty string without NUL characters: {value!r}")


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at ``expected_version``.

    ``expected_version=0`` means the stream must not exist yet; ``None`` skips the check.
    """

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int | None = None

    def __post_init__(self) -> None:
        check_id("stream id", self.stream_id)
        if self.expected_version is not None and self.expected_version < 0:
            raise ValueError(f"expected_version cannot be negative: {self.expected_version}")


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
