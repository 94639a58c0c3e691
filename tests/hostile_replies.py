"""Hostile model servers: a real HTTP server on loopback answering with generated replies.

Shared by ``tests/test_hostile_replies.py`` (a few hundred replies) and
``benchmarks/hostile_replies.py`` (thousands). Each reply is drawn from a seeded generator of what
providers and OpenAI-compatible servers have been seen to send, and worse: wrong types, missing
and extra fields, impossible usage, numbers past 64 bits, lone surrogates, huge texts and tool
arguments, duplicate tool-call ids, broken JSON, error statuses with odd bodies and headers.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

Body = bytes
Reply = tuple[int, dict[str, str], Body]
"""Status, headers and body of one HTTP answer."""


@dataclass
class HostileServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers every POST with ``next_reply()``."""

    next_reply: Callable[[], Reply]
    requests: int = 0
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set, repr=False)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # ends each connection's handler on its next read
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                self.requests += 1
                status, headers, body = self.next_reply()
                lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


# -- what goes into replies ------------------------------------------------------------------------


def _weird_number(rng: random.Random) -> Any:
    return rng.choice(
        [0, 1, -1, 7, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, -0.0, "12", None, True, [], {}]
    )


def _weird_text(rng: random.Random) -> Any:
    choice = rng.randrange(12)
    if choice == 0:
        return None
    if choice == 1:
        return 42
    if choice == 2:
        return "x" * rng.choice([300_000, 1_100_000])
    if choice == 3:
        return "\x00nul and \x1b[31mescapes\x1b[0m"
    if choice == 4:
        return ["not", "a", "string"]
    if choice == 5:
        return "é" * 70_000 + "\u2028"
    return rng.choice(["Sunny.", "", "It is 21°C in Paris. 天気", "final answer"])


def _arguments(rng: random.Random) -> Any:
    choice = rng.randrange(10)
    if choice == 0:
        return "{not json"
    if choice == 1:
        return '{"q": 12}'
    if choice == 2:
        return orjson.dumps({"q": "x" * rng.choice([70_000, 300_000])}).decode()
    if choice == 3:
        return '{"q": "a", "q": "b"}'
    if choice == 4:
        return "[" * 5_000 + "]" * 5_000
    if choice == 5:
        return 17
    if choice == 6:
        return '{"q": "' + "\\ud800" + '"}'
    return orjson.dumps({"q": rng.choice(["Paris", "Oslo", ""])}).decode()


def _tool_calls(rng: random.Random) -> list[dict[str, Any]]:
    calls = []
    for index in range(rng.choice([1, 1, 2, 3, 200])):
        call_id = rng.choice([f"call_{index}", "call_same", "", None, 7, "x" * 300])
        name = rng.choice(["lookup", "lookup", "teleport", "", None, "\x00"])
        function = {"name": name, "arguments": _arguments(rng)}
        calls.append({"id": call_id, "type": "function", "function": function})
    return calls


def _json(value: Any) -> Body:
    # The stdlib, not orjson: it writes what servers can send and orjson refuses (2**70, NaN).
    return json.dumps(value).encode()


def _raw(rng: random.Random, valid: dict[str, Any]) -> Body:
    choice = rng.randrange(16)
    if choice == 0:
        return _json(valid)[: rng.randrange(1, 40)]  # cut off
    if choice == 1:
        return b"\xff\xfe not utf-8"
    if choice == 2:
        return b'{"choices": [{"message": {"content": NaN}}]}'
    if choice == 3:
        return _json([valid])
    if choice == 4:
        return _json(valid).replace(b'"Sunny."', b'"\\ud83d"')  # a lone surrogate escape
    if choice == 5:
        return b'{"usage": {"prompt_tokens": 1' + b"0" * 40 + b"}}"
    return _json(valid)


def _error(rng: random.Random) -> Reply:
    status = rng.choice([400, 401, 404, 408, 422, 429, 500, 502, 503, 529, 302, 204])
    headers: dict[str, str] = {}
    if status == 429 or rng.random() < 0.2:
        headers["retry-after"] = rng.choice(
            ["1", "-5", "1e9", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"]
        )
    if rng.random() < 0.3:
        headers["retry-after-ms"] = rng.choice(["0", "250", "-1", "nan"])
    body = rng.choice(
        [
            b'{"error": {"type": "invalid_request_error", '
            b'"message": "Incorrect API key provided: sk-proj-CANARY"}}',
            b'{"error": "overloaded"}',
            b'{"detail": [{"msg": "Input should be a valid string"}]}',
            b"<html>bad gateway</html>",
            b"",
            b'{"error": {"message": ' + orjson.dumps("e" * 2_000_000) + b"}}",
        ]
    )
    return status, headers, body


# -- OpenAI-compatible chat completions ---------------------------------------------------------


def openai_reply(rng: random.Random) -> Reply:
    """One hostile answer to ``POST /chat/completions`` (half of them well-formed, so runs get
    far enough to call tools)."""
    if rng.random() < 0.5:
        return _clean_openai(rng)
    if rng.random() < 0.25:
        return _error(rng)
    message: dict[str, Any] = {"role": "assistant", "content": _weird_text(rng)}
    if rng.random() < 0.45:
        message["tool_calls"] = _tool_calls(rng)
        if rng.random() < 0.5:
            message["content"] = None
    usage: dict[str, Any] = {
        "prompt_tokens": rng.choice([10, 0, 5]) if rng.random() < 0.7 else _weird_number(rng),
        "completion_tokens": rng.choice([3, 0]) if rng.random() < 0.7 else _weird_number(rng),
    }
    if rng.random() < 0.3:
        usage["prompt_tokens_details"] = {"cached_tokens": _weird_number(rng)}
    finish = rng.choice(["stop", "tool_calls", None, 3])
    choices: Any = [{"index": 0, "message": message, "finish_reason": finish}]
    if rng.random() < 0.05:
        choices = rng.choice([[], None, "x", [{}]])
    valid: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": rng.choice(["gpt-4o-mini", None, 5, "m" * 10_000]),
        "choices": choices,
    }
    if rng.random() < 0.9:
        valid["usage"] = usage
    return 200, {"content-type": "application/json"}, _raw(rng, valid)


# -- Anthropic messages ----------------------------------------------------------------------


def _anthropic_input(rng: random.Random) -> Any:
    choice = rng.randrange(9)
    if choice == 0:
        return {"q": 2**70}  # past 64 bits: JSON can say it, the log cannot
    if choice == 1:
        return "not an object"
    if choice == 2:
        return {"q": "x" * 300_000}
    if choice == 3:
        deep: Any = []
        for _ in range(200):
            deep = [deep]
        return {"nested": deep}
    if choice == 4:
        return {"q": None}
    return {"q": rng.choice(["Paris", "Oslo"])}


def anthropic_reply(rng: random.Random) -> Reply:
    """One hostile answer to ``POST /v1/messages`` (half of them well-formed)."""
    if rng.random() < 0.5:
        return _clean_anthropic(rng)
    if rng.random() < 0.25:
        return _error(rng)
    content: list[Any] = []
    if rng.random() < 0.7:
        content.append({"type": "text", "text": _weird_text(rng)})
    if rng.random() < 0.45:
        for index in range(rng.choice([1, 2, 200])):
            content.append(
                {
                    "type": "tool_use",
                    "id": rng.choice([f"toolu_{index}", "toolu_same", "", 9]),
                    "name": rng.choice(["lookup", "teleport", None]),
                    "input": _anthropic_input(rng),
                }
            )
    if rng.random() < 0.05:
        content.append({"type": rng.choice(["thinking", "image", None]), "x": 1})
    usage: dict[str, Any] = {
        "input_tokens": rng.choice([10, 0]) if rng.random() < 0.7 else _weird_number(rng),
        "output_tokens": rng.choice([3, 0]) if rng.random() < 0.7 else _weird_number(rng),
    }
    if rng.random() < 0.3:
        usage["cache_read_input_tokens"] = _weird_number(rng)
        usage["cache_creation_input_tokens"] = _weird_number(rng)
    valid: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": rng.choice(["claude-3-5-haiku-latest", None, 1]),
        "content": content if rng.random() > 0.03 else None,
        "stop_reason": rng.choice(["end_turn", "tool_use", "max_tokens", None, 5]),
        "usage": usage,
    }
    return 200, {"content-type": "application/json"}, _raw(rng, valid)


def _clean_openai(rng: random.Random) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": "It is sunny."}
    if rng.random() < 0.6:
        arguments = json.dumps({"q": rng.choice(["Paris", "Oslo"])})
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": arguments},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4},
    }
    return 200, {"content-type": "application/json"}, _json(body)


def _clean_anthropic(rng: random.Random) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": "It is sunny."}]
    if rng.random() < 0.6:
        content = [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "Oslo"}}]
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": content,
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 4},
    }
    return 200, {"content-type": "application/json"}, _json(body)
