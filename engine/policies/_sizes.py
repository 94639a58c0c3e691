"""Size limits: no event larger than the log should hold, and memory bounded with it.

Every variable-size part of an event has a limit in bytes as the log stores it (JSON): a model's
text, a tool call's arguments (per call and per reply), a tool's result, an error's text, and
what a caller hands in (a task, a system prompt). Text over its limit is cut with a marker that
gives the original size; a tool result over its limit is replaced by a small object that says so
and shows its start. With the defaults no event comes near 1 MiB. Model replies whose tool calls
are over the limits are malformed replies (the engine refuses them at the port); inputs over
them are refused at the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import JsonValue

from agentledger.events import Event

KIB = 1024

_MARKER = " [... cut: {total} bytes in all, over the limit of {limit}]"


@dataclass(frozen=True, slots=True)
class SizePolicy:
    """Upper bounds, in bytes of JSON, on what one event carries (see the module docstring).

    The defaults keep the largest event (a reply with text and tool calls) under 1 MiB.
    """

    max_model_text: int = 256 * KIB
    max_tool_arguments: int = 256 * KIB
    """Per tool call of a reply. A tool's own ``max_argument_bytes`` (64 KiB by default) is
    usually lower: a call between the two is recorded and refused to the model as oversized,
    so it can correct itself; a reply with a call above this is malformed."""
    max_tool_arguments_total: int = 512 * KIB
    """All tool calls of one reply together."""
    max_tool_calls: int = 128
    """Tool calls in one reply."""
    max_tool_result: int = 256 * KIB
    max_error_text: int = 8 * KIB
    max_input_text: int = 256 * KIB
    """A task, a system prompt: refused above this, not cut (cutting would change the task)."""

    def __post_init__(self) -> None:
        for name in (
            "max_model_text",
            "max_tool_arguments",
            "max_tool_arguments_total",
            "max_tool_calls",
            "max_tool_result",
            "max_error_text",
            "max_input_text",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SizePolicy.{name} must be a positive int, not {value!r}")

    def cut_text(self, text: str, limit: int) -> str:
        """``text`` itself when its JSON fits in ``limit`` bytes, else its start and a marker."""
        if len(text) * 6 <= limit:  # no character takes more than 6 bytes of JSON (\u0001)
            return text
        total = json_size(text)
        if total <= limit:
            return text
        marker = _MARKER.format(total=total, limit=limit)
        keep = max(limit - len(marker) - 2, 0)
        cut = text
        while json_size(cut) + len(marker) > limit:  # escapes may make a prefix grow in JSON
            # A character is at least a byte, so the first ``keep`` characters hold the first
            # ``keep`` bytes: only they are encoded, not the whole text.
            data = cut[:keep].encode("utf-8", "surrogatepass")[:keep]
            cut = data.decode("utf-8", "ignore")
            keep = keep * 3 // 4
        return cut + marker

    def cut_result(self, result: JsonValue) -> JsonValue:
        """``result`` itself when its JSON fits ``max_tool_result``, else a small stand-in."""
        if isinstance(result, str):
            return self.cut_text(result, self.max_tool_result)
        if not isinstance(result, dict | list):
            return result
        data = orjson.dumps(result)
        if len(data) <= self.max_tool_result:
            return result
        preview = data[: min(self.max_tool_result // 2, 4 * KIB)].decode("utf-8", "ignore")
        return {
            "truncated": True,
            "original_bytes": len(data),
            "limit_bytes": self.max_tool_result,
            "preview": preview,
        }

    def event_filter(self) -> Callable[[Event], Event]:
        """The filter that holds every recorded event to these limits (the same event when it
        already fits)."""
        return lambda event: _limited(self, event)


def json_size(text: str) -> int:
    """How many bytes ``text`` takes as a JSON string (quotes and escapes included)."""
    if len(text) <= _PIECE:
        return len(orjson.dumps(text)) if _encodable(text) else len(text) * 6 + 2
    # In pieces, so that a huge text is never copied whole; escapes are per character, so the
    # sum is exact.
    total = 2
    for start in range(0, len(text), _PIECE):
        piece = text[start : start + _PIECE]
        if not _encodable(piece):
            return len(text) * 6 + 2
        total += len(orjson.dumps(piece)) - 2
    return total


_PIECE = 1 << 20


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _limited(policy: SizePolicy, event: Event) -> Event:
    kind = event.type
    updates: dict[str, Any] = {}
    field = _TEXT_FIELDS.get(kind)
    if field is not None:
        text = getattr(event, field)
        limit = policy.max_model_text if kind == "model_call_responded" else policy.max_error_text
        cut = policy.cut_text(_unicode(text), limit)
        if cut is not text:
            updates[field] = cut
    if kind in _RESULT_EVENTS:
        result: Any = getattr(event, "result")  # noqa: B009 - the types listed all have one
        smaller = policy.cut_result(result)
        if smaller is not result:
            updates["result"] = smaller
    return event.model_copy(update=updates) if updates else event


def _unicode(text: str) -> str:
    """``text``, with any lone surrogate (an exception's text may hold one) replaced, since the
    log stores UTF-8."""
    if _encodable(text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in text)


_TEXT_FIELDS = {
    "model_call_responded": "text",
    "model_call_failed": "message",
    "tool_tier_failed": "message",
    "tool_outcome_unknown": "message",
    "tool_call_reconciled": "message",
    "run_failed": "message",
    "run_cancelled": "reason",
}
"""Events with one text that may be long, and the field that holds it (errors are cut at
``max_error_text``, a model's text at ``max_model_text``)."""

_RESULT_EVENTS = frozenset({"tool_call_succeeded", "tool_result_reused", "tool_call_reconciled"})
