"""The agent engine: ``Engine`` and ``Agent``, model clients, tools and the ports they use.

    async with SqliteEventStore("runs.db") as store, Engine(store) as engine:
        result = await engine.run(agent, "What's the weather in Paris?", user_id="u1")

The testing kit (a scripted model, a fake clock, sequential ids, the loop's invariants as
checkers, a fault-injecting store, Hypothesis strategies) lives in ``agentledger.engine.testing``.
"""

from agentledger.engine.models._anthropic import AnthropicModel, anthropic_tool_schema
from agentledger.engine.models._model import Model, ModelReply, ModelRequest, Sampling, ToolSpec
from agentledger.engine.models._openai import OpenAIChatModel, openai_tool_schema
from agentledger.engine.models._pricing import (
    Price,
    TokenEstimator,
    approximate_tokens,
    lookup_price,
    max_input_tokens,
)
from agentledger.engine.models._wire import WIRE_PROFILES, ServerName, WireProfile
from agentledger.engine.policies._budget import (
    BudgetExceededReason,
    BudgetPolicy,
    Budgets,
    check_reservation,
    day_stream,
)
from agentledger.engine.policies._checks import (
    JUDGE_CHECK_NAME,
    BannedPhrases,
    Check,
    Citations,
    CriticConfigError,
    JsonSchema,
    JudgeVerdict,
    LLMJudge,
    MaxLength,
    RequiredKeywords,
    UserCheck,
)
from agentledger.engine.policies._critic import Critic
from agentledger.engine.policies._output import OUTPUT_CHECK_NAME, InvalidOutputError
from agentledger.engine.policies._redaction import Redactor
from agentledger.engine.policies._sizes import SizePolicy
from agentledger.engine.tools._mcp import IDEMPOTENCY_META_KEY as MCP_IDEMPOTENCY_META_KEY
from agentledger.engine.tools._mcp import (
    McpConfigError,
    McpConnectionError,
    McpError,
    McpServer,
    McpToolError,
    McpToolSettings,
    McpUnavailableError,
)
from agentledger.engine.tools._subagent import SubAgentArgs, SubAgentTool
from agentledger.engine.tools._tool_keys import canonical_arguments, idempotency_key
from agentledger.engine.tools._tool_validation import RejectedCall, ValidCall, validate_call
from agentledger.engine.tools._tools import Reconciled, Tool, ToolContext, to_json_value, tool
from agentledger.events import event_line
from agentledger.projections._conversation import Conversation, ConversationRun
from agentledger.projections._memory_view import MemoryPolicy
from agentledger.projections._run_filter import RunFilter
from agentledger.replay import (
    ForkError,
    ReplayBatch,
    ReplayProgress,
    ReplayReport,
    WhatIfError,
    WhatIfProgress,
    WhatIfReport,
)

from ._agent import DEGRADED_TOOL_INSTRUCTION, Agent, BreakerPolicy, RetryPolicy
from ._engine import Engine, RunNotFoundError, Sink
from ._errors import (
    AgentConfigError,
    ConversationBusyError,
    ConversationConflictError,
    ConversationError,
    ConversationNotFoundError,
    EngineError,
    InvalidInputError,
    ModelConnectionError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    ModelTimeoutError,
    RunActiveError,
    RunBusyError,
    RunConflictError,
    RunExistsError,
    RunParkedError,
    UnknownPriceError,
    UnknownSurfaceError,
)
from ._result import RunResult
from ._sink import JsonLinesSink, combine_sinks
from .loop._deltas import Delta
from .loop._ports import Clock, IdSource, RandomIds, SystemClock
from .loop._subagents import subagent
from .models._model import DeltaSink, ModelDelta, StreamingModel, TextDelta, ToolCallDelta

__all__ = [
    "DEGRADED_TOOL_INSTRUCTION",
    "JUDGE_CHECK_NAME",
    "MCP_IDEMPOTENCY_META_KEY",
    "OUTPUT_CHECK_NAME",
    "WIRE_PROFILES",
    "Agent",
    "AgentConfigError",
    "AnthropicModel",
    "BannedPhrases",
    "BreakerPolicy",
    "BudgetExceededReason",
    "BudgetPolicy",
    "Budgets",
    "Check",
    "Citations",
    "Clock",
    "Conversation",
    "ConversationBusyError",
    "ConversationConflictError",
    "ConversationError",
    "ConversationNotFoundError",
    "ConversationRun",
    "Critic",
    "CriticConfigError",
    "Delta",
    "DeltaSink",
    "Engine",
    "EngineError",
    "ForkError",
    "IdSource",
    "InvalidInputError",
    "InvalidOutputError",
    "JsonLinesSink",
    "JsonSchema",
    "JudgeVerdict",
    "LLMJudge",
    "MaxLength",
    "McpConfigError",
    "McpConnectionError",
    "McpError",
    "McpServer",
    "McpToolError",
    "McpToolSettings",
    "McpUnavailableError",
    "MemoryPolicy",
    "Model",
    "ModelConnectionError",
    "ModelDelta",
    "ModelError",
    "ModelRateLimitedError",
    "ModelReply",
    "ModelRequest",
    "ModelRequestError",
    "ModelResponseError",
    "ModelServerError",
    "ModelTimeoutError",
    "OpenAIChatModel",
    "Price",
    "RandomIds",
    "Reconciled",
    "Redactor",
    "RejectedCall",
    "ReplayBatch",
    "ReplayProgress",
    "ReplayReport",
    "RequiredKeywords",
    "RetryPolicy",
    "RunActiveError",
    "RunBusyError",
    "RunConflictError",
    "RunExistsError",
    "RunFilter",
    "RunNotFoundError",
    "RunParkedError",
    "RunResult",
    "Sampling",
    "ServerName",
    "Sink",
    "SizePolicy",
    "StreamingModel",
    "SubAgentArgs",
    "SubAgentTool",
    "SystemClock",
    "TextDelta",
    "TokenEstimator",
    "Tool",
    "ToolCallDelta",
    "ToolContext",
    "ToolSpec",
    "UnknownPriceError",
    "UnknownSurfaceError",
    "UserCheck",
    "ValidCall",
    "WhatIfError",
    "WhatIfProgress",
    "WhatIfReport",
    "WireProfile",
    "anthropic_tool_schema",
    "approximate_tokens",
    "canonical_arguments",
    "check_reservation",
    "combine_sinks",
    "day_stream",
    "event_line",
    "idempotency_key",
    "lookup_price",
    "max_input_tokens",
    "openai_tool_schema",
    "subagent",
    "to_json_value",
    "tool",
    "validate_call",
]
