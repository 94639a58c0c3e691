"""A local HTTP server that streams model replies as server-sent events, over real sockets.

Each request gets the next ``Stream`` of a script (the last one repeats): its events are written
one HTTP chunk each (``Transfer-Encoding: chunked``, as the providers do), and then the body is
ended, or, with ``drop_after``, the connection is closed mid-body after that many events (a
dropped stream). A stream made of an endless generator is a server that ignores the output
limit: it writes until the client hangs up.

The builders turn a recorded non-streamed reply (OpenAI's completion, Anthropic's message) into
the stream of the same content as each API documents it, so a test can check that a streamed
reply equals the completed one.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"

Asked = tuple[str, dict[str, Any]]
"""A request the server was sent: its path and its JSON body."""


@dataclass
class Stream:
    """What the server streams for one request: ``events`` (SSE bytes, one chunk each); with
    ``drop_after`` it closes the connection mid-body after that many events."""

    events: Iterable[bytes]
    drop_after: int | None = None
    status: int = 200
    content_type: str = "text/event-stream"


Script = list[Callable[[], Stream]]


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: ``event:`` if named, ``data:`` as JSON (or a string as is)."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def recorded(path: str) -> list[bytes]:
    """A recorded stream file, split into its events (each written as one chunk)."""
    raw = (FIXTURES / path).read_bytes()
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- OpenAI chat.completion.chunk ------------------------------------------------------------


def openai_stream(completion: dict[str, Any], *, size: int = 4, usage: bool = True) -> list[bytes]:
    """The chunk stream OpenAI sends for ``completion`` (one choice), with the usage chunk."""
    head = {"id": completion.get("id", "chatcmpl-x"), "object": "chat.completion.chunk"}
    head["model"] = completion["model"]
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces(message.get("content") or "", size)]
    for index, call in enumerate(message.get("tool_calls") or ()):
        first = {"index": index, "id": call["id"], "type": "function"}
        events.append(
            chunk({"tool_calls": [first | {"function": {"name": call["function"]["name"]}}]})
        )
        args = pieces(call["function"]["arguments"], size)
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": a}}]}) for a in args
        ]
    events.append(chunk({}, choice["finish_reason"]))
    if usage and completion.get("usage"):
        events.append(sse(head | {"choices": [], "usage": completion["usage"]}))
    events.append(sse("[DONE]"))
    return events


def openai_endless(word: str = " tok") -> Iterator[bytes]:
    """A server that ignores the output limit: content chunks, forever."""
    head = {"id": "chatcmpl-endless", "object": "chat.completion.chunk", "model": "endless"}
    yield sse(head | {"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    for _ in itertools.count():
        yield sse(head | {"choices": [{"index": 0, "delta": {"content": word}}]})


# -- Anthropic messages events ---------------------------------------------------------------


def anthropic_stream(message: dict[str, Any], *, size: int = 4) -> list[bytes]:
    """The events Anthropic's docs show for ``message``: message_start (input usage), a ping,
    per block start / deltas / stop, message_delta (stop reason, output usage), message_stop.
    Tool inputs are streamed as JSON with spaces, as the API does."""
    usage = message["usage"]
    start = {key: value for key, value in message.items() if key not in ("content", "usage")}
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    start |= {"content": [], "stop_reason": None, "usage": start_usage}
    events = [sse({"type": "message_start", "message": start}, "message_start")]
    events.append(sse({"type": "ping"}, "ping"))
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"], size)]
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = json.dumps(block["input"])  # with spaces: the reply re-serialises it
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces(raw, size)]
        events.append(
            sse(
                {"type": "content_block_start", "index": index, "content_block": opening},
                "content_block_start",
            )
        )
        events += [
            sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
            for d in deltas
        ]
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def anthropic_endless(word: str = " tok") -> Iterator[bytes]:
    """A server that ignores ``max_tokens``: text deltas, forever."""
    message = {
        "id": "msg_endless",
        "type": "message",
        "role": "assistant",
        "model": "claude-endless",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 30, "output_tokens": 1},
    }
    yield sse({"type": "message_start", "message": message}, "message_start")
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
    yield sse(block | {"content_block": {"type": "text", "text": ""}}, "content_block_start")
    for _ in itertools.count():
        delta = {"type": "content_block_delta", "index": 0}
        yield sse(delta | {"delta": {"type": "text_delta", "text": word}}, "content_block_delta")


# -- the server ------------------------------------------------------------------------------


class _Streamer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each event is a small write of its own: with Nagle's algorithm on, a write waits for the
    # ACK of the last, which the client delays (~40 ms on Linux), so a short answer took 40 ms
    # longer than the events. Providers flush each event at once; so does this server.
    disable_nagle_algorithm = True
    script: Script
    asked: list[Asked]
    served: list[int]  # events written per request

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.asked.append((self.path, body))
        stream = self.script[min(len(self.asked), len(self.script)) - 1]()
        self.send_response(stream.status)
        self.send_header("content-type", stream.content_type)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        written = 0
        try:
            for event in stream.events:
                if stream.drop_after is not None and written >= stream.drop_after:
                    self.served.append(written)
                    self.close_connection = True
                    return  # no final chunk: the body breaks off
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                written += 1
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up (the output cut-off)
        self.served.append(written)

    def log_message(self, format: str, *args: object) -> None:
        pass


def settled(served: list[int], count: int = 1, seconds: float = 5.0) -> list[int]:
    """``served`` once ``count`` requests are over: a handler notices the client hung up only at
    its next write, after the client has moved on."""
    deadline = time.monotonic() + seconds
    while len(served) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return served


@contextmanager
def sse_provider(script: Script) -> Iterator[tuple[str, list[Asked], list[int]]]:
    """A local streaming server playing ``script``: its URL (``{url}/v1`` for OpenAI clients,
    ``{url}`` for Anthropic ones), the requests it was sent, and how many events it wrote to
    each (known once the request is over)."""
    asked: list[Asked] = []
    served: list[int] = []
    handler = type("Streamer", (_Streamer,), {"script": script, "asked": asked, "served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # A short poll: shutdown() waits for the serving loop's next poll.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked, served
    finally:
        server.shutdown()
        server.server_close()
