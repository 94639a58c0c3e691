"""Hypothesis strategies for JSON values that a JSON schema describes (the subset tools use).

It covers what pydantic emits for argument models: types (and lists of them), ``enum``,
``const``, ``anyOf``/``oneOf``/``allOf``, ``$ref`` into ``$defs``, bounds and ``multipleOf`` on
numbers, lengths, ``pattern`` and common ``format``s on strings, ``items``/``prefixItems`` and
sizes on arrays, ``properties``/``required``/``additionalProperties`` on objects. What it does
not know, it generates as any JSON value: callers keep only the values their validator accepts,
so the schema only has to make valid values likely, not certain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from hypothesis import strategies as st
from pydantic import JsonValue

MAX_DEPTH = 4
"""How deep recursive schemas and arbitrary JSON nest."""
_MAX_INT = 2**53  # exact in every JSON reader, doubles included
_EXTRA_ITEMS = 3


def any_json(depth: int = MAX_DEPTH) -> st.SearchStrategy[JsonValue]:
    """Any JSON value, nested at most ``depth`` deep."""
    scalars: st.SearchStrategy[JsonValue] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-_MAX_INT, _MAX_INT),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    if depth <= 1:
        return scalars
    inner = any_json(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    )


def json_values(schema: Mapping[str, Any]) -> st.SearchStrategy[JsonValue]:
    """JSON values for ``schema`` (a JSON schema, e.g. a tool's ``spec().parameters``)."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _values(schema, defs, 0)


def _values(node: Any, defs: Mapping[str, Any], depth: int) -> st.SearchStrategy[JsonValue]:
    if node is True or node == {}:
        return any_json(MAX_DEPTH - depth)
    if node is False or not isinstance(node, Mapping) or depth > MAX_DEPTH:
        return st.nothing()
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        target = defs.get(name)
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _values({**target, **rest} if target else rest, defs, depth + 1)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(list(node["enum"]))
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            rest = {k: v for k, v in node.items() if k != combinator}
            return st.one_of([_values({**rest, **part}, defs, depth) for part in node[combinator]])
    if "allOf" in node:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for part in node["allOf"]:
            merged.update(part)
        return _values(merged, defs, depth)
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([_values({**node, "type": k}, defs, depth) for k in kind])
    if kind is None:
        kind = "object" if "properties" in node else "array" if "items" in node else None
    maker = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if maker is None:
        return any_json(MAX_DEPTH - depth)
    return maker(node, defs, depth)


def _null(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> st.SearchStrategy[Any]:
    return st.none()


def _boolean(
    node: Mapping[str, Any], defs: Mapping[str, Any], depth: int
) -> st.SearchStrategy[Any]:
    return st.booleans()


def _bounds(node: Mapping[str, Any]) -> tuple[float | None, float | None]:
    low, high = node.get("minimum"), node.get("maximum")
    ex_low, ex_high = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low = ex_low if low is None else max(low, ex_low)
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high = ex_high if high is None else min(high, ex_high)
    return low, high


def _integer(
    node: Mapping[str, Any], defs: Mapping[str, Any], depth: int
) -> st.SearchStrategy[Any]:
    low, high = _bounds(node)
    lo = -_MAX_INT if low is None else math.ceil(low)
    hi = _MAX_INT if high is None else math.floor(high)
    # Exclusive bounds on integers: the bound itself is out.
    if node.get("exclusiveMinimum") is not None and lo == node["exclusiveMinimum"]:
        lo += 1
    if node.get("exclusiveMaximum") is not None and hi == node["exclusiveMaximum"]:
        hi -= 1
    step = node.get("multipleOf")
    if isinstance(step, int) and step > 0:
        return st.integers(math.ceil(lo / step), math.floor(hi / step)).map(lambda n: n * step)
    return st.integers(lo, hi) if lo <= hi else st.nothing()


def _number(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> st.SearchStrategy[Any]:
    low, high = _bounds(node)
    step = node.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        lo = -1000 if low is None else math.ceil(low / step)
        hi = 1000 if high is None else math.floor(high / step)
        return st.integers(lo, hi).map(lambda n: n * step)
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min=low is not None and low == node.get("exclusiveMinimum"),
        exclude_max=high is not None and high == node.get("exclusiveMaximum"),
        allow_nan=False,
        allow_infinity=False,
    )


_FORMATS: dict[str, st.SearchStrategy[str]] = {
    "date-time": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    "date": st.dates().map(lambda d: d.isoformat()),
    "time": st.times().map(lambda t: t.isoformat()),
    "uuid": st.uuids().map(str),
    "email": st.emails(),
    "uri": st.from_regex(r"https://[a-z]{1,12}\.example/[a-z0-9]{0,12}", fullmatch=True),
}


def _string(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> st.SearchStrategy[Any]:
    low = int(node.get("minLength", 0))
    high = node.get("maxLength")
    high = low + 20 if high is None else int(high)
    known = _FORMATS.get(str(node.get("format")))
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        base: st.SearchStrategy[str] = st.from_regex(pattern, fullmatch=True)
    elif known is not None:
        base = known
    else:
        return st.text(min_size=low, max_size=high)
    return base.filter(lambda s: low <= len(s) <= high)


def _array(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> st.SearchStrategy[Any]:
    low = int(node.get("minItems", 0))
    high = int(node.get("maxItems", low + _EXTRA_ITEMS))
    prefix = [_values(p, defs, depth + 1) for p in node.get("prefixItems", [])]
    items = node.get("items", True)
    rest = st.nothing() if items is False else _values(items, defs, depth + 1)
    if prefix:
        head = st.tuples(*prefix).map(list)
        tail = st.lists(rest, max_size=max(0, high - len(prefix)))
        return st.tuples(head, tail).map(lambda parts: parts[0] + parts[1])
    unique = bool(node.get("uniqueItems"))
    return st.lists(rest, min_size=low, max_size=max(low, high), unique_by=repr if unique else None)


def _object(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> st.SearchStrategy[Any]:
    properties: Mapping[str, Any] = node.get("properties", {})
    required = set(node.get("required", ()))
    fixed = {k: _values(v, defs, depth + 1) for k, v in properties.items() if k in required}
    optional = {k: _values(v, defs, depth + 1) for k, v in properties.items() if k not in required}
    named = st.fixed_dictionaries(fixed, optional=optional)
    extra = node.get("additionalProperties")
    if not isinstance(extra, Mapping) or not extra:
        return named
    keys = st.text(min_size=1, max_size=8).filter(lambda k: k not in properties)
    more = st.dictionaries(keys, _values(extra, defs, depth + 1), max_size=_EXTRA_ITEMS)
    return st.tuples(named, more).map(lambda parts: {**parts[1], **parts[0]})


_BY_TYPE = {
    "null": _null,
    "boolean": _boolean,
    "integer": _integer,
    "number": _number,
    "string": _string,
    "array": _array,
    "object": _object,
}
