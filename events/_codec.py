"""Events to bytes and back: orjson out, pydantic ``validate_json`` in, upcasters for old shapes."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from ._catalog import EVENT_TYPES, Event, EventBase
from ._errors import (
    CorruptEventError,
    DecodeError,
    EncodeError,
    SchemaVersionError,
    UnknownEventTypeError,
)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON object of an event at schema version ``n`` into the object at ``n + 1``."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_CURRENT = {tag: cls.schema_version for tag, cls in EVENT_TYPES.items()}
# The adapter's compiled validator, called directly: the adapter's wrapper costs about as much
# per event as a small event's validation.
_VALIDATE_JSON = _EVENT_ADAPTER.validator.validate_json


def _default(value: Any) -> Any:
    # orjson knows dicts, lists, tuples, str, numbers, datetimes and dates natively; the rest of
    # what events hold is nested frozen models and exact money.
    if isinstance(value, BaseModel):
        return value.__dict__
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


class EventCodec:
    """Encodes events to JSON bytes and decodes stored bytes to typed events.

    Decoding is strict about what it does not know: an unknown ``type`` raises
    ``UnknownEventTypeError`` and a schema version newer than the class's raises
    ``SchemaVersionError``, both naming the stream and version. Older versions go through the
    upcasters registered with ``register_upcaster``.
    """

    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register how to lift ``event_type`` from ``from_version`` to ``from_version + 1``."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        if not 1 <= from_version < EVENT_TYPES[event_type].schema_version:
            raise ValueError(
                f"{event_type!r} is at schema version {EVENT_TYPES[event_type].schema_version}; "
                f"an upcaster from version {from_version} can never run"
            )
        self._upcasters[(event_type, from_version)] = upcaster

    @staticmethod
    def encode(event: EventBase) -> bytes:
        """The event's JSON bytes, as stored; ``EncodeError`` if a value has no exact JSON form."""
        try:
            return orjson.dumps(event.__dict__, default=_default)
        except orjson.JSONEncodeError as exc:
            raise EncodeError(f"cannot encode a {event.__class__.__name__}: {exc}") from exc

    @staticmethod
    def schema_version(event_type: str) -> int:
        """The schema version this program writes for ``event_type``."""
        return EVENT_TYPES[event_type].schema_version

    def check(self, event_type: str, schema_version: int, stream_id: str, version: int) -> None:
        """Raise ``UnknownEventTypeError`` or ``SchemaVersionError`` if a stored event of this
        type and schema version cannot be decoded by this program (no upcaster is missing)."""
        if _CURRENT.get(event_type) == schema_version:
            return  # the common case: written by this program's catalog
        cls = EVENT_TYPES.get(event_type)
        if cls is None:
            raise UnknownEventTypeError(stream_id, version, event_type)
        if schema_version > cls.schema_version:
            raise SchemaVersionError(
                stream_id, version, event_type, schema_version, cls.schema_version
            )
        for from_version in range(schema_version, cls.schema_version):
            if (event_type, from_version) not in self._upcasters:
                raise DecodeError(
                    stream_id,
                    version,
                    f"no upcaster for {event_type!r} from schema version {from_version}",
                )

    def decode(
        self, event_type: str, schema_version: int, data: bytes | str, stream_id: str, version: int
    ) -> Event:
        """The typed event for stored bytes; raises a ``DecodeError`` naming stream and version."""
        cls = EVENT_TYPES.get(event_type)
        if cls is None:
            raise UnknownEventTypeError(stream_id, version, event_type)
        event = self._decode_known(cls, event_type, schema_version, data, stream_id, version)
        if event.type != event_type:
            # A row whose type column and data disagree is corrupt; never guess which is right.
            raise CorruptEventError(
                stream_id, version, None, f"stored as {event_type!r}, data is {event.type!r}"
            )
        return event

    def _decode_known(
        self,
        cls: type[EventBase],
        event_type: str,
        schema_version: int,
        data: bytes | str,
        stream_id: str,
        version: int,
    ) -> Event:
        try:
            if schema_version == cls.schema_version:
                event: Event = _VALIDATE_JSON(data)
                return event
            if schema_version > cls.schema_version:
                raise SchemaVersionError(
                    stream_id, version, event_type, schema_version, cls.schema_version
                )
            raw = orjson.loads(data)
            for from_version in range(schema_version, cls.schema_version):
                upcaster = self._upcasters.get((event_type, from_version))
                if upcaster is None:
                    raise DecodeError(
                        stream_id,
                        version,
                        f"no upcaster for {event_type!r} from schema version {from_version}",
                    )
                raw = upcaster(raw)
            return _EVENT_ADAPTER.validate_python(raw)
        # Neither message repeats the stored bytes (pydantic's and orjson's would): they may be
        # large, secret or hostile to a terminal. ``from None`` keeps them out of tracebacks too.
        except ValidationError as exc:
            raise CorruptEventError(stream_id, version, None, _summary(exc)) from None
        except orjson.JSONDecodeError as exc:
            raise CorruptEventError(
                stream_id, version, None, f"invalid JSON at byte {exc.pos}"
            ) from None


def _summary(exc: ValidationError) -> str:
    """Where and why validation failed, without the input values: pydantic's error kinds, not
    its messages, since some messages quote the input (an unknown tag, for one)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        return "invalid JSON"
    shown = "; ".join(f"{_location(error['loc'])}: {error['type']}" for error in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"not a valid event of its type: {shown}{more}"[:300]


def _location(loc: tuple[int | str, ...]) -> str:
    # Field names come from the catalog, but a dict key in a location comes from the input.
    parts = [
        str(part) if isinstance(part, int) or (part.isidentifier() and len(part) <= 40) else "?"
        for part in loc
    ]
    return ".".join(parts) or "event"


default_codec = EventCodec()
"""The codec stores use unless given another; register process-wide upcasters here."""
