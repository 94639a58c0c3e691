"""The JSON a model receives as the result of a tool call, one builder per outcome.

Every result is an object with a ``status`` the system prompt can refer to (``ok``, ``error``,
``degraded``, ``pending_confirmation``, ``denied``, ``unknown_outcome``) and, where the model
has a choice to make, a sentence telling it what to do next. Output is deterministic (sorted
keys, no whitespace), so a replayed run sends byte-identical messages. The run-state fold
builds the conversation's tool results with these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import orjson
from pydantic import JsonValue

from agentledger.events import FieldIssue, ToolRejection

_HINTS: dict[str, str] = {
    "invalid_arguments": "fix the arguments and call again",
    "invalid_json": "send the arguments as one valid JSON object and call again",
    "unknown_tool": "call one of the available tools, or answer without one",
    "oversized_arguments": "send smaller arguments (or split the work) and call again",
    "idempotency_conflict": "this action was already taken with other arguments; do not retry it",
}


def tool_result_ok(result: JsonValue) -> str:
    """``{"status": "ok", "result": ...}``."""
    return _dumps({"status": "ok", "result": result})


def tool_result_error(error_type: ToolRejection | str, errors: Iterable[FieldIssue]) -> str:
    """``{"status": "error", "error_type": ..., "errors": [{"loc": [...], "message": ...}],
    "hint": ...}``: what was wrong with a call, so the model can correct it."""
    return _dumps(
        {
            "status": "error",
            "error_type": error_type,
            "errors": [{"loc": list(issue.loc), "message": issue.message} for issue in errors],
            "hint": _HINTS.get(error_type, "fix the call and try again"),
        }
    )


def tool_result_degraded(tool_name: str) -> str:
    """Every tier of the tool failed or was skipped: it is not to be called again in this run."""
    return _dumps(
        {
            "status": "degraded",
            "message": (
                f"{tool_name} is unavailable right now; do not call this tool again in this "
                "run. Answer with what you have and say what is missing."
            ),
        }
    )


def tool_result_pending_confirmation(preview: str) -> str:
    """The call waits for a human's approval; ``preview`` is what they were shown."""
    return _dumps(
        {
            "status": "pending_confirmation",
            "preview": preview,
            "message": "this call waits for a human to approve it; it has not run yet",
        }
    )


def tool_result_denied(reason: str = "") -> str:
    """A human refused the call; it did not run."""
    body: dict[str, JsonValue] = {
        "status": "denied",
        "message": (
            "a human denied this call and it did not run; do not call it again with the same "
            "arguments"
        ),
    }
    if reason:
        body["reason"] = reason
    return _dumps(body)


def tool_result_unknown_outcome(tool_name: str, reason: str = "") -> str:
    """A side effect may or may not have happened (interrupted, and no way to find out)."""
    body: dict[str, JsonValue] = {
        "status": "unknown_outcome",
        "message": (
            f"it is unknown whether this call to {tool_name} took effect; do not repeat it "
            "and do not claim it succeeded. Tell the user it may need checking."
        ),
    }
    if reason:
        body["reason"] = reason
    return _dumps(body)


def _dumps(body: dict[str, JsonValue]) -> str:
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits: the stdlib writes them, with the same sorted, compact form.
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_SUB_AGENT_HINTS: dict[str, str] = {
    "failed": "the sub-agent could not finish; call it again with a clearer task, or answer "
    "without it",
    "budget_exceeded": "the sub-agent ran out of budget; do not call it again in this run",
    "cancelled": "the sub-agent was cancelled; do not call it again in this run",
}


def tool_result_sub_agent(
    status: str, output: str | None, error: str | None, run_id: str, cost_usd: str, flagged: bool
) -> str:
    """What a sub-agent's run ended with: its answer (``ok``), or why it has none (``error``,
    ``error_type`` ``sub_agent_<status>``), with its run id and cost either way."""
    if status == "completed":
        result: dict[str, JsonValue] = {
            "output": output or "",
            "run_id": run_id,
            "cost_usd": cost_usd,
        }
        if flagged:
            result["flagged"] = True
        return tool_result_ok(result)
    return _dumps(
        {
            "status": "error",
            "error_type": f"sub_agent_{status}",
            "errors": [{"loc": [], "message": error or status}],
            "run_id": run_id,
            "cost_usd": cost_usd,
            "hint": _SUB_AGENT_HINTS.get(status, "answer without the sub-agent"),
        }
    )
