"""The chat service without HTTP: an engine, the travel desk agent and its MCP tool server.

``ChatService.chat`` runs one message of a conversation and yields what the browser is sent:
``delta`` (a piece of the answer's text, as the model streams it), ``discard`` (drop the pieces
of a model call that failed, or of an answer sent back for a revision: the next call streams
again), ``tool`` (a tool call and its result), then ``answer`` (the run id, the text and the
structured ``TravelAnswer``), or ``error``.
``ChatService.conversation`` is the conversation so far, folded from the log.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import JsonValue

from agentledger.engine import (
    Agent,
    ConversationNotFoundError,
    Delta,
    Engine,
    InvalidInputError,
    McpServer,
    Model,
    OpenAIChatModel,
    Price,
    RunResult,
    ServerName,
    TextDelta,
    Tool,
    lookup_price,
)
from agentledger.events import (
    Event,
    ModelCallFailed,
    ModelCallResponded,
    RecordedEvent,
    RevisionRequested,
    SqliteEventStore,
    ToolArgumentsRejected,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
)
from agentledger.projections import run_stream

from .answer import TravelAnswer
from .demo_model import DemoModel

AGENT_NAME = "travel-desk"
SYSTEM_PROMPT = (
    "You are a travel desk. For the weather in a city, call the forecast tool. Answer with the "
    "reply to show the user, the city, its temperature in °C and whether to pack an umbrella. "
    "A question that names no city is about the city of the conversation's earlier messages."
)
MCP_SERVER = (sys.executable, str(Path(__file__).with_name("mcp_server.py")))
"""The command that starts the tool server: this Python, the script beside this file."""
USER = "browser"
"""Whom the runs are charged to; a real service would name the signed-in user."""

EventName = Literal["conversation", "delta", "discard", "tool", "answer", "error"]


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One server-sent event: its name and its JSON data."""

    name: EventName
    data: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Settings:
    """How the service runs: where its log is, and which model it asks.

    Without ``model`` it runs on the scripted ``DemoModel`` (no key, no network); with it, on an
    OpenAI-compatible ``server`` at ``base_url`` (OpenAI's API when ``None``, with
    ``$OPENAI_API_KEY``). ``delay`` is the demo model's pause between streamed pieces.
    """

    db: Path = Path("chat.db")
    model: str | None = None
    base_url: str | None = None
    server: ServerName = "openai"
    delay: float = 0.03
    mcp_command: Sequence[str] = field(default=MCP_SERVER)


def build_model(settings: Settings) -> tuple[Model, dict[str, Price]]:
    """The model ``settings`` name, and the prices to add for it (a local model has none
    listed: it is counted as free)."""
    if settings.model is None:
        return DemoModel(delay=settings.delay), {}
    model = OpenAIChatModel(settings.model, server=settings.server, base_url=settings.base_url)
    if settings.base_url is None or lookup_price(settings.model) is not None:
        return model, {}
    return model, {settings.model: Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))}


def build_agent(
    model: Model, tools: Sequence[Tool[Any]], prices: Mapping[str, Price]
) -> Agent[TravelAnswer]:
    """The travel desk: ``model`` with the MCP server's ``tools`` and a structured answer."""
    return Agent(
        name=AGENT_NAME,
        model=model,
        system_prompt=SYSTEM_PROMPT,
        tools=list(tools),
        prices=dict(prices),
        max_tokens=512,
        output_type=TravelAnswer,
    )


class ChatService:
    """Runs the messages of conversations through the engine and folds conversations back."""

    def __init__(self, engine: Engine, agent: Agent[TravelAnswer]) -> None:
        self.engine = engine
        self.agent = agent

    async def chat(self, conversation_id: str | None, message: str) -> AsyncIterator[ChatEvent]:
        """Run ``message`` as the next run of ``conversation_id`` (a new conversation if
        ``None``) and yield the events the client is sent, the ``answer`` last."""
        conversation = conversation_id or self.engine.ids.new_id()
        run_id = self.engine.ids.new_id()
        yield ChatEvent("conversation", {"conversation_id": conversation, "run_id": run_id})
        relay = _Relay()
        async for item in self.engine.stream(
            self.agent,
            message,
            user_id=USER,
            run_id=run_id,
            conversation_id=conversation,
            deltas=True,
        ):
            for event in relay.events(item):
                yield event
        result = await self.engine.result(run_id, agent=self.agent)
        yield ChatEvent("answer", _answer(conversation, result))

    async def conversation(self, conversation_id: str) -> dict[str, JsonValue] | None:
        """The conversation's runs, oldest first: each message, answer, structured value and
        tool calls; ``None`` if there is no such conversation."""
        try:
            found = await self.engine.conversation(conversation_id)
        except (ConversationNotFoundError, InvalidInputError):
            return None
        runs: list[JsonValue] = []
        for run in found.runs:
            value = None
            if run.status == "completed" and run.output is not None:
                value = self.agent.output_value(run.output).model_dump(mode="json")
            runs.append(
                {
                    "run_id": run.run_id,
                    "follows": run.follows,
                    "status": run.status,
                    "message": run.task,
                    "answer": run.output,
                    "value": value,
                    "tools": await self._tool_calls(run.run_id),
                }
            )
        return {"conversation_id": found.conversation_id, "runs": runs}

    async def _tool_calls(self, run_id: str) -> list[JsonValue]:
        """The run's tool calls with their results, as its log has them."""
        calls: dict[str, dict[str, JsonValue]] = {}
        for recorded in await self.engine.store.read_stream(run_stream(run_id)):
            event = recorded.event
            if isinstance(event, ToolCallIntended):
                calls[event.call_id] = {"tool": event.tool_name, "arguments": event.arguments}
            elif isinstance(event, ToolCallSucceeded) and event.call_id in calls:
                calls[event.call_id]["result"] = event.result
        return list(calls.values())


class _Relay:
    """Turns a run's deltas and events into what the client is told.

    The client shows the text of the run's model calls as it streams; a call that failed, or
    whose answer went back for a revision, is discarded, so what stays on screen is the answer.
    """

    def __init__(self) -> None:
        self.shown: list[str] = []
        """The model calls whose text the client shows, in order."""
        self.answered: str | None = None
        """The agent's model call answered last, in the log's order."""

    def events(self, item: RecordedEvent | Delta) -> list[ChatEvent]:
        if isinstance(item, Delta):
            if not isinstance(item.delta, TextDelta) or item.purpose != "agent":
                return []  # a summary's or a judge's words are not the answer
            return [self._show(item.call_id, item.delta.text)]
        event: Event = item.event
        if isinstance(event, ToolCallIntended):
            return [_tool("call", event.call_id, event.tool_name, {"arguments": event.arguments})]
        if isinstance(event, ToolCallSucceeded):
            return [_tool("result", event.call_id, event.tool_name, {"result": event.result})]
        if isinstance(event, ToolArgumentsRejected | ToolCallDegraded):
            return [_tool("error", event.call_id, event.tool_name, {"error": event.type})]
        if isinstance(event, ModelCallFailed) and event.call_id in self.shown:
            return [self._discard(event.call_id)]
        if isinstance(event, RevisionRequested) and self.answered in self.shown:
            # The log puts the verdict right after the answer it judged; the next call's
            # deltas may have come already, so the call is named, not taken as the last.
            return [self._discard(self.answered)]
        if isinstance(event, ModelCallResponded) and event.purpose == "agent":
            self.answered = event.call_id
            if event.text and event.call_id not in self.shown:
                return [self._show(event.call_id, event.text)]  # a model that does not stream
        return []

    def _show(self, call_id: str, text: str) -> ChatEvent:
        if call_id not in self.shown:
            self.shown.append(call_id)
        return ChatEvent("delta", {"text": text, "call_id": call_id})

    def _discard(self, call_id: str) -> ChatEvent:
        self.shown.remove(call_id)
        return ChatEvent("discard", {"call_id": call_id})


def _tool(phase: str, call_id: str, name: str, extra: Mapping[str, JsonValue]) -> ChatEvent:
    return ChatEvent("tool", {"phase": phase, "call_id": call_id, "tool": name, **extra})


def _answer(conversation: str, result: RunResult[TravelAnswer]) -> dict[str, JsonValue]:
    value = result.value.model_dump(mode="json") if result.value is not None else None
    return {
        "conversation_id": conversation,
        "run_id": result.run_id,
        "status": result.status,
        "text": result.output,
        "value": value,
        "error": result.error,
    }


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[ChatService]:
    """The service with its log, MCP tool server and engine open; all closed on exit."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(SqliteEventStore(settings.db))
        command, *arguments = settings.mcp_command
        server = await stack.enter_async_context(McpServer.stdio(command, arguments))
        tools = await server.tools(include=["forecast"])
        model, prices = build_model(settings)
        agent = build_agent(model, tools, prices)
        # stream_models: every call streams, so the output cut-off protects the caps even
        # when no one is listening.
        engine = await stack.enter_async_context(Engine(store, agents=[agent], stream_models=True))
        yield ChatService(engine, agent)
