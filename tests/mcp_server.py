"""A small, real MCP server for the MCP tool tests (and the examples), built with the SDK's
``MCPServer``.

    python tests/mcp_server.py                       # over stdio
    python tests/mcp_server.py --http --port 8765    # streamable HTTP at http://127.0.0.1:8765/mcp

Its tools:

- ``add(a, b)``: structured output ``{"result": a + b}``.
- ``weather(city)``: text content; a city named ``Atlantis`` is an ``isError`` result.
- ``send_note(to, body)``: a side effect that dedupes by the idempotency key the client forwards in
  the request's ``_meta`` (``agentledger/idempotency-key``): a repeated key sends nothing new.
- ``picture()``: one text part and a 300 KB PNG image part.
- ``crash()``: the process exits at once, in the middle of the call (a server that dies).
- ``slow(seconds)``: sleeps, then answers.
- ``stats()``: how many ``tools/call`` requests reached this process, per tool name (counted
  before the server validates arguments), and the notes sent. Not counted itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from collections import Counter
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent

IDEMPOTENCY_META_KEY = "agentledger/idempotency-key"

calls: Counter[str] = Counter()
notes: dict[str, dict[str, str]] = {}  # idempotency key (or a serial) -> note


class CountingServer(MCPServer):
    """An ``MCPServer`` that counts every ``tools/call`` that reaches it, valid or not."""

    async def call_tool(  # type: ignore[override]
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> Any:
        if name != "stats":
            calls[name] += 1
        return await super().call_tool(name, arguments, context)


server = CountingServer("agentledger-test", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> dict[str, int]:
    """Add two integers."""
    return {"result": a + b}


@server.tool(structured_output=False)
def weather(city: str) -> str:
    """The weather in a city."""
    if city == "Atlantis":
        raise ToolError(f"no weather station in {city}")
    return f"sunny in {city}"


@server.tool()
def send_note(to: str, body: str, ctx: Context) -> dict[str, Any]:
    """Send a note to someone (a side effect: sent once per idempotency key)."""
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY)
    slot = key if isinstance(key, str) else f"unkeyed-{len(notes)}"
    duplicate = slot in notes
    if not duplicate:
        notes[slot] = {"to": to, "body": body}
    return {"sent": not duplicate, "key": key, "notes": len(notes)}


@server.tool()
def picture() -> CallToolResult:
    """A picture with a caption."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(300_000)
    return CallToolResult(
        content=[
            TextContent(text="a blank square"),
            ImageContent(data=base64.b64encode(png).decode(), mime_type="image/png"),
        ]
    )


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def stats() -> dict[str, Any]:
    """How many calls reached this process, per tool, and the notes sent."""
    return {"calls": dict(calls), "notes": notes, "pid": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=8765)
    options = parser.parse_args()
    if options.http:
        server.run("streamable-http", host="127.0.0.1", port=options.port)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
