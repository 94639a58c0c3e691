"""Performing tool-call steps: validation outcomes, keys, tiers with their breakers, claims.

A side effect's intent goes to its run's stream and to its key's ledger (``idem-<key>``) in one
atomic append, with the key stream's expected version, and is durable before any tier runs; its
outcome goes to both streams too. Tier outcomes of one step are recorded in the order of the
calls, whatever order they finish in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio

from agentledger.engine.tools._idempotency import judge
from agentledger.engine.tools._tool_keys import canonical_arguments
from agentledger.engine.tools._tools import Tool
from agentledger.events import (
    ConfirmationRequested,
    Event,
    FieldIssue,
    NewEvent,
    StreamAppend,
    ToolArgumentsRejected,
    ToolCallClaimed,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
)
from agentledger.projections._run_state import ToolCallState
from agentledger.projections._streams import key_stream

from ._commands import (
    AskConfirmation,
    CheckKey,
    Claim,
    Degrade,
    GiveUp,
    Reconcile,
    Reject,
    RunTiers,
    TierJob,
)
from ._ports import IdSource, SpanFields
from ._step import Step, Writer

_FOREVER = timedelta.max
_LEASE_MARGIN = timedelta(seconds=1)
"""Added to a side effect's own time limit before another session may take it for dead."""
_RAW_ARGUMENTS_KEPT = 4096


def _call_span(step: Step, call: ToolCallState) -> SpanFields:
    """The envelope of an event of the call's span (a new span for its first event)."""
    return step.span(call.span_id or step.ports.ids.new_id(), step.turn_span)


def reject(command: Reject, step: Step, writer: Writer) -> None:
    """Refuse the call; the model is told why."""
    call, rejection = command.call, command.rejection
    writer.stage(
        [
            ToolArgumentsRejected(
                **_call_span(step, call),
                call_id=call.call.id,
                tool_name=call.call.name,
                error_type=rejection.error_type,
                errors=rejection.errors,
                raw_arguments=call.call.arguments[:_RAW_ARGUMENTS_KEPT],
            )
        ]
    )


def ask_confirmation(command: AskConfirmation, step: Step, writer: Writer) -> None:
    """The call waits for a person."""
    call, valid = command.call, command.valid
    writer.stage(
        [
            ConfirmationRequested(
                **_call_span(step, call),
                call_id=call.call.id,
                tool_name=valid.tool.name,
                arguments=valid.arguments,
                preview=valid.tool.render_preview(valid.args),
            )
        ]
    )


async def check_key(command: CheckKey, step: Step, writer: Writer) -> None:
    """Read the key's ledger and reuse its result, refuse, report in doubt, or intend."""
    call, valid, key = command.call, command.valid, command.key
    tool, call_id = valid.tool, call.call.id
    record = await step.ports.keys.key_record(key, call_id)
    meta = _call_span(step, call)
    same = record.intent is not None and canonical_arguments(
        record.intent.arguments, tool.volatile
    ) == canonical_arguments(valid.arguments, tool.volatile)
    verdict = judge(
        record, same_arguments=same, now=meta["at"], retention=tool.retention or _FOREVER
    )
    if verdict == "reuse" and isinstance(record.outcome, ToolCallSucceeded):
        reused = ToolResultReused(
            **meta,
            call_id=call_id,
            tool_name=tool.name,
            idempotency_key=key,
            result=record.outcome.result,
            original_run_id=record.outcome.run_id,
            original_call_id=record.outcome.call_id,
        )
        writer.stage([reused])
    elif verdict == "conflict":
        issue = FieldIssue(
            message=f"idempotency key {key} was used with other arguments",
            kind="idempotency_conflict",
        )
        rejected = ToolArgumentsRejected(
            **meta,
            call_id=call_id,
            tool_name=tool.name,
            error_type="idempotency_conflict",
            errors=(issue,),
            raw_arguments=call.call.arguments[:_RAW_ARGUMENTS_KEPT],
        )
        writer.stage([rejected])
    elif verdict == "in_doubt":
        unknown = ToolOutcomeUnknown(
            **meta,
            call_id=call_id,
            tool_name=tool.name,
            idempotency_key=key,
            message="Another call with the same effect is still in progress or was "
            "interrupted; whether it happened is unknown. Do not assume either way.",
        )
        writer.stage([unknown])
    else:
        intent = ToolCallIntended(
            **meta,
            call_id=call_id,
            tool_name=tool.name,
            arguments=valid.arguments,
            idempotency_key=key,
            key_scope=tool.key_scope,
            expires_at=meta["at"] + _time_limit(step, tool, len(tool.tiers)),
        )
        entry = StreamAppend(
            key_stream(key),
            [NewEvent(intent, step.ports.ids.new_id())],
            expected_version=record.version,
        )
        writer.stage([intent], entry)


async def run_tiers(command: RunTiers, step: Step, writer: Writer) -> None:
    """Run the next tier of each call at once; record the intents of the calls cleared here,
    then the outcomes, each in call order."""
    jobs = command.jobs
    intents = [_intent(step, job) for job in jobs]
    # The breakers are asked first, one call after the other: the store read behind them may
    # fail, and its typed error must reach the caller as it is, not wrapped in the task group's
    # ExceptionGroup. Only the tiers run at once (their failures are recorded, never raised).
    spans = [step.ports.ids.new_id() for _ in jobs]
    outcomes: list[Event | None] = [
        await _skipped(step, job, intent, span)
        for job, intent, span in zip(jobs, intents, spans, strict=True)
    ]
    pending = [index for index, outcome in enumerate(outcomes) if outcome is None]

    async def run(index: int) -> None:
        job = jobs[index]
        tools = step.ports.tools
        outcomes[index] = await tools.run_tier(
            intents[index], job.tier, job.args, step.user_id, spans[index]
        )

    if len(pending) == 1:  # the common case needs no task group
        await run(pending[0])
    elif pending:
        async with anyio.create_task_group() as tg:
            for index in pending:
                tg.start_soon(run, index)
    events: list[Event] = [i for i, job in zip(intents, jobs, strict=True) if job.cleared]
    others: list[StreamAppend] = []
    for job, outcome in zip(jobs, outcomes, strict=True):
        assert outcome is not None
        events.append(outcome)
        key = job.call.key
        if key is not None and isinstance(outcome, ToolCallSucceeded):
            others.append(key_entry(step.ports.ids, key, outcome))
    writer.stage(events, *others)


def _intent(step: Step, job: TierJob) -> ToolCallIntended:
    """The call's recorded intent, or the one this step records for a call it clears."""
    valid = job.cleared
    if valid is None:
        assert job.call.intent is not None
        return job.call.intent
    return ToolCallIntended(
        **_call_span(step, job.call),
        call_id=job.call.call.id,
        tool_name=valid.tool.name,
        arguments=valid.arguments,
    )


async def _skipped(
    step: Step, job: TierJob, intent: ToolCallIntended, tier_span: str
) -> Event | None:
    """The tier's skip if its breaker is open, else ``None`` (it is to run)."""
    ports, agent = step.ports, step.agent
    skipped = await ports.health.skip(
        job.call.call.id,
        job.tool.name,
        job.tier,
        threshold=agent.breaker.threshold,
        cooldown=agent.breaker.cooldown,
        now=ports.clock.now(),
    )
    if skipped is None:
        return None
    return skipped.model_copy(update=step.span(tier_span, intent.span_id))


def degrade(command: Degrade, step: Step, writer: Writer) -> None:
    """Every tier failed or was skipped: the model is told not to call the tool again."""
    call, tool = command.call, command.tool
    degraded = ToolCallDegraded(
        **_call_span(step, call),
        call_id=call.call.id,
        tool_name=tool.name,
        tiers=tool.tier_names,
        message=f"Every implementation of {tool.name!r} failed or is switched off for now. "
        "Do not call this tool again in this run.",
    )
    key = call.key
    writer.stage([degraded], *([key_entry(step.ports.ids, key, degraded)] if key else []))


def claim(command: Claim, step: Step, writer: Writer) -> None:
    """Take over a side effect in doubt (written, with the run's expected version, before the
    reconcile hook or the re-run: of two sessions resuming the run, one wins)."""
    call, tool = command.call, command.tool
    meta = _call_span(step, call)
    tiers = 1 if command.method == "reconcile" else len(tool.tiers)
    writer.stage(
        [
            ToolCallClaimed(
                **meta,
                call_id=call.call.id,
                tool_name=tool.name,
                idempotency_key=call.key,
                method=command.method,
                expires_at=meta["at"] + _time_limit(step, tool, tiers),
            )
        ]
    )


async def reconcile(command: Reconcile, step: Step, writer: Writer) -> None:
    """Ask the reconcile hook; record what it found and, if it settles the call, its outcome."""
    call = command.call
    intent = call.intent
    assert intent is not None
    found = await step.ports.tools.reconcile(intent, command.args, step.user_id)
    meta = _call_span(step, call)
    events: list[Event] = [found]
    outcome: ToolCallSucceeded | ToolOutcomeUnknown | None = None
    if found.found == "done":
        outcome = ToolCallSucceeded(
            **meta,
            call_id=call.call.id,
            tool_name=intent.tool_name,
            tier="reconciled",
            result=found.result,
            idempotency_key=call.key,
        )
    elif found.found == "unknown":
        outcome = _unknown(step, call, found.message or "the reconcile hook could not tell")
    if outcome is not None:
        events.append(outcome)
    key = call.key
    others = [key_entry(step.ports.ids, key, outcome)] if key and outcome is not None else []
    writer.stage(events, *others)


def give_up(command: GiveUp, step: Step, writer: Writer) -> None:
    """Nothing can settle the side effect: the model is told its outcome is unknown."""
    unknown = _unknown(step, command.call, command.reason)
    key = command.call.key
    writer.stage([unknown], *([key_entry(step.ports.ids, key, unknown)] if key else []))


def _unknown(step: Step, call: ToolCallState, reason: str) -> ToolOutcomeUnknown:
    return ToolOutcomeUnknown(
        **_call_span(step, call),
        call_id=call.call.id,
        tool_name=call.call.name,
        idempotency_key=call.key,
        message=f"The run was interrupted during this call and {reason}: it may or may not "
        "have happened. Do not assume either way.",
    )


def _time_limit(step: Step, tool: Tool[Any], tiers: int) -> timedelta:
    """How long ``tiers`` tiers of ``tool`` may take at most, with a margin."""
    seconds = tool.timeout or step.agent.tool_timeout
    return timedelta(seconds=seconds * tiers) + _LEASE_MARGIN


def key_entry(ids: IdSource, key: str, event: Event) -> StreamAppend:
    """The append that records ``event`` in the ledger of ``key``."""
    return StreamAppend(key_stream(key), [NewEvent(event, ids.new_id())])
