"""Performing the run's own steps: turns, compaction, the critic's verdicts, the run's end, and
what a cancellation records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from agentledger.engine._agent import Agent
from agentledger.engine.models._model import ModelReply
from agentledger.engine.policies._checks import JUDGE_CHECK_NAME
from agentledger.events import (
    CheckResult,
    CriticVerdict,
    Event,
    MemoryCompacted,
    ModelCallResponded,
    RevisionRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunResumed,
    RunStarted,
    StreamAppend,
    ToolOutcomeUnknown,
    TurnStarted,
)
from agentledger.projections._run_state import RunState, ToolCallState

from ._commands import CheckAnswer, CheckOutput, Compact, Complete, Fail, Judge, Pause, StartTurn
from ._perform_model import ledger_entry, release
from ._perform_tools import key_entry
from ._ports import Clock, IdSource
from ._step import Step, Writer, in_span


def start_turn(command: StartTurn, step: Step, writer: Writer) -> None:
    """Begin a turn."""
    turn_span = step.ports.ids.new_id()
    writer.stage([TurnStarted(**step.span(turn_span, step.run_id), turn=command.turn)])


def compact(command: Compact, step: Step, writer: Writer) -> None:
    """Record the turn's compaction of old tool results (the log itself is never rewritten)."""
    writer.stage(
        [MemoryCompacted(**step.span(step.ports.ids.new_id(), step.turn_span), **command.fields)]
    )


def check_output(command: CheckOutput, step: Step, writer: Writer) -> None:
    """Validate the answer against the agent's output type; an invalid one goes back to the
    model with one issue per error, while the agent's ``output_revisions`` last."""
    structured = step.agent.structured
    assert structured is not None
    checked = structured.check(command.answer)
    result = structured.check_result(checked)
    events: list[Event] = [_verdict(step, checked.valid, "output", (result,))]
    state = step.state
    if not checked.valid and state.output_revisions < step.agent.output_revisions:
        events.append(
            RevisionRequested(
                **step.span(step.ports.ids.new_id(), state.turn_span_id),
                revision=state.revision + 1,
                issues=checked.issues,
                message=structured.revision_message(checked.issues),
            )
        )
    writer.stage(events)


def check_answer(command: CheckAnswer, step: Step, writer: Writer) -> None:
    """The critic's code checks; a rejection goes back to the model unless the judge is next."""
    critic = step.agent.critic
    assert critic is not None
    results = critic.evaluate(command.answer)
    accepted = critic.accepted(results)
    events: list[Event] = [_verdict(step, accepted, "deterministic", results)]
    if not critic.wants_judge(results):
        events.extend(_revision(step, accepted, critic.issues(results)))
    writer.stage(events)


def judge(command: Judge, step: Step, writer: Writer) -> None:
    """The judge's verdict, from its reply. A judge that failed or answered nonsense rejects
    (fail closed), but its complaint is about itself, not the answer, so it is not sent back."""
    critic = step.agent.critic
    assert critic is not None and critic.judge is not None
    reply = command.reply
    verdict = critic.judge.parse(_model_reply(reply)) if reply is not None else None
    if verdict is None:
        check = CheckResult(
            name=JUDGE_CHECK_NAME, passed=False, issue="the judge model could not be reached"
        )
        writer.stage([_verdict(step, False, "llm", (check,))])
        return
    events: list[Event] = [_verdict(step, verdict.accepted, "llm", (verdict.check_result(),))]
    if not verdict.judge_failed:
        events.extend(_revision(step, verdict.accepted, verdict.issues))
    writer.stage(events)


def _verdict(
    step: Step,
    accepted: bool,
    method: Literal["deterministic", "llm", "output"],
    checks: tuple[CheckResult, ...],
) -> CriticVerdict:
    return CriticVerdict(
        **step.span(step.ports.ids.new_id(), step.state.turn_span_id),
        agent=step.agent.name,
        accepted=accepted,
        method=method,
        checks=checks,
        revision=step.state.revision,
    )


def _revision(step: Step, accepted: bool, issues: tuple[str, ...]) -> list[Event]:
    critic = step.agent.critic
    assert critic is not None
    revision = step.state.revision
    # The critic's own revisions count against its limit, not those of invalid output.
    if accepted or not issues or not critic.may_revise(revision - step.state.output_revisions):
        return []
    return [
        RevisionRequested(
            **step.span(step.ports.ids.new_id(), step.state.turn_span_id),
            revision=revision + 1,
            issues=issues,
            message=critic.revision_message(issues),
        )
    ]


def _model_reply(responded: ModelCallResponded) -> ModelReply:
    return ModelReply(
        text=responded.text,
        tool_calls=responded.tool_calls,
        usage=responded.usage,
        finish_reason=responded.finish_reason,
        model=responded.model,
    )


def complete(command: Complete, step: Step, writer: Writer) -> None:
    """End the run with its answer."""
    state = step.state
    writer.stage(
        [
            RunCompleted(
                **step.run_span(),
                output=command.output,
                flagged=command.flagged,
                turns=state.turn,
                usage=state.usage,
                cost_usd=state.cost_usd,
            )
        ]
    )


def fail(command: Fail, step: Step, writer: Writer) -> None:
    """End the run on an error it cannot recover from."""
    writer.stage(
        [RunFailed(**step.run_span(), error_type=command.error_type, message=command.message)]
    )


def pause(command: Pause, step: Step, writer: Writer) -> None:
    """Wait for confirmations."""
    writer.stage(
        [RunPaused(**step.run_span(), reason="awaiting confirmation", call_ids=command.call_ids)]
    )


def cancellation(
    state: RunState, clock: Clock, ids: IdSource, reason: str
) -> tuple[list[Event], list[StreamAppend]]:
    """What a cancellation of ``state``'s run records: reservations are given back, calls in
    flight are marked outcome-unknown (side effects in their key ledgers too), then
    ``RunCancelled``, which names the version the run had reached."""
    events: list[Event] = []
    others: list[StreamAppend] = []
    for reservation in state.reservations.values():
        span = in_span(state, clock, reservation.span_id, reservation.parent_span_id)
        released = release(reservation, "the run was cancelled", span)
        events.append(released)
        others.append(ledger_entry(ids, reservation, released))
    for call_id, call in state.calls.items():
        if call.status not in ("intended", "claimed"):
            continue
        unknown = ToolOutcomeUnknown(
            **in_span(state, clock, call.span_id or ids.new_id(), state.turn_span_id),
            call_id=call_id,
            tool_name=call.call.name,
            idempotency_key=call.key,
            message="The run was cancelled while this call was in flight.",
        )
        events.append(unknown)
        if call.key is not None:
            others.append(key_entry(ids, call.key, unknown))
    cancelled = RunCancelled(
        **in_span(state, clock, state.run_id, None), reason=reason, after_version=state.version
    )
    events.append(cancelled)
    return events, others


def run_started(
    agent: Agent[Any],
    run_id: str,
    task: str,
    *,
    user_id: str,
    surface: str,
    at: datetime,
    conversation_id: str | None = None,
    follows: str | None = None,
) -> RunStarted:
    """The first event of a new run of ``agent`` (of a conversation, following a run)."""
    return RunStarted(
        run_id=run_id,
        span_id=run_id,
        at=at,
        agent=agent.name,
        model=agent.model.name,
        task=task,
        user_id=user_id,
        surface=surface,
        system_prompt=agent.full_system_prompt(),
        conversation_id=conversation_id,
        follows=follows,
    )


def run_resumed(state: RunState, clock: Clock) -> RunResumed:
    """The first event of a new session of a run: after a confirmation, after a stop, or the
    first session of a fork (nothing written since its copy: not an interruption)."""
    started = state.started
    fresh_fork = (
        started is not None
        and started.forked_from is not None
        and state.version == started.forked_at_version
    )
    reason = "forked" if fresh_fork else "confirmed" if state.status == "paused" else "interrupted"
    return RunResumed(**in_span(state, clock, state.run_id, None), reason=reason)


def in_flight_until(state: RunState) -> datetime | None:
    """Until when a side effect of the run may still be running in the session that started
    it (the latest deadline of its intents and claims without outcome), or ``None``."""
    deadlines = [
        deadline
        for call in state.calls.values()
        if call.status in ("intended", "claimed") and call.key is not None and not call.interrupted
        if (deadline := _deadline(call)) is not None
    ]
    return max(deadlines, default=None)


def _deadline(call: ToolCallState) -> datetime | None:
    if call.claim is not None:
        return call.claim.expires_at
    return call.intent.expires_at if call.intent is not None else None
