"""The envelope around a stored event, and the shapes an append is made of."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ._catalog import Event
from ._checksum import event_checksum
from ._errors import CorruptEventError


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


class RecordedEvent:
    """An event as the store holds it.

    ``version`` counts from 1 within the stream without gaps; ``position`` counts from 1 across
    the whole store without gaps, in commit order. ``recorded_at`` is the store's clock at commit,
    ``schema_version`` the shape the event was written in (it is upcast on read), ``type`` the
    event's tag.

    Events read from a database are decoded when ``event`` is first used, so a projection that
    looks only at ``type`` (and the envelope) to skip an event never pays for decoding it. The
    type and schema version are checked as the row is read: an unknown type or a newer schema
    raises there, never later. Treat it as immutable: it describes what the log holds.

    A row whose stored checksum does not match its bytes is still returned, so a reader of
    other streams, or one that skips it by ``type``, is not stopped by it; using its ``event``
    raises ``CorruptEventError`` (and ``damage`` says why beforehand). Its ``type`` is what the
    row says, which may be damaged too.
    """

    __slots__ = (
        "_codec",
        "_damage",
        "_data",
        "_event",
        "event_id",
        "position",
        "recorded_at",
        "schema_version",
        "stream_id",
        "type",
        "version",
    )

    stream_id: str
    version: int
    position: int
    event_id: str
    recorded_at: datetime
    schema_version: int
    type: str
    _event: Event | None
    _data: bytes | str | None
    _codec: Decoder | None
    _damage: str | None

    def __init__(
        self,
        stream_id: str,
        version: int,
        position: int,
        event_id: str,
        recorded_at: datetime,
        schema_version: int,
        event: Event,
    ) -> None:
        self.stream_id = stream_id
        self.version = version
        self.position = position
        self.event_id = event_id
        self.recorded_at = recorded_at
        self.schema_version = schema_version
        self.type = event.type
        self._event = event
        self._data = None
        self._codec = None
        self._damage = None

    @classmethod
    def stored(
        cls,
        stream_id: str,
        version: int,
        position: int,
        event_id: str,
        recorded_at: datetime,
        schema_version: int,
        event_type: str,
        data: bytes | str,
        codec: Decoder,
        checksum: int | None = None,
    ) -> RecordedEvent:
        """A stored row, decoded by ``codec`` when ``event`` is first used.

        ``checksum`` is the one stored with the row (``None``: a row written before checksums,
        accepted as it is). A mismatch makes the row damaged (see the class docs); otherwise an
        unknown type or a newer schema raises ``UnknownEventTypeError`` or
        ``SchemaVersionError`` at once.
        """
        damage = None
        if checksum is not None:
            computed = event_checksum(stream_id, version, event_type, schema_version, data)
            if computed != checksum:
                damage = f"checksum mismatch (stored {checksum:#x}, computed {computed:#x})"
        if damage is None:
            codec.check(event_type, schema_version, stream_id, version)
        recorded = object.__new__(cls)
        recorded.stream_id = stream_id
        recorded.version = version
        recorded.position = position
        recorded.event_id = event_id
        recorded.recorded_at = recorded_at
        recorded.schema_version = schema_version
        recorded.type = event_type
        recorded._event = None
        recorded._data = None if damage else data
        recorded._codec = codec
        recorded._damage = damage
        return recorded

    @property
    def damage(self) -> str | None:
        """Why the row is known to be corrupt (its checksum does not match), else ``None``.

        Bytes that match their checksum (or have none) but do not decode are found only when
        ``event`` is first used.
        """
        return self._damage

    @property
    def event(self) -> Event:
        """The typed event (decoded on first use).

        Raises ``CorruptEventError`` if the row is damaged, or another ``DecodeError``.
        """
        event = self._event
        if event is None:
            if self._damage is not None:
                raise CorruptEventError(self.stream_id, self.version, self.position, self._damage)
            assert self._codec is not None and self._data is not None
            try:
                event = self._codec.decode(
                    self.type, self.schema_version, self._data, self.stream_id, self.version
                )
            except CorruptEventError as exc:
                if exc.position is not None:
                    raise
                # The codec does not know where the row sits in the log; the envelope does.
                raise CorruptEventError(
                    self.stream_id, self.version, self.position, exc.reason
                ) from None
            self._event = event
            self._data = None
        return event

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return (
            self.position == other.position
            and self.stream_id == other.stream_id
            and self.version == other.version
            and self.event_id == other.event_id
            and self.recorded_at == other.recorded_at
            and self.schema_version == other.schema_version
            and self.event == other.event
        )

    def __hash__(self) -> int:
        return hash((self.stream_id, self.version, self.position, self.event_id))

    def __repr__(self) -> str:
        if self._event is None and self._damage is not None:
            return (
                f"RecordedEvent(stream_id={self.stream_id!r}, version={self.version}, "
                f"position={self.position}, damage={self._damage!r})"
            )
        return (
            f"RecordedEvent(stream_id={self.stream_id!r}, version={self.version}, "
            f"position={self.position}, event_id={self.event_id!r}, "
            f"recorded_at={self.recorded_at!r}, schema_version={self.schema_version}, "
            f"event={self.event!r})"
        )


class Decoder(Protocol):
    """What ``RecordedEvent.stored`` needs of a codec."""

    def check(self, event_type: str, schema_version: int, stream_id: str, version: int) -> None:
        """Raise if this program cannot decode the type at that schema version."""
        ...

    def decode(
        self, event_type: str, schema_version: int, data: bytes | str, stream_id: str, version: int
    ) -> Event:
        """The typed event of stored bytes."""
        ...
