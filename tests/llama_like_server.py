"""A local HTTP server that behaves like llama-cpp-python's server where it differs from OpenAI.

It answers with the recorded bodies of ``fixtures/wire/llama-cpp-server``, and, like that server:
an assistant tool turn whose ``content`` is null or missing gets the recorded HTTP 500; tools
offered without ``tool_choice`` are not offered at all (``chatml-function-calling``), so the
model just chats; a named ``tool_choice`` always gets the recorded call (a grammar forces it);
after a tool result, ``"auto"`` gets the recorded answer (a model that answers: the real 135M
one called the tool again, ``11-tool-followup-auto``); a path other than
``/v1/chat/completions`` gets its 404. ``delay`` seconds pass before each answer (for the
timeout tests). A streamed request gets a recorded stream, and one with tools and
``tool_choice: "auto"`` the recorded empty event stream (the server cannot stream that).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parent / "fixtures" / "wire" / "llama-cpp-server"


def _answer(body: dict[str, Any]) -> tuple[int, bytes]:
    messages = body.get("messages", [])
    for message in messages:
        tool_turn = message.get("role") == "assistant" and message.get("tool_calls")
        if tool_turn and not isinstance(message.get("content"), str):
            failed = RECORDED / "03-tool-followup-content-null.response-500.json"
            return 500, failed.read_bytes()
    if isinstance(body.get("tool_choice"), dict):
        # A named tool is forced by a grammar there: the reply is a call, whatever came before.
        return 200, (RECORDED / "02-forced-tool-call.response.json").read_bytes()
    if any(message.get("role") == "tool" for message in messages):
        return 200, (RECORDED / "04-tool-followup-content-empty.response.json").read_bytes()
    if body.get("tools") and body.get("tool_choice") == "auto":
        return 200, (RECORDED / "10-auto-tool-choice.response.json").read_bytes()
    return 200, (RECORDED / "01-chat.response.json").read_bytes()


def _stream(body: dict[str, Any]) -> bytes:
    """The recorded stream for a streamed request (tool follow-ups are not recorded)."""
    if body.get("tools") and body.get("tool_choice") == "auto":
        return (RECORDED / "09-stream-auto-tool-choice.response.sse").read_bytes()
    if body.get("tools") and body.get("tool_choice") not in (None, "none"):
        return (RECORDED / "07-stream-forced-tool-call.response.sse").read_bytes()
    return (RECORDED / "06-stream-include-usage.response.sse").read_bytes()


@contextmanager
def llama_like_server(delay: float = 0.0) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The server's base URL (with ``/v1``) and the JSON bodies it was sent so far."""
    sent: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(delay)
            if self.path != "/v1/chat/completions":
                status, reply = 404, b'{"detail":"Not Found"}'
            else:
                sent.append(body)
                status, reply = _answer(body)
                if status == 200 and body.get("stream"):
                    reply = _stream(body)
            streamed = status == 200 and body.get("stream")
            try:
                self.send_response(status)
                self.send_header(
                    "content-type",
                    "text/event-stream; charset=utf-8" if streamed else "application/json",
                )
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # A short poll interval: shutting the server down waits for the next poll.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", sent
    finally:
        server.shutdown()
        server.server_close()
