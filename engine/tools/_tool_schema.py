"""The JSON schema a model is shown for a tool's arguments, cleaned for providers.

Pydantic's schema is right but noisy for a model: a ``title`` on every node, and ``$ref``s into
``$defs`` that some providers resolve poorly. Here references are inlined wherever that
terminates; only recursive models keep a ``$defs`` entry (nothing else can express them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Keywords whose value maps *names* to schemas: a key "title" in there is a property, not noise.
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# Keywords whose value is data, not a schema: never rewritten.
_DATA = frozenset({"default", "examples", "enum", "const"})
_REF_PREFIX = "#/$defs/"


def argument_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with titles dropped and non-recursive ``$ref``s inlined."""
    raw = model.model_json_schema()
    defs: dict[str, Any] = raw.pop("$defs", {})
    kept: dict[str, Any] = {}
    inliner = _Inliner(defs, kept)
    schema = inliner.inline(raw, ())
    # Defs reached only through recursion were left as references; resolve their bodies once.
    pending = [name for name in inliner.recursive if name not in kept]
    while pending:
        name = pending.pop()
        kept[name] = inliner.inline(defs[name], (name,))
        pending.extend(n for n in inliner.recursive if n not in kept and n not in pending)
    if kept:
        schema["$defs"] = dict(sorted(kept.items()))
    stripped: dict[str, Any] = _strip_titles(schema)
    return stripped


class _Inliner:
    def __init__(self, defs: dict[str, Any], kept: dict[str, Any]) -> None:
        self.defs = defs
        self.kept = kept
        self.recursive: set[str] = set()

    def inline(self, node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [self.inline(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            name = ref.removeprefix(_REF_PREFIX)
            siblings = {k: self.inline(v, stack) for k, v in node.items() if k != "$ref"}
            if name in stack:
                self.recursive.add(name)
                return {"$ref": ref, **siblings}
            body = self.inline(self.defs[name], (*stack, name))
            return {**body, **siblings}
        return {
            key: value if key in _DATA else self.inline(value, stack) for key, value in node.items()
        }


def _strip_titles(node: Any, *, names: bool = False) -> Any:
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {key: _strip_titles(value) for key, value in node.items()}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _DATA:
            out[key] = value
        else:
            out[key] = _strip_titles(value, names=key in _NAMED_SCHEMAS)
    return out
