"""What each model call is sent, built from the run's state alone.

A request is rebuilt from state wherever it is needed (to fingerprint it when it is recorded, to
send it, to send it again after a crash), so every place sees the same request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter

from agentledger.engine._agent import Agent
from agentledger.engine.models._model import Model, ModelRequest, Sampling, ToolChoice
from agentledger.engine.policies._output import OutputCheck
from agentledger.events import ModelPurpose
from agentledger.projections._memory_view import CompactionPlan, memory_view, plan_compaction
from agentledger.projections._messages import (
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)
from agentledger.projections._run_state import RunState

_MESSAGES = TypeAdapter(list[Message])

SUMMARY_INSTRUCTIONS = (
    "You compress tool results for an agent's memory. Summarise the results below: keep every "
    "fact, number, name and identifier the agent may still need; drop repetition and "
    "formatting. Answer with the summary only."
)


def compaction_plan(state: RunState, agent: Agent) -> CompactionPlan | None:
    """What the memory policy would compact before the turn's model call (``None``: nothing)."""
    policy = agent.memory
    if policy is None:
        return None
    return plan_compaction(
        state.messages,
        state.message_versions,
        state.compactions,
        policy,
        reported_input_tokens=state.reported_input_tokens,
        reported_for=state.reported_for,
    )


def model_chain(agent: Agent, purpose: ModelPurpose) -> tuple[Model, ...]:
    """The models a ``purpose`` call may go to, in order (the first, then the fallbacks)."""
    if purpose == "agent":
        return agent.models
    if purpose == "summary":
        return (agent.summary_model or agent.model,)
    critic = agent.critic
    assert critic is not None and critic.judge is not None  # decide asks a judge only then
    return (critic.judge.model,)


def build_request(state: RunState, agent: Agent, purpose: ModelPurpose) -> ModelRequest:
    """The request of the run's ``purpose`` call as its state stands."""
    if purpose == "agent":
        messages: Sequence[Message] = state.messages
        if agent.memory is not None:
            messages = memory_view(state.messages, state.message_versions, state.compactions)
        return ModelRequest(
            messages=messages,
            tools=agent.tool_specs,
            max_tokens=agent.max_tokens,
            output=agent.output_schema,
            tool_choice=tool_choice_now(state.messages, agent.tool_choice),
            sampling=agent.sampling,
        )
    if purpose == "summary":
        plan = compaction_plan(state, agent)
        assert plan is not None and agent.memory is not None  # decide summarises only then
        return ModelRequest(
            messages=[
                SystemMessage(content=SUMMARY_INSTRUCTIONS),
                UserMessage(content=plan.text_to_summarise),
            ],
            max_tokens=agent.memory.summary_max_tokens,
        )
    critic = agent.critic
    assert critic is not None and critic.judge is not None and state.started is not None
    return critic.judge.request(state.started.task, final_answer(state, agent))


def tool_choice_now(messages: Sequence[Message], choice: ToolChoice) -> ToolChoice:
    """The tool choice of the next agent call: a forcing one (``"required"`` or a tool's name)
    holds until a tool result follows the last user message, then it is ``"auto"``.

    Forcing every call would never let a run end: each reply would be a tool call (checked
    against a real llama.cpp server, where such runs ran to ``max_turns``). So the model must
    call a tool first, and may answer once it has the results; a user message (a revision)
    forces again. Folded from the messages alone, so replay and resume decide the same.
    """
    if choice in ("auto", "none"):
        return choice
    for message in reversed(messages):
        if isinstance(message, ToolResultMessage):
            return "auto"
        if isinstance(message, UserMessage):
            return choice
    return choice


def final_answer(state: RunState, agent: Agent) -> str:
    """The answer the critic and the run's output see: the model's last text, or for an agent
    with an output type its JSON without a fence."""
    structured = agent.structured
    if structured is None:
        return state.last_answer
    return structured.check(state.last_answer).json


def output_failure(state: RunState, agent: Agent, checked: OutputCheck) -> str:
    """Why a run ends ``invalid_output``: the type, the revisions spent and the last errors."""
    structured = agent.structured
    assert structured is not None
    issues = "; ".join(checked.issues) or "the output type changed since it was validated"
    return (
        f"the answer is not a valid {structured.name} after {state.output_revisions} "
        f"revision(s): {issues}"
    )


def request_body(request: ModelRequest) -> bytes:
    """The request's messages as JSON: what its size estimate and fingerprint are taken from."""
    return _MESSAGES.dump_json(list(request.messages))


def request_digest(request: ModelRequest, body: bytes | None = None) -> str:
    """A fingerprint of what a model is sent, so replay can tell when a request changed.

    The agent's settings (tool choice, sampling, output schema) count only when they are not
    the defaults, so a request with default settings keeps the digest it had before there were
    settings, and runs recorded then still replay.
    """
    body = request_body(request) if body is None else body
    tools = ",".join(sorted(t.name for t in request.tools)).encode()
    limit = str(request.max_tokens).encode()
    fingerprint = body + b"\0" + tools + b"\0" + limit
    settings = _settings(request)
    if settings:
        fingerprint += b"\0" + orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(fingerprint).hexdigest()[:32]


_DEFAULT_SAMPLING = Sampling()


def _settings(request: ModelRequest) -> dict[str, Any]:
    """The request's settings that differ from the defaults, as plain JSON values."""
    settings: dict[str, Any] = {}
    if request.tool_choice != "auto":
        settings["tool_choice"] = request.tool_choice
    sampling = request.sampling
    if sampling != _DEFAULT_SAMPLING:
        settings["sampling"] = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stop": list(sampling.stop),
            "seed": sampling.seed,
        }
    if request.output is not None:
        settings["output"] = {"name": request.output.name, "schema": request.output.schema}
    return settings
