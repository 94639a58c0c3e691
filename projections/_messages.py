"""The provider-neutral conversation a model is sent: the memory view projects the log into it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentledger.events import ToolCall


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SystemMessage(_Message):
    """Instructions for the model."""

    role: Literal["system"] = "system"
    content: str


class UserMessage(_Message):
    """What the user (or the engine on the user's behalf, e.g. a revision request) says."""

    role: Literal["user"] = "user"
    content: str


class AssistantMessage(_Message):
    """A model's reply: text, tool calls, or both."""

    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolResultMessage(_Message):
    """The result of one tool call, paired with it by ``tool_call_id``; ``content`` is JSON."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    tool_name: str
    content: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage,
    Field(discriminator="role"),
]
"""One message of a conversation, discriminated by ``role``."""
