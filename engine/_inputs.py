"""What the engine's API accepts from its caller: checked up front, with one clear typed error.

Ids become stream names and database keys in every backend, and texts become events; what no
backend can store, or what is over the size limits, is refused before anything is written or any
model is asked.
"""

from __future__ import annotations

from ._errors import InvalidInputError

MAX_ID_CHARS = 256


def check_id(what: str, value: object) -> str:
    """``value`` if it can name a run, a user or a surface; ``InvalidInputError`` if not."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{what} is {len(value)} characters long; at most {MAX_ID_CHARS}")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidInputError(f"{what} must not hold control characters: {value!r}")
    check_unicode(what, value)
    return value


def check_text(what: str, value: object, limit: int) -> str:
    """``value`` if it is text the log can hold within ``limit`` bytes; ``InvalidInputError``
    if not."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(f"{what} must not hold NUL characters")
    size = check_unicode(what, value)
    if size > limit:
        raise InvalidInputError(f"{what} is {size} bytes; the size limit is {limit}")
    return value


def check_unicode(what: str, value: str) -> int:
    """The size of ``value`` in UTF-8; ``InvalidInputError`` if it is not valid Unicode."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} is not valid Unicode (it holds a lone surrogate)"
        ) from None
