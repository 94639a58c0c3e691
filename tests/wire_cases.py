"""The conversations the wire tests send to every server, and helpers to send them.

One scenario set for every server (an order lookup: the tool call, the follow-up after its
result, a structured answer), so the fixture folders line up and their differences are the
servers' differences. ``AGENTLEDGER_WRITE_WIRE=1`` (re)writes the request files that are not
recorded, for review before they are committed; the tests then compare against them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from agentledger.engine.models._model import OutputSchema, Sampling, ToolSpec
from agentledger.events import ToolCall
from agentledger.projections._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)

WIRE = Path(__file__).resolve().parent / "fixtures" / "wire"

LOOKUP = ToolSpec(
    name="lookup_order",
    description="Look an order up.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "integer"}},
        "required": ["order_id"],
    },
)
ASK: list[Message] = [UserMessage(content="Look up order 123456.")]
CALL = ToolCall(id="call_1", name="lookup_order", arguments='{"order_id": 123456}')
FOLLOW_UP: list[Message] = [
    *ASK,
    AssistantMessage(tool_calls=(CALL,)),
    ToolResultMessage(
        tool_call_id="call_1",
        tool_name="lookup_order",
        content='{"status":"ok","result":{"order_id":123456,"state":"shipped"}}',
    ),
]
HELLO: list[Message] = [
    SystemMessage(content="You are terse."),
    UserMessage(content="Say hello in three words."),
]
AS_JSON: list[Message] = [UserMessage(content="Give order 123456's state as JSON.")]
SAMPLING = Sampling(temperature=0.2, top_p=0.9, stop=("\n\n",), seed=7)

STRICT_ORDER = OutputSchema(
    name="OrderState",
    schema={
        "type": "object",
        "properties": {"order_id": {"type": "integer"}, "state": {"type": "string"}},
        "required": ["order_id", "state"],
        "additionalProperties": False,
    },
)
"""A schema OpenAI's strict mode takes as it is."""
LOOSE_ORDER = OutputSchema(
    name="OrderState",
    schema={
        "title": "OrderState",
        "type": "object",
        "properties": {
            "order_id": {"title": "Order Id", "type": "integer"},
            "state": {"title": "State", "type": "string"},
            "note": {"title": "Note", "type": "string", "default": ""},
        },
        "required": ["order_id", "state"],
    },
)
"""What pydantic makes of a model with a defaulted field: not strict-compatible."""


def load(path: str) -> Any:
    return json.loads((WIRE / path).read_text())


def matches_file(body: dict[str, Any], path: str) -> bool:
    """Whether ``body`` is the JSON in ``path`` (written first under AGENTLEDGER_WRITE_WIRE)."""
    file = WIRE / path
    if os.environ.get("AGENTLEDGER_WRITE_WIRE") == "1":
        file.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n")
    return body == json.loads(file.read_text())


class Replies:
    """An ``httpx.MockTransport`` handler answering every request with one status and body,
    keeping the requests' JSON bodies."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.content))
        return httpx.Response(self.status, json=self.body)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))
