"""The chat service without HTTP: an engine, the travel desk agent and its MCP tool server.

``ChatService.chat`` runs one message of a conversation and yields what the browser is sent:
``delta`` (a piece of the answer's text, as the model streams it), ``tool`` (a tool call and
its result), then ``answer`` (the run id, the text and the structured ``TravelAnswer``), or
``error``. ``ChatService.conversation`` is the conversation so far, folded from the log.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, JsonValue

from agentledger.engine import (
    Agent,
    Engine,
    Model,
    OpenAIChatModel,
    Price,
    Tool,
    ToolContext,
    lookup_price,
    tool,
)
from agentledger.events import (
    ModelCallResponded,
    SqliteEventStore,
    ToolArgumentsRejected,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
)

from .answer import TravelAnswer
from .demo_model import DemoModel

AGENT_NAME = "travel-desk"
SYSTEM_PROMPT = (
    "You are a travel desk. For the weather in a city, call the forecast tool. Answer with the "
    "reply to show the user, the city, its temperature in °C and whether to pack an umbrella. "
    "A question that names no city is about the city of the conversation's earlier messages."
)
MCP_SERVER = (sys.executable, str(Path(__file__).with_name("mcp_server.py")))
"""The command that starts the tool server."""

EventName = Literal["conversation", "delta", "tool", "answer", "error"]


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One server-sent event: its name and its JSON data."""

    name: EventName
    data: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Settings:
    """How the service runs: where its log is, and which model it asks.

    Without ``model`` it runs on the scripted ``DemoModel`` (no key, no network); with it, on an
    OpenAI-compatible server at ``base_url`` (OpenAI's API when ``None``, with
    ``$OPENAI_API_KEY``). ``delay`` is the demo model's pause between streamed pieces.
    """

    db: Path = Path("chat.db")
    model: str | None = None
    base_url: str | None = None
    delay: float = 0.03
    mcp_command: Sequence[str] = field(default=MCP_SERVER)


def build_model(settings: Settings) -> tuple[Model, dict[str, Price]]:
    """The model ``settings`` name, and the prices to add for it (a local model has none
    listed: it is counted as free)."""
    if settings.model is None:
        return DemoModel(delay=settings.delay), {}
    model = OpenAIChatModel(settings.model, base_url=settings.base_url)
    if settings.base_url is None or lookup_price(settings.model) is not None:
        return model, {}
    return model, {settings.model: Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))}


def build_agent(model: Model, tools: Sequence[Tool[Any]], prices: Mapping[str, Price]) -> Agent:
    """The travel desk: ``model`` with the MCP server's ``tools`` and a structured answer."""
    return Agent(
        name=AGENT_NAME,
        model=model,
        system_prompt=SYSTEM_PROMPT,
        tools=list(tools),
        prices=dict(prices),
        max_tokens=512,
        # TODO(i10-structured): output_type=TravelAnswer
    )


class ChatService:
    """Runs the messages of conversations through the engine and folds conversations back."""

    def __init__(self, engine: Engine, agent: Agent) -> None:
        self.engine = engine
        self.agent = agent

    async def chat(self, conversation_id: str | None, message: str) -> AsyncIterator[ChatEvent]:
        """Run ``message`` as the next turn of ``conversation_id`` (a new conversation if
        ``None``) and yield the events the client is sent, the ``answer`` last."""
        conversation = conversation_id or self.engine.ids.new_id()
        run_id = self.engine.ids.new_id()
        yield ChatEvent("conversation", {"conversation_id": conversation, "run_id": run_id})
        # TODO(i10-convo): conversation_id=conversation
        # TODO(i10-stream): text deltas as the model streams them
        async for recorded in self.engine.stream(
            self.agent, message, user_id="browser", run_id=run_id
        ):
            for event in _client_events(recorded.event):
                yield event
        result = await self.engine.result(run_id)
        yield ChatEvent("answer", _answer(conversation, run_id, result.status, result.output))

    async def conversation(self, conversation_id: str) -> list[dict[str, JsonValue]]:
        """The runs of a conversation, oldest first: each message, answer and tool calls."""
        # TODO(i10-convo): the engine's conversation projection
        return []


def _client_events(event: object) -> list[ChatEvent]:
    """What the client is told about one of the run's events."""
    if isinstance(event, ToolCallIntended):
        return [_tool("call", event.call_id, event.tool_name, {"arguments": event.arguments})]
    if isinstance(event, ToolCallSucceeded):
        return [_tool("result", event.call_id, event.tool_name, {"result": event.result})]
    if isinstance(event, ToolArgumentsRejected | ToolCallDegraded):
        return [_tool("error", event.call_id, event.tool_name, {"error": event.type})]
    if isinstance(event, ModelCallResponded) and event.text and not event.tool_calls:
        # TODO(i10-stream): until the model streams, the whole text is one delta
        return [ChatEvent("delta", {"text": event.text})]
    return []


def _tool(phase: str, call_id: str, name: str, extra: Mapping[str, JsonValue]) -> ChatEvent:
    return ChatEvent("tool", {"phase": phase, "call_id": call_id, "tool": name, **extra})


def _answer(
    conversation: str, run_id: str, status: str, output: str | None
) -> dict[str, JsonValue]:
    value: JsonValue = None
    if output is not None:
        try:  # TODO(i10-structured): the engine's typed value
            value = TravelAnswer.model_validate_json(output).model_dump(mode="json")
        except ValueError:
            value = None
    return {
        "conversation_id": conversation,
        "run_id": run_id,
        "status": status,
        "text": output,
        "value": value,
    }


class _ForecastArgs(BaseModel):
    city: str


@tool
async def forecast(args: _ForecastArgs, ctx: ToolContext) -> dict[str, Any]:
    """Today's forecast for a city (TODO(i10-mcp): from the MCP server instead)."""
    from .mcp_server import forecast as served

    return served(args.city)


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[ChatService]:
    """The service with its log, tool server and engine open; all closed on exit."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(SqliteEventStore(settings.db))
        # TODO(i10-mcp): tools = McpServer.stdio(*settings.mcp_command)
        tools: list[Tool[Any]] = [forecast]
        model, prices = build_model(settings)
        agent = build_agent(model, tools, prices)
        engine = await stack.enter_async_context(Engine(store, agents=[agent]))
        yield ChatService(engine, agent)
