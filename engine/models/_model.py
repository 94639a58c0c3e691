"""The ``Model`` port: what the engine sends a model and what it gets back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from agentledger.events import ToolCall, Usage
from agentledger.projections._messages import Message


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model sees it: name, description and the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


ToolChoice: TypeAlias = Literal["auto", "required", "none"] | str
"""Whether the model may, must or must not call a tool; any other string names the one tool it
must call."""


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings of a request; ``None`` (or no stop sequence) keeps the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """The JSON schema a final answer must follow (structured output), under a name."""

    name: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One request to a model: the conversation, the tools it may call, and the output limit."""

    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    max_tokens: int = 1024
    temperature: float | None = None
    tool_choice: ToolChoice = "auto"
    sampling: Sampling = field(default_factory=Sampling)
    output: OutputSchema | None = None


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


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of a streamed reply's text, as it arrived."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the ``index``-th call of the reply. ``id`` and ``name``
    come with its first piece (``None`` after); ``arguments`` is the next piece of its JSON."""

    index: int
    id: str | None
    name: str | None
    arguments: str


ModelDelta: TypeAlias = TextDelta | ToolCallDelta
DeltaSink: TypeAlias = Callable[[ModelDelta], None]
"""Called with each delta as it arrives; it must not block (hand it on, e.g. to a queue)."""


class StreamingModel(Model, Protocol):
    """A model that can also stream its reply, piece by piece, as server-sent events."""

    async def stream(self, request: ModelRequest, on_delta: DeltaSink) -> ModelReply:
        """Send the request as a stream, call ``on_delta`` with every piece, and return the whole
        reply once it is complete. A stream that breaks off before its end raises a
        ``ModelError`` (the attempt failed); the output stops at ``request.max_tokens``."""
        ...
