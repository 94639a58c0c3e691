"""Validation at the boundary (pattern 1): a model's tool call becomes a typed call or a rejection.

``validate_call`` never raises for anything a model can send: bad JSON, a non-object, an unknown
tool, oversized or invalid arguments all come back as a ``RejectedCall`` with one ``FieldIssue``
per problem, which the engine records and returns to the model so it can correct itself. A
validator of the argument model that raises something other than ``ValueError`` or
``AssertionError`` is a bug in the tool and propagates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic

from pydantic import JsonValue, ValidationError

from agentledger.events import FieldIssue, ToolCall, ToolRejection

from ._tools import _MAX_INT, _MIN_INT, A, Tool

MAX_ARGUMENT_DEPTH = 64
"""Arguments nested deeper than this are rejected as oversized (no tool needs it; recursion does
not like it)."""


@dataclass(frozen=True, slots=True)
class ValidCall(Generic[A]):
    """A call that passed validation: the tool, its typed arguments and their canonical JSON form.

    ``arguments`` is ``args`` dumped in JSON mode by alias; it is what is recorded and keyed, and
    ``tool.args_model.model_validate(arguments)`` gives ``args`` back.
    """

    call: ToolCall
    tool: Tool[A]
    args: A
    arguments: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class RejectedCall:
    """A call refused before anything ran, with why (``error_type``) and where (``errors``)."""

    call: ToolCall
    error_type: ToolRejection
    errors: tuple[FieldIssue, ...]


def validate_call(tools: Mapping[str, Tool[Any]], call: ToolCall) -> ValidCall[Any] | RejectedCall:
    """Check a model's tool call against the declared tools.

    In order: the tool must exist (``unknown_tool``, listing the names there are); the raw
    arguments must fit the tool's ``max_argument_bytes`` in UTF-8 (``oversized_arguments``,
    checked before parsing so a huge payload costs nothing); they must parse as strict JSON
    (``invalid_json``: NaN, Infinity and duplicate keys are refused too), be a JSON object
    (``invalid_arguments``), nest at most ``MAX_ARGUMENT_DEPTH`` deep (``oversized_arguments``)
    and validate against the argument model (``invalid_arguments``, one issue per pydantic
    error), and hold nothing the event log cannot record (``invalid_arguments``: integers beyond
    64 bits, lone surrogates). Empty arguments (``""``), which some providers send for a tool
    without parameters, count as ``{}``.
    """
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return _reject(
            call,
            "unknown_tool",
            FieldIssue(
                message=f"there is no tool named {call.name!r}; available tools: {available}",
                kind="unknown_tool",
            ),
        )
    size = len(call.arguments.encode("utf-8", errors="surrogatepass"))
    if size > tool.max_argument_bytes:
        return _reject(
            call,
            "oversized_arguments",
            FieldIssue(
                message=(
                    f"the arguments are {size} bytes; {tool.name} accepts at most "
                    f"{tool.max_argument_bytes}"
                ),
                kind="too_long",
            ),
        )
    try:
        parsed = _parse(call.arguments)
    except _BadJson as exc:
        return _reject(call, "invalid_json", FieldIssue(message=str(exc), kind="json_invalid"))
    if not isinstance(parsed, dict):
        return _reject(
            call,
            "invalid_arguments",
            FieldIssue(
                message=f"the arguments must be a JSON object, not {_json_kind(parsed)}",
                kind="dict_type",
            ),
        )
    if _depth(parsed) > MAX_ARGUMENT_DEPTH:
        return _reject(
            call,
            "oversized_arguments",
            FieldIssue(
                message=f"the arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels",
                kind="too_deep",
            ),
        )
    try:
        args = tool.args_model.model_validate(parsed)
    except ValidationError as exc:
        issues = tuple(
            FieldIssue(loc=tuple(error["loc"]), message=error["msg"], kind=error["type"])
            for error in exc.errors(include_url=False)
        )
        return RejectedCall(call, "invalid_arguments", issues)
    arguments: dict[str, JsonValue] = args.model_dump(mode="json", by_alias=True)
    unrecordable = tuple(_unrecordable(arguments, ()))
    if unrecordable:
        return RejectedCall(call, "invalid_arguments", unrecordable)
    return ValidCall(call, tool, args, arguments)


def _reject(call: ToolCall, error_type: ToolRejection, issue: FieldIssue) -> RejectedCall:
    return RejectedCall(call, error_type, (issue,))


class _BadJson(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _BadJson(f"{name} is not valid JSON; use a number or null")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Which of two values the model meant is unknowable; guessing would key and run
            # something it may not have asked for.
            raise _BadJson(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _parse(raw: str) -> object:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except _BadJson:
        raise
    except json.JSONDecodeError as exc:
        raise _BadJson(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer longer than Python's digit limit; RecursionError: deep nesting.
        raise _BadJson(f"not valid JSON: {type(exc).__name__}: {exc}") from exc


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _unrecordable(value: JsonValue, loc: tuple[str | int, ...]) -> list[FieldIssue]:
    # Valid JSON that the event log cannot hold (orjson: 64-bit integers, strings without lone
    # surrogates) is refused here, where the model can fix it, not at the append.
    if isinstance(value, bool):
        return []
    if isinstance(value, int) and not _MIN_INT <= value <= _MAX_INT:
        return [FieldIssue(loc=loc, message="integer out of the 64-bit range", kind="int_range")]
    if isinstance(value, str) and not _encodable(value):
        return [FieldIssue(loc=loc, message="string holds a lone surrogate", kind="string_type")]
    issues: list[FieldIssue] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                issues.append(
                    FieldIssue(loc=loc, message="key holds a lone surrogate", kind="string_type")
                )
            issues.extend(_unrecordable(item, (*loc, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            issues.extend(_unrecordable(item, (*loc, index)))
    return issues


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _depth(value: object) -> int:
    # Iterative, so depth itself cannot exhaust the stack.
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in node)
    return deepest
