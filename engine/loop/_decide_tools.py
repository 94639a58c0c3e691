"""The tool half of ``decide``: the next step for the current turn's tool calls.

Calls are taken in the order the model made them. Steps that need nothing from the world
(rejections, confirmation requests) come first; a side effect reads its key's ledger before it
is intended; then the next tier of every cleared call runs at once (a call without side effects
is cleared, its intent recorded, in that same step). A side effect whose key an earlier call of
the same reply holds waits for that call's outcome, so one key is executed once even within
one reply. A side effect left in flight
by a stopped session is in doubt: it is claimed, then reconciled or run again, or the model is
told its outcome is unknown.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agentledger.engine._agent import Agent
from agentledger.engine.tools._subagent import SubAgentTool
from agentledger.engine.tools._tool_validation import RejectedCall, validate_call
from agentledger.engine.tools._tools import Tool
from agentledger.projections._run_state import RunState, ToolCallState

from ._commands import (
    AskConfirmation,
    CheckKey,
    Claim,
    Command,
    Degrade,
    GiveUp,
    Pause,
    Reconcile,
    Reject,
    RunSubAgent,
    RunTiers,
    StartSubAgent,
    TierJob,
)


def tool_step(state: RunState, agent: Agent) -> Command | None:
    """The next step for the turn's tool calls, or ``None`` when each has its result."""
    tools = agent.tools_by_name
    held_keys: set[str] = set()
    jobs: list[TierJob] = []
    waiting: list[str] = []
    for call_id, call in state.calls.items():
        if call.status == "resolved":
            continue
        if call.status == "awaiting_confirmation":
            waiting.append(call_id)
            continue
        if call.child is not None:
            # One child at a time, in call order: each starts with what the ones before it left
            # of the run's cap (the other calls' tiers wait for it).
            return _child_step(call, tools)
        if call.status in ("requested", "approved"):
            admitted = _admit(state, call, tools, held_keys)
            if isinstance(admitted, TierJob):
                jobs.append(admitted)
            elif admitted is not None:
                return admitted
            continue
        step_or_job = _in_flight(call, tools)
        if call.key is not None:
            held_keys.add(call.key)
        if isinstance(step_or_job, TierJob):
            jobs.append(step_or_job)
        elif not (jobs and isinstance(step_or_job, Reconcile)):
            # (A reconcile waits for the tiers of earlier calls: outcomes in call order.)
            return step_or_job
    if jobs:
        return RunTiers(tuple(jobs))
    if waiting:
        return Pause(tuple(waiting))
    return None


def _admit(
    state: RunState, call: ToolCallState, tools: dict[str, Tool[Any]], held_keys: set[str]
) -> Command | TierJob | None:
    """Validate a call the model made (or a person approved): refuse it, ask for confirmation,
    check its key, or (no side effect) run it; ``None`` when it must wait for an earlier call
    with the same idempotency key."""
    checked = validate_call(tools, call.call)
    if isinstance(checked, RejectedCall):
        return Reject(call, checked)
    tool = checked.tool
    if tool.confirm and call.status == "requested":
        return AskConfirmation(call, checked)
    if isinstance(tool, SubAgentTool):
        return StartSubAgent(call, tool, checked.args)
    started = state.started
    user_id = started.user_id if started is not None else ""
    key = tool.idempotency_key(checked.arguments, run_id=state.run_id, user_id=user_id)
    if key is None:
        return TierJob(call, tool, tool.tiers[0][0], checked.args, cleared=checked)
    if key in held_keys:
        return None
    held_keys.add(key)
    return CheckKey(call, checked, key)


def _child_step(call: ToolCallState, tools: dict[str, Tool[Any]]) -> Command:
    """The next step of a sub-agent call whose child run has started: drive it on."""
    tool = tools.get(call.call.name)
    if not isinstance(tool, SubAgentTool):
        return GiveUp(call, "the sub-agent is no longer part of the agent")
    return RunSubAgent(call, tool)


def _in_flight(call: ToolCallState, tools: dict[str, Tool[Any]]) -> Command | TierJob:
    """The next step of an intended or claimed call: its next tier, or settling it."""
    intent = call.intent
    assert intent is not None  # intended and claimed calls have one
    tool = tools.get(intent.tool_name)
    args = _arguments(tool, intent.arguments) if tool is not None else None
    if call.interrupted and call.key is not None:
        return _in_doubt(call, tool, args)
    if tool is None or args is None:
        if call.key is not None:
            return GiveUp(call, "the tool or its arguments no longer fit the agent")
        return GiveUp(call, "the tool is no longer part of the agent")
    if call.status == "claimed":
        return Reconcile(call, args)
    tiers = tool.tiers
    if call.tiers_done >= len(tiers):
        return Degrade(call, tool)
    return TierJob(call, tool, tiers[call.tiers_done][0], args)


def _in_doubt(call: ToolCallState, tool: Tool[Any] | None, args: Any) -> Command:
    """A side effect in flight when its session stopped: did it happen?"""
    if tool is None:
        return GiveUp(call, "the tool is no longer part of the agent")
    if args is None:
        return GiveUp(call, "the recorded arguments no longer fit the tool")
    if tool.has_reconciler:
        return Claim(call, tool, "reconcile")
    if tool.retry_safe:
        return Claim(call, tool, "rerun")
    return GiveUp(call, "the tool has no reconcile hook and is not safe to retry")


def _arguments(tool: Tool[Any], arguments: dict[str, Any]) -> Any:
    try:
        return tool.args_model.model_validate(arguments)
    except ValidationError:
        return None
