"""``decide``: the pure half of the loop. It looks at a run's state and names the next step.

No I/O, no clock, no ids: the same state always gives the same command, which is what makes a
resumed run continue where its log stops and a replayed run ask for exactly what was recorded.
Each command is one step (see ``_commands``); a step that waits on the world is performed with
at most one I/O, and what it yields is folded back before the next decision.
"""

from __future__ import annotations

from agentledger.engine._agent import Agent
from agentledger.engine._errors import model_error_class
from agentledger.events import ModelCallFailed
from agentledger.projections._memory_view import summary_fields, truncation_fallback
from agentledger.projections._run_state import ModelCallState, RunState

from ._commands import (
    AbandonRequest,
    CheckAnswer,
    CheckOutput,
    Command,
    Compact,
    Complete,
    Fail,
    FallBack,
    Judge,
    RequestModel,
    Retry,
    SendRequest,
    StartTurn,
    Stop,
)
from ._decide_tools import tool_step
from ._requests import compaction_plan, model_chain, output_failure

STOP = Stop()


def decide(state: RunState, agent: Agent) -> Command:
    """The next step of a run, from its state alone."""
    if state.status != "running":
        return STOP
    if state.model_call is not None:
        return _model_step(state, agent, state.model_call)
    if state.calls:
        step = tool_step(state, agent)
        if step is not None:
            return step
    if state.turn == 0:
        return StartTurn(1)
    if state.replied_turn < state.turn:
        return _before_reply(state, agent)
    if state.calls:  # every tool call of the turn has its result
        return _next_turn(state, agent)
    return _answer_step(state, agent)


def _next_turn(state: RunState, agent: Agent) -> Command:
    if state.turn >= agent.max_turns:
        return Fail("max_turns", f"no answer after {agent.max_turns} turns")
    return StartTurn(state.turn + 1)


def _before_reply(state: RunState, agent: Agent) -> Command:
    """A turn has begun and its model has not answered: compact memory first if it must be."""
    if agent.memory is not None and state.compacted_turn != state.turn:
        plan = compaction_plan(state, agent)
        if plan is not None:
            if not plan.fits:
                return Fail(
                    "context_exhausted",
                    f"the conversation needs {plan.tokens_after} tokens even with every old "
                    f"tool result compacted; the memory ceiling is {agent.memory.max_tokens}",
                )
            summary = state.summary_reply
            if summary is None:
                return _model_step(state, agent, ModelCallState("summary"))
            if summary.strip():
                return Compact(summary_fields(plan, summary))
            return Compact(truncation_fallback(plan))
    return _model_step(state, agent, ModelCallState("agent"))


def _answer_step(state: RunState, agent: Agent) -> Command:
    """The model answered without tool calls: validate the answer against the output type,
    judge it, then complete the run."""
    if state.revision_turn == state.turn:  # sent back for revision: the model tries again
        return _next_turn(state, agent)
    progress = state.critic
    if progress is not None and progress.turn != state.turn:
        progress = None  # verdicts on an earlier turn's answer
    answer = state.last_answer
    structured = agent.structured
    if structured is not None:
        if progress is None or progress.output is None:
            return CheckOutput(answer)
        checked = structured.check(answer)
        if not (progress.output.accepted and checked.valid):  # no revision left
            return Fail("invalid_output", output_failure(state, agent, checked))
        answer = checked.json  # the critic and the run's output see the JSON, unfenced
    critic = agent.critic
    if critic is None:
        return Complete(answer)
    if progress is None or progress.code is None:
        return CheckAnswer(answer)
    if progress.final is None and critic.wants_judge(progress.code.checks):
        if state.judge_reply is not None:
            return Judge(state.judge_reply)
        return _model_step(state, agent, ModelCallState("judge"))
    final = progress.final or progress.code
    return Complete(answer, flagged=not final.accepted)


def _model_step(state: RunState, agent: Agent, call: ModelCallState) -> Command:
    """The next step of a model call: send, retry, fall back, or give up on it."""
    chain = model_chain(agent, call.purpose)
    if call.open is not None:
        if call.interrupted:
            return AbandonRequest(call.open)
        named = [m for m in chain if m.name == call.open.model]
        if not named:  # the agent no longer has that model: the request cannot be sent
            return AbandonRequest(call.open)
        return SendRequest(call.open, named[0])
    failure = call.failure
    if failure is not None:
        delay = None
        if _retryable(failure):
            delay = agent.retry.delay(call.answered, failure.retry_after_s)
        if delay is not None:
            return Retry(failure, call.answered + 1, delay)
        if call.model_index + 1 < len(chain):
            return FallBack(failure, chain[call.model_index + 1])
        return _exhausted(state, agent, call, failure)
    if call.model_index >= len(chain):  # the chain got shorter since the log was written
        return Fail("models_unavailable", "the model chain has no model left to try")
    return RequestModel(
        call.purpose, chain[call.model_index], call.answered + 1, not_before=call.retry_at
    )


def _retryable(failure: ModelCallFailed) -> bool:
    if failure.retryable is not None:
        return failure.retryable
    return model_error_class(failure.error_type).retryable


def _exhausted(
    state: RunState, agent: Agent, call: ModelCallState, failure: ModelCallFailed
) -> Command:
    """Every model of the chain failed: the run fails, or the purpose's fallback applies."""
    if call.purpose == "summary":
        plan = compaction_plan(state, agent)
        if plan is None or not plan.fits:  # the state did not move since the summary began
            return Fail("context_exhausted", "the memory could not be compacted")
        return Compact(truncation_fallback(plan))
    if call.purpose == "judge":
        return Judge(None)
    return Fail("models_unavailable", f"every model failed; last error: {failure.message}")
