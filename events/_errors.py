"""The error tree of ``agentledger.events``: everything a store or the codec raises."""

from __future__ import annotations


class EventStoreError(Exception):
    """Raised for any failure of an event store or the event codec (the root of this tree)."""


class StoreClosedError(EventStoreError):
    """Raised when a store is used before it was opened or after it was closed."""


class StoreUnavailableError(EventStoreError):
    """Raised when the database behind a store cannot be reached or answers with a driver error."""


class StorageFullError(StoreUnavailableError):
    """Raised when the database has no room left; the failed append wrote nothing."""


class ConcurrencyError(EventStoreError):
    """Raised when an append's expected version is not the stream's current version."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )


class DuplicateEventError(EventStoreError):
    """Raised when an append carries an event id that is already in the store (or twice in it).

    Nothing of that append was written. Look the id up with ``get_event`` to learn whether an
    earlier append whose outcome was unknown did commit.
    """

    def __init__(self, event_ids: list[str]) -> None:
        self.event_ids = event_ids
        super().__init__(f"event id(s) already recorded: {', '.join(event_ids)}")


class EncodeError(EventStoreError):
    """Raised when an event holds a value JSON cannot carry exactly (e.g. an int over 64 bits)."""


class DecodeError(EventStoreError):
    """Raised when a stored event cannot be turned back into a typed event."""

    def __init__(self, stream_id: str, version: int, reason: str) -> None:
        self.stream_id = stream_id
        self.version = version
        super().__init__(f"cannot decode event {stream_id!r}@{version}: {reason}")


class CorruptEventError(DecodeError):
    """Raised when a stored event is damaged: its checksum does not match its stored bytes, or
    the bytes are not valid JSON or not a valid event of its type.

    It names the stream, version and global position (``None`` when the row's position is not
    known where it was found) and never repeats the stored bytes.
    """

    def __init__(self, stream_id: str, version: int, position: int | None, reason: str) -> None:
        self.position = position
        self.reason = reason
        where = "" if position is None else f" (position {position})"
        DecodeError.__init__(self, stream_id, version, f"{reason}{where}")
        self.args = (f"event {stream_id!r}@{version}{where} is corrupt: {reason}",)


class UnknownEventTypeError(DecodeError):
    """Raised when a stored event's type tag is not in this program's catalog."""

    def __init__(self, stream_id: str, version: int, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(stream_id, version, f"unknown event type {event_type!r}")


class SchemaVersionError(DecodeError):
    """Raised when a stored event was written by a newer schema than this program knows."""

    def __init__(
        self, stream_id: str, version: int, event_type: str, schema_version: int, known: int
    ) -> None:
        self.event_type = event_type
        self.schema_version = schema_version
        self.known = known
        super().__init__(
            stream_id,
            version,
            f"{event_type!r} has schema version {schema_version}, this program knows up to {known}",
        )
