"""Attribute names and values: the OpenTelemetry GenAI semantic conventions, then our own.

Spelled out here rather than imported from ``opentelemetry-semantic-conventions``, so the
builder runs without the extra; a test checks them against that package.
"""

from __future__ import annotations

from typing import Final

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
ERROR_TYPE: Final = "error.type"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"

OP_INVOKE_AGENT: Final = "invoke_agent"
OP_CHAT: Final = "chat"
OP_EXECUTE_TOOL: Final = "execute_tool"

# Ours: what the conventions have no name for.
RUN_ID: Final = "agentledger.run.id"
RUN_STATUS: Final = "agentledger.run.status"
RUN_TURNS: Final = "agentledger.run.turns"
RUN_FLAGGED: Final = "agentledger.run.flagged"
RUN_SURFACE: Final = "agentledger.run.surface"
RUN_USER_ID: Final = "agentledger.run.user_id"
RUN_FORKED_FROM: Final = "agentledger.run.forked_from"
RUN_FOLLOWS: Final = "agentledger.run.follows"
RUN_FORKED_AT_VERSION: Final = "agentledger.run.forked_at_version"
COST_USD: Final = "agentledger.cost_usd"
"""Float US dollars, for dashboards; the exact ``Decimal`` stays in the log."""
TURN: Final = "agentledger.turn"
MODEL_ATTEMPT: Final = "agentledger.model.attempt"
MODEL_PURPOSE: Final = "agentledger.model.purpose"
MODEL_RETRYABLE: Final = "agentledger.model.retryable"
BUDGET_RESERVED_USD: Final = "agentledger.budget.reserved_usd"
TOOL_TIER: Final = "agentledger.tool.tier"
TOOL_OUTCOME: Final = "agentledger.tool.outcome"
TOOL_IDEMPOTENCY_KEY: Final = "agentledger.tool.idempotency_key"
SPAN_OPEN: Final = "agentledger.span.open"
"""Set on a span exported before its closing event was recorded (``include_open=True``)."""
