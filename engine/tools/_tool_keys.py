"""Idempotency keys for side-effecting tool calls: canonical arguments, hashed with their scope.

Two calls get the same key exactly when they name the same tool in the same scope with arguments
that mean the same thing once volatile fields are gone. "Mean the same thing" is made concrete
by ``canonical_arguments``; the rules are part of the stored data (keys live in the log), so they
change only together with ``KEY_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Iterable, Mapping

KEY_VERSION = "agentledger-idempotency-v1"
"""Mixed into every key, so a future change of the canonical form never matches old keys."""

_Canonical = None | bool | int | float | str | list["_Canonical"] | dict[str, "_Canonical"]


def canonical_arguments(arguments: Mapping[str, object], volatile: Iterable[str] = ()) -> bytes:
    """The canonical UTF-8 JSON bytes of a tool's arguments, as hashed into its idempotency key.

    - Top-level fields named in ``volatile`` are removed (a missing one is not an error). Only
      the top level is stripped: a volatile value nested deeper should be its own top-level field
      of the argument model (e.g. ``meta: RequestMeta`` declared volatile as a whole), so what is
      stripped is always visible in the model, never a name matched anywhere in the tree.
    - Every string, object keys included, is Unicode NFC-normalised; two keys of one object that
      become equal that way raise ``ValueError`` (which value would win is not knowable).
    - Numbers are compared by value: an integral float is written as an integer (``1``, ``1.0``
      and ``1e0`` are all ``1``; ``-0.0`` is ``0``); other floats use Python's shortest
      round-trip form. ``true``/``false`` stay booleans, never ``1``/``0``.
    - Object keys are sorted by code point; no whitespace; non-ASCII is written as UTF-8, not
      escaped.

    Raises ``ValueError`` for NaN or infinities (not JSON) and ``TypeError`` for values that are
    not JSON (arguments here are the JSON-mode dump of a validated model, so neither happens in
    the engine's own use).
    """
    if isinstance(volatile, str):
        raise TypeError("volatile is a collection of field names, not one string")
    dropped = set(volatile)
    top = {key: value for key, value in arguments.items() if key not in dropped}
    return _dumps(_canonical(top))


def idempotency_key(
    tool_name: str,
    arguments: Mapping[str, object],
    volatile: Iterable[str],
    scope_id: str,
) -> str:
    """The idempotency key of a call: ``"<tool_name>:<sha256 hex>"``.

    ``scope_id`` says who shares keys: for a tool with ``key_scope="run"`` it is the run id (a
    retry inside one run is recognised, another run sends again); for ``key_scope="user"`` it is
    the user (or tenant) id, so the same email is not sent twice to the same person by two runs.
    ``Tool.idempotency_key`` picks it and prefixes the scope kind (``"run:..."``/``"user:..."``)
    so a run id can never collide with a user id of the same spelling.

    The digest covers ``KEY_VERSION``, the scope, the tool name and the canonical arguments; the
    tool name is repeated in clear in front so a key can be read in a log.
    """
    header = _dumps([KEY_VERSION, _nfc(scope_id), _nfc(tool_name)])
    digest = hashlib.sha256(header + b"\n" + canonical_arguments(arguments, volatile))
    return f"{tool_name}:{digest.hexdigest()}"


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _canonical(value: object) -> _Canonical:
    # bool before int: True is an int to Python but a distinct JSON value.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a JSON number")
        if value.is_integer():
            return int(value)  # also turns -0.0 into 0
        return value
    if isinstance(value, str):
        return _nfc(value)
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, Mapping):
        out: dict[str, _Canonical] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            normal = _nfc(key)
            if normal in out:
                raise ValueError(f"keys {key!r} collide once NFC-normalised")
            out[normal] = _canonical(item)
        return out
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _dumps(value: object) -> bytes:
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")
