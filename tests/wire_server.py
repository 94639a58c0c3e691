"""A local HTTP server that answers model requests with recorded provider bodies.

OpenAI's ``/v1/chat/completions`` and Anthropic's ``/v1/messages`` get the recorded replies in
``tests/fixtures/openai`` and ``tests/fixtures/anthropic`` (the weather tool calls, then the
answer after the results), and a plain OpenAI-compatible request gets a real llama.cpp server's
reply (``tests/fixtures/wire/llama-cpp-server``). Real HTTP, so the clients are tested whole.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"

Asked = tuple[str, dict[str, Any]]
"""A request the server was sent: its path and its JSON body."""


def _fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def _openai_reply(body: dict[str, Any]) -> bytes:
    """A recorded OpenAI reply that fits the request: the weather tool calls when the request
    offers ``get_weather`` and has no results yet, the answer after tool results, else a real
    llama.cpp server's plain chat reply."""
    messages = body.get("messages", [])
    if any(m.get("role") == "tool" for m in messages):
        return _fixture("openai/after_tools.response.json")
    tools = {t["function"]["name"] for t in body.get("tools", [])}
    if "get_weather" in tools:
        return _fixture("openai/tool_calls.response.json")
    return _fixture("wire/llama-cpp-server/01-chat.response.json")


def _anthropic_reply(body: dict[str, Any]) -> bytes:
    messages = body.get("messages", [])
    results = any(
        isinstance(m.get("content"), list)
        and any(part.get("type") == "tool_result" for part in m["content"])
        for m in messages
    )
    if not results and "get_weather" in {t["name"] for t in body.get("tools", [])}:
        return _fixture("anthropic/tool_use.response.json")
    return _fixture("anthropic/after_tools.response.json")


class _Provider(BaseHTTPRequestHandler):
    requests: list[Asked]  # shared by the server's handlers

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.requests.append((self.path, body))
        if self.path == "/v1/chat/completions":
            reply = _openai_reply(body)
        elif self.path == "/v1/messages":
            reply = _anthropic_reply(body)
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows what matters


@contextmanager
def recorded_provider() -> Iterator[tuple[str, list[Asked]]]:
    """A local server speaking the OpenAI and Anthropic APIs with recorded bodies: its URL
    (``{url}/v1`` for OpenAI clients, ``{url}`` for Anthropic ones) and the requests it was
    sent so far."""
    asked: list[Asked] = []
    handler = type("Provider", (_Provider,), {"requests": asked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
