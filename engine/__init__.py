"""The agent engine: ``Engine`` and ``Agent``, model clients, tools and the ports they use.

    async with SqliteEventStore("runs.db") as store, Engine(store) as engine:
        result = await engine.run(agent, "What's the weather in Paris?", user_id="u1")

Test doubles for agents (a scripted model, a fake clock, sequential ids) live in
``agentledger.engine.testing``.
"""

from ._agent import DEGRADED_TOOL_INSTRUCTION, Agent, BreakerPolicy, RetryPolicy
from ._anthropic import AnthropicModel, anthropic_tool_schema
from ._engine import Engine, RunConflictError, RunNotFoundError, RunResult, Sink
from ._errors import (
    EngineError,
    ModelConnectionError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    ModelTimeoutError,
)
from ._model import Model, ModelReply, ModelRequest, ToolSpec
from ._openai import OpenAIChatModel, openai_tool_schema
from ._ports import Clock, IdSource, RandomIds, SystemClock
from ._sink import JsonLinesSink, event_line
from ._tool_keys import canonical_arguments, idempotency_key
from ._tool_validation import RejectedCall, ValidCall, validate_call
from ._tools import Reconciled, Tool, ToolContext, to_json_value, tool

__all__ = [
    "DEGRADED_TOOL_INSTRUCTION",
    "Agent",
    "AnthropicModel",
    "BreakerPolicy",
    "Clock",
    "Engine",
    "EngineError",
    "IdSource",
    "JsonLinesSink",
    "Model",
    "ModelConnectionError",
    "ModelError",
    "ModelRateLimitedError",
    "ModelReply",
    "ModelRequest",
    "ModelRequestError",
    "ModelResponseError",
    "ModelServerError",
    "ModelTimeoutError",
    "OpenAIChatModel",
    "RandomIds",
    "Reconciled",
    "RejectedCall",
    "RetryPolicy",
    "RunConflictError",
    "RunNotFoundError",
    "RunResult",
    "Sink",
    "SystemClock",
    "Tool",
    "ToolContext",
    "ToolSpec",
    "ValidCall",
    "anthropic_tool_schema",
    "canonical_arguments",
    "event_line",
    "idempotency_key",
    "openai_tool_schema",
    "to_json_value",
    "tool",
    "validate_call",
]
