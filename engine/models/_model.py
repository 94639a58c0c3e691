"""The ``Model`` port: what the engine sends a model and what it gets back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentledger.events import ToolCall, Usage
from agentledger.projections._messages import Message


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model sees it: name, description and the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One request to a model: the conversation, the tools it may call, and the output limit."""

    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    max_tokens: int = 1024
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class ModelReply:
    """A model's answer: text and tool calls, with the usage the provider reported."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str = ""


class Model(Protocol):
    """Something that answers a ``ModelRequest``: an HTTP client for a provider, or a test double.

    ``complete`` raises a ``ModelError`` subclass on failure; the engine decides on retries and
    fallbacks, so a model never retries by itself.
    """

    @property
    def name(self) -> str:
        """The model's name as recorded in events and priced (e.g. ``"gpt-4o-mini"``)."""
        ...

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Send the request and return the parsed reply."""
        ...
