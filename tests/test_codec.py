"""The codec: every catalog event survives encode -> decode, and what cannot be decoded says so.

Strategies are derived from the pydantic field annotations, so a new event class is covered the
moment it joins the ``Event`` union; a field type this module does not know fails the test loudly
instead of being skipped.
"""

from __future__ import annotations

import inspect
import types
import typing
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, JsonValue, ValidationError

from agentledger import events as events_pkg
from agentledger.events import (
    EVENT_TYPES,
    TERMINAL_EVENT_TYPES,
    DecodeError,
    Event,
    EventBase,
    EventCodec,
    RunStarted,
    SchemaVersionError,
    TurnStarted,
    UnknownEventTypeError,
    default_codec,
)
from agentledger.events import _catalog as catalog_module

AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)

# orjson writes integers in the 64-bit range only; events never hold larger counts.
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_json_value: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | _ints | _floats | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)

_SCALARS: dict[Any, st.SearchStrategy[Any]] = {
    str: _text,
    int: _ints,
    float: _floats,
    bool: st.booleans(),
    type(None): st.none(),
    datetime: st.datetimes(timezones=st.just(UTC)),
    date: st.dates(),
    Decimal: st.decimals(allow_nan=False, allow_infinity=False),
}


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for one field annotation of the catalog."""
    if annotation is JsonValue:
        return _json_value
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(arg) for arg in args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict and args[0] is str:
        return st.dictionaries(_text, strategy_for(args[1]), max_size=3)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    raise TypeError(f"no strategy for field annotation {annotation!r}; teach strategy_for")


def model_strategy(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Instances of ``cls``, with every optional field sometimes given and sometimes defaulted."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in cls.model_fields.items():
        target = required if field.is_required() else optional
        target[name] = strategy_for(field.annotation)
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


def _union_classes() -> tuple[type[EventBase], ...]:
    union = typing.get_args(Event)[0]
    return typing.get_args(union)


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_type_round_trips(event_type: str, data: st.DataObject) -> None:
    cls = EVENT_TYPES[event_type]
    event = data.draw(model_strategy(cls))
    encoded = EventCodec.encode(event)

    decoded = default_codec.decode(event_type, cls.schema_version, encoded, "run-1", 7)

    assert type(decoded) is cls
    assert decoded == event
    # Stable bytes: re-encoding what was read gives exactly what was stored.
    assert EventCodec.encode(decoded) == encoded


def test_encoded_event_is_a_json_object_tagged_with_its_type() -> None:
    event = TurnStarted(run_id="r", span_id="s", at=AT, turn=3)
    raw = orjson.loads(EventCodec.encode(event))
    assert raw == {
        "run_id": "r",
        "span_id": "s",
        "parent_span_id": None,
        "at": "2024-05-01T12:30:15.123456+00:00",
        "type": "turn_started",
        "turn": 3,
    }


def test_money_travels_as_an_exact_string() -> None:
    from agentledger.events import BudgetReserved

    event = BudgetReserved(
        run_id="r",
        span_id="s",
        at=AT,
        reservation_id="res",
        user_id="u",
        day=date(2024, 5, 1),
        model="m",
        amount_usd=Decimal("0.000123456789012345678901"),
    )
    raw = orjson.loads(EventCodec.encode(event))
    assert raw["amount_usd"] == "0.000123456789012345678901"
    decoded = default_codec.decode("budget_reserved", 1, EventCodec.encode(event), "r", 1)
    assert decoded == event


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_floats_are_refused_when_the_event_is_made(bad: float) -> None:
    # JSON has no infinity or NaN: orjson would write null, and the stream could not be read back.
    from agentledger.events import ModelCallFailed, ToolCallSucceeded

    with pytest.raises(ValidationError):
        ModelCallFailed(
            run_id="r",
            span_id="s",
            at=AT,
            call_id="c",
            model="m",
            error_type="timeout",
            message="",
            retry_after_s=bad,
        )
    with pytest.raises(ValidationError):
        ToolCallSucceeded(run_id="r", span_id="s", at=AT, call_id="c", tool_name="t", result=[bad])


# -- the catalog -------------------------------------------------------------------------------


def test_every_event_class_is_in_the_union_and_the_catalog() -> None:
    defined = {
        obj
        for obj in vars(catalog_module).values()
        if inspect.isclass(obj) and issubclass(obj, EventBase) and obj is not EventBase
    }
    union = set(_union_classes())
    assert defined == union
    assert set(EVENT_TYPES.values()) == union


def test_type_tags_are_unique_literals_matching_the_catalog_keys() -> None:
    classes = _union_classes()
    tags = [cls.model_fields["type"].default for cls in classes]
    assert len(tags) == len(set(tags)), "two event classes share a type tag"
    assert len(EVENT_TYPES) == len(classes)
    for cls in classes:
        field = cls.model_fields["type"]
        assert typing.get_args(field.annotation) == (field.default,), cls.__name__
        assert EVENT_TYPES[field.default] is cls
        assert isinstance(cls.schema_version, int)
        assert cls.schema_version >= 1


def test_every_event_class_is_frozen_and_exported() -> None:
    for cls in EVENT_TYPES.values():
        assert cls.model_config.get("frozen") is True, cls.__name__
        assert getattr(events_pkg, cls.__name__) is cls
        assert cls.__name__ in events_pkg.__all__


def test_terminal_types_are_catalog_types() -> None:
    assert set(EVENT_TYPES) >= TERMINAL_EVENT_TYPES


# -- what cannot be decoded --------------------------------------------------------------------


def _turn_bytes() -> bytes:
    return EventCodec.encode(TurnStarted(run_id="r", span_id="s", at=AT, turn=1))


def test_unknown_event_type_names_stream_and_version() -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        default_codec.decode("run_teleported", 1, b'{"type": "run_teleported"}', "run-9", 4)
    error = caught.value
    assert isinstance(error, DecodeError)
    assert (error.stream_id, error.version, error.event_type) == ("run-9", 4, "run_teleported")
    assert "run-9" in str(error)
    assert "4" in str(error)
    assert "run_teleported" in str(error)


def test_newer_schema_version_is_refused() -> None:
    with pytest.raises(SchemaVersionError) as caught:
        default_codec.decode("turn_started", 2, _turn_bytes(), "run-9", 5)
    error = caught.value
    assert isinstance(error, DecodeError)
    assert (error.stream_id, error.version) == ("run-9", 5)
    assert (error.event_type, error.schema_version, error.known) == ("turn_started", 2, 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"not json",
        b'{"type": "turn_started", "run_id": "r"',
        b"\xff\xfe",
        b"[]",
        b"null",
    ],
)
def test_malformed_json_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        default_codec.decode("turn_started", 1, data, "run-3", 2)
    assert (caught.value.stream_id, caught.value.version) == ("run-3", 2)


def test_json_of_the_wrong_shape_is_a_decode_error() -> None:
    raw = orjson.loads(_turn_bytes())
    del raw["turn"]
    with pytest.raises(DecodeError):
        default_codec.decode("turn_started", 1, orjson.dumps(raw), "r", 1)
    raw = orjson.loads(_turn_bytes())
    raw["surprise"] = True  # events forbid extra fields
    with pytest.raises(DecodeError):
        default_codec.decode("turn_started", 1, orjson.dumps(raw), "r", 1)


def test_data_whose_tag_disagrees_with_the_stored_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        default_codec.decode("run_cancelled", 1, _turn_bytes(), "r", 1)


def test_decode_accepts_text_as_well_as_bytes() -> None:
    decoded = default_codec.decode("turn_started", 1, _turn_bytes().decode(), "r", 1)
    assert decoded == TurnStarted(run_id="r", span_id="s", at=AT, turn=1)


# -- upcasters ---------------------------------------------------------------------------------


def _rename(old: str, new: str) -> typing.Callable[[dict[str, Any]], dict[str, Any]]:
    def upcast(raw: dict[str, Any]) -> dict[str, Any]:
        raw = dict(raw)
        raw[new] = raw.pop(old)
        return raw

    return upcast


_STARTED = RunStarted(run_id="r", span_id="s", at=AT, agent="a", model="m", task="t", user_id="u")


def _started_at_v1(task_field: str) -> bytes:
    raw = orjson.loads(EventCodec.encode(_STARTED))
    raw[task_field] = raw.pop("task")
    return orjson.dumps(raw)


def test_register_upcaster_rejects_unknown_types() -> None:
    with pytest.raises(ValueError, match="run_teleported"):
        EventCodec().register_upcaster("run_teleported", 1, _rename("a", "b"))


@pytest.mark.parametrize("from_version", [0, -1, 1, 2])
def test_register_upcaster_rejects_versions_that_can_never_run(from_version: int) -> None:
    # run_started is at schema version 1: there is nothing older to lift from.
    with pytest.raises(ValueError):
        EventCodec().register_upcaster("run_started", from_version, _rename("a", "b"))


def test_upcaster_lifts_an_old_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStarted, "schema_version", 2)
    codec = EventCodec()
    codec.register_upcaster("run_started", 1, _rename("goal", "task"))

    assert codec.decode("run_started", 1, _started_at_v1("goal"), "r", 1) == _STARTED
    # Data written at the current version is read as is.
    assert codec.decode("run_started", 2, EventCodec.encode(_STARTED), "r", 1) == _STARTED


def test_upcasters_chain_in_version_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStarted, "schema_version", 3)
    codec = EventCodec()
    # Registered out of order on purpose: the codec, not registration order, sets the sequence.
    codec.register_upcaster("run_started", 2, _rename("objective", "task"))
    codec.register_upcaster("run_started", 1, _rename("goal", "objective"))

    assert codec.decode("run_started", 1, _started_at_v1("goal"), "r", 1) == _STARTED
    assert codec.decode("run_started", 2, _started_at_v1("objective"), "r", 1) == _STARTED


def test_missing_upcaster_is_a_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStarted, "schema_version", 3)
    codec = EventCodec()
    codec.register_upcaster("run_started", 1, _rename("goal", "objective"))
    with pytest.raises(DecodeError, match="from schema version 2") as caught:
        codec.decode("run_started", 1, _started_at_v1("goal"), "run-4", 8)
    assert (caught.value.stream_id, caught.value.version) == ("run-4", 8)


def test_upcaster_output_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStarted, "schema_version", 2)
    codec = EventCodec()
    codec.register_upcaster("run_started", 1, lambda raw: raw)  # forgets the rename
    with pytest.raises(DecodeError):
        codec.decode("run_started", 1, _started_at_v1("goal"), "r", 1)


def test_malformed_json_on_the_upcast_path_is_a_decode_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RunStarted, "schema_version", 2)
    codec = EventCodec()
    codec.register_upcaster("run_started", 1, _rename("goal", "task"))
    with pytest.raises(DecodeError):
        codec.decode("run_started", 1, b"{not json", "r", 1)


def test_upcasters_belong_to_their_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStarted, "schema_version", 2)
    EventCodec().register_upcaster("run_started", 1, _rename("goal", "task"))
    with pytest.raises(DecodeError):
        EventCodec().decode("run_started", 1, _started_at_v1("goal"), "r", 1)
    with pytest.raises(DecodeError):
        default_codec.decode("run_started", 1, _started_at_v1("goal"), "r", 1)
