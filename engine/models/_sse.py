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


class OutputMeter:
    """Counts a streamed reply's output tokens as it arrives, to stop it at ``max_tokens``.

    The count is the larger of the pieces of output seen (servers send about one token per
    piece) and ``approximate_tokens`` of their text (four characters a token), so neither a
    server that packs many tokens into one piece nor one that splits tokens into bytes makes it
    run far behind. A piece is taken while the count is below ``max_tokens``; the piece after
    the count reached it is the cut-off. ``full`` says the count reached it.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._pieces = 0
        self._text = ""

    @property
    def count(self) -> int:
        """The output tokens counted so far."""
        return max(self._pieces, approximate_tokens(self._text))

    @property
    def full(self) -> bool:
        """Whether the count has reached ``max_tokens``: the next piece is not taken."""
        return self.count >= self.max_tokens

    def add(self, piece: str) -> None:
        """Count one piece of output (text or tool-call arguments)."""
        self._pieces += 1
        self._text += piece

    def recorded_tokens(self) -> int:
        """The output tokens recorded for a reply without server usage: the count, never more
        than ``max_tokens`` (what the reservation holds; a stream is cut there)."""
        return min(self.count, self.max_tokens)


def input_estimate(body: Mapping[str, Any]) -> int:
    """The input tokens recorded for a streamed reply whose server sent no usage: the estimate
    of the whole request body as JSON (``approximate_tokens``). It is never above the input the
    call's reservation allowed for (one token per byte of the request), so a reply settled with
    it stays within the reservation."""
    return approximate_tokens(orjson.dumps(body).decode())
