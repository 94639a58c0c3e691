"""A small JSON-schema validator for ``JsonSchema`` checks (no jsonschema dependency).

It supports the subset named in ``JSON_SCHEMA_KEYWORDS`` and refuses any other keyword when a
schema is checked, so no constraint is ever silently skipped. Errors come back as readable
lines with a JSON path (``$.items[2].name: expected string, got integer``), all of them, so a
model asked to revise sees every problem at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

JSON_SCHEMA_KEYWORDS: frozenset[str] = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
"""The JSON-schema keywords a dict schema of ``JsonSchema`` may use, with their usual meaning.

``type`` is one of string, number, integer, boolean, null, object, array, or a list of them
(``integer`` also matches a float with no fraction, as in JSON Schema; booleans are never
numbers). ``items`` is one schema for every element (no tuple form); ``additionalProperties``
is a boolean or a schema; ``exclusiveMinimum``/``exclusiveMaximum`` are numbers (draft 6 on); a
schema may also be ``true`` or ``false``. Annotations (title, description, default, examples,
$schema, $id, $comment) are ignored. Anything else (``$ref``, ``anyOf``, ``pattern``, ``format``,
...) is refused when the check is built, so no constraint is ever silently skipped.
"""

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
)
_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_names(schema: Mapping[str, Any]) -> list[str]:
    types = schema["type"]
    return [types] if isinstance(types, str) else list(types)


def check_schema(schema: object, path: str = "$") -> None:
    """Raise ``ValueError`` for a schema outside the subset or malformed, naming where."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ValueError(f"the JSON schema at {path} must be an object or a boolean")
    unknown = sorted(set(schema) - JSON_SCHEMA_KEYWORDS - _ANNOTATIONS)
    if unknown:
        raise ValueError(
            f"the JSON schema at {path} uses unsupported keyword(s) {_quoted(unknown)}; "
            f"the supported subset is {', '.join(sorted(JSON_SCHEMA_KEYWORDS))}"
        )

    def bad(keyword: str, expected: str) -> ValueError:
        return ValueError(f"the JSON schema at {path}: {keyword!r} must be {expected}")

    if "type" in schema:
        types = schema["type"]
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not names or any(t not in _TYPES for t in names):
            raise bad("type", f"one of {', '.join(_TYPES)} or a non-empty list of them")
    for keyword in _COUNTS:
        value = schema.get(keyword, 0)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise bad(keyword, "a non-negative integer")
    for keyword in _BOUNDS:
        if keyword in schema:
            value = schema[keyword]
            if not (_is_number(value) and math.isfinite(value)):
                raise bad(keyword, "a finite number")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise bad("required", "a list of property names")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        raise bad("enum", "a non-empty list")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise bad("properties", "an object of schemas")
    for key, sub in properties.items():
        check_schema(sub, _child(f"{path}.properties", str(key)))
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items")
    if "additionalProperties" in schema:
        check_schema(schema["additionalProperties"], f"{path}.additionalProperties")


def _quoted(items: list[str]) -> str:
    return ", ".join(json.dumps(s, ensure_ascii=False) for s in items)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """The JSON value of ``text``; ``ValueError`` if it is not JSON (NaN and Infinity are not)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _has_type(value: object, name: str) -> bool:
    if name == "number":
        return _is_number(value)
    if name == "integer":
        return _is_number(value) and (isinstance(value, int) or float(value).is_integer())  # type: ignore[arg-type]
    return _kind(value) == name


def _json_equal(a: object, b: object) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    # Same type, so a boolean never equals a number (Python has True == 1; JSON does not).
    return type(a) is type(b) and a == b


def _shown(value: object, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate(value: Any, schema: Any) -> list[str]:
    """Every way ``value`` breaks ``schema`` (which passed ``check_schema``), as readable lines."""
    errors: list[str] = []
    _validate(value, schema, "$", errors)
    return errors


def _validate(value: Any, schema: Any, path: str, errors: list[str]) -> None:
    if schema is True:
        return
    if schema is False:
        errors.append(f"{path}: no value is allowed here")
        return
    if "type" in schema:
        names = _type_names(schema)
        if not any(_has_type(value, t) for t in names):
            # The other keywords would only repeat that the value has the wrong type.
            errors.append(f"{path}: expected {' or '.join(names)}, got {_kind(value)}")
            return
    if "const" in schema and not _json_equal(value, schema["const"]):
        errors.append(f"{path}: expected {_shown(schema['const'])}, got {_shown(value)}")
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        errors.append(f"{path}: expected one of {_shown(schema['enum'])}, got {_shown(value)}")
    if isinstance(value, str):
        _validate_sized(len(value), schema, "minLength", "maxLength", "characters", path, errors)
    elif _is_number(value):
        _validate_number(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_sized(len(value), schema, "minItems", "maxItems", "items", path, errors)
        if "items" in schema:
            for index, item in enumerate(value):
                _validate(item, schema["items"], _child(path, index), errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, errors)


def _validate_sized(
    size: int, schema: Any, low: str, high: str, unit: str, path: str, errors: list[str]
) -> None:
    if low in schema and size < schema[low]:
        errors.append(f"{path}: expected at least {schema[low]} {unit}, got {size}")
    if high in schema and size > schema[high]:
        errors.append(f"{path}: expected at most {schema[high]} {unit}, got {size}")


def _validate_number(value: float, schema: Any, path: str, errors: list[str]) -> None:
    shown = _shown(value)
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: expected at least {schema['minimum']}, got {shown}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: expected at most {schema['maximum']}, got {shown}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: expected more than {schema['exclusiveMinimum']}, got {shown}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: expected less than {schema['exclusiveMaximum']}, got {shown}")


def _validate_object(value: dict[str, Any], schema: Any, path: str, errors: list[str]) -> None:
    for key in schema.get("required", []):
        if key not in value:
            errors.append(f"{path}: missing required property {json.dumps(key)}")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], _child(path, key), errors)
        elif extra is False:
            errors.append(f"{path}: unexpected property {json.dumps(key, ensure_ascii=False)}")
        else:
            _validate(item, extra, _child(path, key), errors)
