"""Server-sent events: the framing both streaming clients read, and the output meter they share.

The parser follows the WHATWG "event stream" rules as far as model APIs use them: ``event:``,
``data:`` (several lines joined by newlines), ``id:``, comments (``:``) ignored, an event ends
at a blank line. ``retry:`` is ignored (the engine, not the client, decides on retries). It reads
lines, so line endings (``\\n``, ``\\r\\n``, ``\\r``) are httpx's to split.

No dependency for it: the rules are twenty lines, and the clients need to stop reading at
exactly the event they choose (the output cut-off), which a plain async iterator gives.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ._pricing import approximate_tokens


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of a stream: its type (``"message"`` when unnamed) and its data."""

    event: str
    data: str


async def server_sent_events(lines: AsyncIterable[str]) -> AsyncGenerator[ServerSentEvent, None]:
    """The events in ``lines`` (a response's text lines, without their endings), in order.

    An event not ended by a blank line when the lines end is dropped, as the standard says: a
    stream cut mid-event did not deliver it.
    """
    kind = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(kind or "message", "\n".join(data))
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)


CHARS_PER_TOKEN_AT_MOST = 8
"""The text estimate of the output meter: at least one token per this many characters."""


class OutputMeter:
    """Counts a streamed reply's output tokens as it arrives, to stop it at ``max_tokens``.

    The count is the larger of the pieces of output seen (servers send about one token per
    piece) and one token per ``CHARS_PER_TOKEN_AT_MOST`` characters of their text, so a server
    that packs many tokens into one piece cannot run far past the limit either. The text
    estimate is a low one (``approximate_tokens``' four characters a token would run ahead of
    the real count of plain English, whose tokens with their leading space are often five to
    seven characters, and cut honest streams short). A piece is taken while the count is below
    ``max_tokens``; the next piece after it reached it is the cut-off. ``full`` says it did.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._pieces = 0
        self._chars = 0

    @property
    def count(self) -> int:
        """The output tokens counted so far."""
        return max(self._pieces, -(-self._chars // CHARS_PER_TOKEN_AT_MOST))

    @property
    def full(self) -> bool:
        """Whether the count has reached ``max_tokens``: the next piece is not taken."""
        return self.count >= self.max_tokens

    def add(self, piece: str) -> None:
        """Count one piece of output (text or tool-call arguments)."""
        self._pieces += 1
        self._chars += len(piece)

    def recorded_tokens(self) -> int:
        """The output tokens recorded for a reply without server usage: the count, never more
        than ``max_tokens`` (what the reservation holds; a stream is cut there)."""
        return min(self.count, self.max_tokens)


def input_estimate(body: Mapping[str, Any]) -> int:
    """The input tokens recorded for a streamed reply whose server sent no usage:
    ``approximate_tokens`` of the conversation as sent (``system`` and ``messages`` as JSON).

    The call's reservation counted one token per byte of the same conversation, plus overheads,
    so the settled cost stays within it (by about four times). Tool schemas are left out on
    both sides: the reservation's per-request overhead stands for them.
    """
    sent = [body.get("system"), body.get("messages")]
    return approximate_tokens(orjson.dumps(sent).decode())
