"""Values from the log made safe for a terminal: control characters shown, never obeyed.

Anything a run recorded (a user id, an agent name, a model's output, an error text) may hold
escape sequences; printed raw they could move the cursor, rewrite earlier lines, retitle the
window or hide text. The CLI prints them as Python-style escapes (``\\x1b``) instead.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (U+009B is a one-character CSI to many terminals), and the
# invisible characters that reorder or break lines: bidi overrides and isolates, line and
# paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# In JSON text these appear only inside strings (as UTF-8 they are multi-byte, or a raw DEL);
# JSON may carry them raw, so rewriting them as ``\u00XX`` escapes changes no value.
_UNSAFE_JSON = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9\xaa-\xae]|\xe2\x81[\xa6-\xa9]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(value: object) -> str:
    """``str(value)`` with every terminal control character escaped (``\\x1b``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape, str(value))


def _escape_json(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


def safe_json(line: bytes) -> bytes:
    """JSON bytes with the control characters JSON allows raw (DEL, C1, bidi and line
    separators) written as ``\\u`` escapes instead: the same JSON value, safe on a terminal.
    (orjson already escapes the C0 controls.)"""
    return _UNSAFE_JSON.sub(_escape_json, line)
