"""Redaction: secrets are cut out of every event before it is folded and written.

The engine passes every event through ``Redactor.event_filter()`` (with the size limits) before
it reaches the state, the log, the sink and the idempotency ledgers. A secret the built-in
detectors know (provider API keys, ``Authorization`` tokens, passwords in URLs, PEM private
keys; see ``agentledger.engine._secrets``) or a pattern of the caller's is replaced by
``[REDACTED:<kind>]``, wherever it sits: a task, a system prompt, a model's text or tool calls
(the raw JSON too), a tool's arguments and result, an error's text, a reason.

The log is the truth, so what was cut is gone for the run as well: the model sees the marker
on later turns, a tool is handed the marker in place of a secret the model wrote into its
arguments, and a replay reproduces exactly that. Credentials belong in a tool's own
configuration, never in what flows through the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from types import NoneType
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin

from pydantic import BaseModel

from agentledger.engine._secrets import BUILTIN_KINDS, MARKER, SecretDetectors
from agentledger.events import Event

Pattern = str | re.Pattern[str]
"""A caller's pattern: a regular expression, as text or compiled."""

Patterns = Iterable[Pattern | tuple[str, Pattern]] | Mapping[str, Pattern]
"""A caller's patterns: each alone (named ``custom``) or with its name, or a mapping by name."""

_Model = TypeVar("_Model", bound=BaseModel)

_NAME = re.compile(r"[a-z0-9_]{1,40}")

_NOT_WALKED = frozenset(
    {
        "type",
        "run_id",
        "span_id",
        "parent_span_id",
        "call_id",
        "id",
        "name",
        "reservation_id",
        "idempotency_key",
        "original_run_id",
        "original_call_id",
        "forked_from",
        "child_run_id",  # names a stream: a sub-agent run must be found under it
        "parent_run_id",
        "parent_call_id",
        "user_id",
        "surface",
        "agent",
        "model",
        "from_model",
        "to_model",
        "tool_name",
        "tier",
        "tiers",
        "key_scope",
        "request_digest",
        "error_type",
        "method",
        "found",
        "purpose",
        "finish_reason",
        "call_ids",
    }
)
"""Fields that name things (runs, spans, calls, tools, models, streams) rather than carry
content: changing one would break the links a fold follows, and none holds free text."""


class Redactor:
    """Finds secrets in text and in events and replaces them by ``[REDACTED:<kind>]``.

    ``Redactor()`` uses every built-in detector (``BUILTIN_KINDS``); ``allow`` names kinds to
    leave alone (e.g. ``allow={"url_password"}``); ``patterns`` adds the caller's own, as regular
    expressions (a compiled pattern keeps its flags), each named in its marker (a mapping
    ``{"employee_id": r"EMP-[0-9]{6}"}`` or ``(name, pattern)`` pairs; ``custom`` without a
    name). They run after the built-in detectors, in order. A pattern must not match the empty
    string or a marker (redacting twice must change nothing).
    ``Redactor.off()`` finds nothing. Immutable: ``with_pattern`` returns a new one.
    """

    __slots__ = ("_allow", "_detectors", "_patterns")

    def __init__(
        self,
        *,
        patterns: Patterns = (),
        allow: Iterable[str] = (),
    ) -> None:
        allowed = frozenset(allow)
        unknown = allowed - set(BUILTIN_KINDS)
        if unknown:
            raise ValueError(f"unknown kinds to allow {sorted(unknown)}; known: {BUILTIN_KINDS}")
        self._allow = allowed
        self._detectors = SecretDetectors(k for k in BUILTIN_KINDS if k not in allowed)
        named = patterns.items() if isinstance(patterns, Mapping) else map(_named, patterns)
        self._patterns = tuple(_compiled(name, pattern) for name, pattern in named)
        markers = [MARKER.format(kind=k) for k in (*BUILTIN_KINDS, *self.pattern_names)]
        for (name, compiled, _), marker in ((p, m) for p in self._patterns for m in markers):
            if compiled.search(marker):
                raise ValueError(
                    f"pattern {name!r} ({compiled.pattern!r}) matches the marker {marker!r}: "
                    "redacting twice would not give the same text"
                )

    @classmethod
    def off(cls) -> Self:
        """A redactor that finds nothing (the engine then records texts as they are)."""
        return cls(allow=BUILTIN_KINDS)

    def with_pattern(self, pattern: Pattern, name: str = "custom") -> Redactor:
        """This redactor plus ``pattern``, whose matches become ``[REDACTED:<name>]``."""
        known: list[tuple[str, Pattern]] = [(n, c) for n, c, _ in self._patterns]
        return Redactor(patterns=[*known, (name, pattern)], allow=self._allow)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The built-in kinds of secret looked for."""
        return self._detectors.kinds

    @property
    def pattern_names(self) -> tuple[str, ...]:
        """The names of the caller's patterns, in order."""
        return tuple(name for name, _, _ in self._patterns)

    @property
    def enabled(self) -> bool:
        """Whether anything is looked for at all."""
        return bool(self._detectors.kinds or self._patterns)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced; ``text`` itself (the same object) if none."""
        result = self._detectors.redact(text)
        for _, compiled, marker in self._patterns:
            result = compiled.sub(marker, result)
        return text if result == text else result

    def redact_value(self, value: Any) -> Any:
        """A JSON-like value (strings in dicts, lists, tuples, pydantic models) with every string
        redacted, dict keys too; ``value`` itself (the same object) when nothing changed."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            changed = False
            items = []
            for key, item in value.items():
                new_key = self.redact(key) if isinstance(key, str) else key
                new_item = self.redact_value(item)
                changed = changed or new_key is not key or new_item is not item
                items.append((new_key, new_item))
            return dict(items) if changed else value
        if isinstance(value, list | tuple):
            new = [self.redact_value(item) for item in value]
            if all(a is b for a, b in zip(new, value, strict=True)):
                return value
            return new if isinstance(value, list) else tuple(new)
        if isinstance(value, BaseModel):
            return self._redact_model(value)
        return value

    def redact_event(self, event: Event) -> Event:
        """``event`` with every secret in its content replaced (the same event if none)."""
        return self._redact_model(event)

    def event_filter(self) -> Callable[[Event], Event] | None:
        """The engine's filter for every recorded event, or ``None`` when this finds nothing."""
        return self.redact_event if self.enabled else None

    def _redact_model(self, model: _Model) -> _Model:
        updates: dict[str, Any] = {}
        for name in _walked_fields(type(model)):
            value = getattr(model, name)
            new = self.redact_value(value)
            if new is not value:
                updates[name] = new
        return model.model_copy(update=updates) if updates else model

    def __repr__(self) -> str:
        if not self.enabled:
            return "Redactor.off()"
        return f"Redactor(kinds={self.kinds!r}, patterns={self.pattern_names!r})"


@cache
def _walked_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``cls`` that may hold text (looked up once per class: most events have
    few, and a turn's start none)."""
    return tuple(
        name
        for name, info in cls.model_fields.items()
        if name not in _NOT_WALKED and _holds_text(info.annotation)
    )


_SCALARS = (int, float, bool, NoneType, datetime, date, Decimal)


def _holds_text(annotation: Any) -> bool:
    """Whether a value of this type may hold a string that is content (not a ``Literal`` tag);
    a type it cannot tell (a recursive alias such as ``JsonValue``) is walked."""
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return False
    if origin is Annotated:
        return _holds_text(get_args(annotation)[0])
    if origin is not None:  # a union, tuple, list or dict: any of its parts
        return any(_holds_text(a) for a in get_args(annotation) if a is not Ellipsis)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return bool(_walked_fields(annotation))
    return annotation not in _SCALARS


def _named(pattern: Pattern | tuple[str, Pattern]) -> tuple[str, Pattern]:
    return pattern if isinstance(pattern, tuple) else ("custom", pattern)


def _compiled(name: str, pattern: Pattern) -> tuple[str, re.Pattern[str], str]:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a pattern's name must be 1 to 40 of a-z, 0-9 and _, not {name!r}")
    try:
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern {name!r} is not a regular expression: {exc}") from None
    if not isinstance(compiled.pattern, str):
        raise ValueError(f"pattern {name!r} must match text (str), not bytes")
    if compiled.search(""):
        raise ValueError(f"pattern {name!r} ({compiled.pattern!r}) matches the empty string")
    # The name is plain [a-z0-9_]: the marker holds nothing ``sub`` reads as a group reference.
    return name, compiled, MARKER.format(kind=name)
