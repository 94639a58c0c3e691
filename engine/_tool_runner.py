"""Performing tool calls: validation, confirmation, idempotency, tiers and the circuit breaker.

One ``run`` settles every pending call of a turn in three steps, so the log is the same whatever
order the calls finish in:

1. decide what each call needs without running anything (rejections, confirmation requests,
   reuses of recorded side effects) and append that together with the *intents* of side effects,
   so a side effect is never executed before its intent is durable;
2. execute the runnable calls concurrently;
3. append their outcomes in the order the model made the calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import JsonValue, ValidationError

from agentledger.engine.tools._idempotency import fold_key, judge, key_stream
from agentledger.engine.tools._tool_keys import canonical_arguments
from agentledger.engine.tools._tool_validation import RejectedCall, validate_call
from agentledger.engine.tools._tools import Tool, ToolContext
from agentledger.events import (
    ConcurrencyError,
    ConfirmationRequested,
    Event,
    FieldIssue,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    ToolArgumentsRejected,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
    ToolTierFailed,
    ToolTierSkipped,
)
from agentledger.projections._run_state import ToolCallState
from agentledger.projections._tool_health import (
    ToolHealth,
    ToolHealthProjection,
    circuit_open_until,
)

from ._ports import elapsed_ms

if TYPE_CHECKING:
    from ._run import RunDriver

_FOREVER = timedelta.max
_HEALTH_EVENTS = frozenset({"tool_call_succeeded", "tool_tier_failed"})
_KEY_RACE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class _Job:
    """A call cleared to execute."""

    call: ToolCallState
    tool: Tool[Any]
    args: Any
    arguments: dict[str, JsonValue]
    span_id: str
    key: str | None
    intended_at: datetime


class ToolHealthBook:
    """Tool health of this process, folded from the tool events it appends (pattern 4).

    It starts empty in a new process: a breaker is a guard against hammering a dead dependency,
    and a fresh process re-learns a dead tier after ``threshold`` failures.
    """

    def __init__(self) -> None:
        self._projection = ToolHealthProjection()
        self.state: ToolHealth = self._projection.initial()

    def observe(self, recorded: RecordedEvent) -> None:
        """Fold one appended event in."""
        if recorded.type in _HEALTH_EVENTS and recorded.stream_id.startswith("run-"):
            self.state = self._projection.evolve(self.state, recorded)


class ToolRunner:
    """Settles the pending tool calls of a run's turn; one instance serves a whole engine."""

    def __init__(self, health: ToolHealthBook) -> None:
        self.health = health

    async def run(self, driver: RunDriver, calls: tuple[ToolCallState, ...]) -> None:
        """Settle ``calls`` for ``driver``'s run, appending every step as events."""
        for attempt in range(_KEY_RACE_ATTEMPTS):
            try:
                jobs = await self._prepare(driver, calls)
                break
            except ConcurrencyError as exc:
                # Another run took a key between our read and our append; nothing of ours was
                # written, so look again. A conflict on the run stream itself is not ours to fix.
                if not exc.stream_id.startswith("idem-") or attempt + 1 == _KEY_RACE_ATTEMPTS:
                    raise
        outcomes: list[list[Event]] = [[] for _ in jobs]
        if len(jobs) == 1:  # the common case needs no task group
            await self._execute(driver, jobs[0], outcomes, 0)
        else:
            async with anyio.create_task_group() as tg:
                for index, job in enumerate(jobs):
                    tg.start_soon(self._execute, driver, job, outcomes, index)
        events: list[Event] = []
        ledger: list[StreamAppend] = []
        for job, job_events in zip(jobs, outcomes, strict=True):
            if not job.tool.side_effect:
                events.append(self._intent(driver, job))
            events.extend(job_events)
            if job.key is not None:
                ledger.append(ledger_append(driver, job.key, job_events[-1]))
        if events:
            await driver.append(events, *ledger, final=True)

    async def _prepare(self, driver: RunDriver, calls: tuple[ToolCallState, ...]) -> list[_Job]:
        state = driver.state
        tools = driver.agent.tools_by_name
        first: list[Event] = []
        ledger: list[StreamAppend] = []
        jobs: list[_Job] = []
        for pending in calls:
            span = pending.span_id or driver.ids.new_id()
            meta = driver.in_span(span, driver.state.turn_span_id)
            if pending.status == "intended":
                job = await self._in_doubt(driver, pending, span, first, ledger)
                if job is not None:
                    jobs.append(job)
                continue
            checked = validate_call(tools, pending.call)
            if isinstance(checked, RejectedCall):
                first.append(
                    ToolArgumentsRejected(
                        **meta,
                        call_id=pending.call.id,
                        tool_name=pending.call.name,
                        error_type=checked.error_type,
                        errors=checked.errors,
                        raw_arguments=pending.call.arguments[:4096],
                    )
                )
                continue
            tool, arguments = checked.tool, checked.arguments
            if tool.confirm and pending.status == "requested":
                first.append(
                    ConfirmationRequested(
                        **meta,
                        call_id=pending.call.id,
                        tool_name=tool.name,
                        arguments=arguments,
                        preview=tool.render_preview(checked.args),
                    )
                )
                continue
            key = tool.idempotency_key(arguments, run_id=state.run_id, user_id=_user_id(driver))
            if key is None:
                jobs.append(_Job(pending, tool, checked.args, arguments, span, None, meta["at"]))
                continue
            record = fold_key(await driver.store.read_stream(key_stream(key)))
            same = record.intent is not None and canonical_arguments(
                record.intent.arguments, tool.volatile
            ) == canonical_arguments(arguments, tool.volatile)
            verdict = judge(
                record, same_arguments=same, now=meta["at"], retention=tool.retention or _FOREVER
            )
            call_id, name = pending.call.id, tool.name
            if verdict == "reuse" and isinstance(record.outcome, ToolCallSucceeded):
                first.append(
                    ToolResultReused(
                        **meta,
                        call_id=call_id,
                        tool_name=name,
                        idempotency_key=key,
                        result=record.outcome.result,
                        original_run_id=record.outcome.run_id,
                        original_call_id=record.outcome.call_id,
                    )
                )
            elif verdict == "conflict":
                issue = FieldIssue(
                    message=f"idempotency key {key} was used with other arguments",
                    kind="idempotency_conflict",
                )
                first.append(
                    ToolArgumentsRejected(
                        **meta,
                        call_id=call_id,
                        tool_name=name,
                        error_type="idempotency_conflict",
                        errors=(issue,),
                        raw_arguments=pending.call.arguments[:4096],
                    )
                )
            elif verdict == "in_doubt":
                first.append(
                    ToolOutcomeUnknown(
                        **meta,
                        call_id=call_id,
                        tool_name=name,
                        idempotency_key=key,
                        message="Another call with the same effect is still in progress or was "
                        "interrupted; whether it happened is unknown. Do not assume either way.",
                    )
                )
            else:
                intent = ToolCallIntended(
                    **meta,
                    call_id=call_id,
                    tool_name=name,
                    arguments=arguments,
                    idempotency_key=key,
                    key_scope=tool.key_scope,
                )
                first.append(intent)
                ledger.append(
                    StreamAppend(
                        key_stream(key),
                        [NewEvent(intent, driver.ids.new_id())],
                        expected_version=record.version,
                    )
                )
                jobs.append(_Job(pending, tool, checked.args, arguments, span, key, meta["at"]))
        if first:
            await driver.append(first, *ledger, final=not jobs)
        return jobs

    async def _in_doubt(
        self,
        driver: RunDriver,
        pending: ToolCallState,
        span: str,
        first: list[Event],
        ledger: list[StreamAppend],
    ) -> _Job | None:
        """A side effect whose intent is recorded and outcome is not: reconcile, rerun or tell."""
        intent = pending.intent
        assert intent is not None  # "intended" is set only by a ToolCallIntended
        tool = driver.agent.tools_by_name.get(intent.tool_name)
        key = intent.idempotency_key
        outcome: Event | None = None
        if tool is not None:
            try:
                args = tool.args_model.model_validate(intent.arguments)
            except ValidationError:
                args = None
            if args is not None:
                if tool.has_reconciler:
                    context = ToolContext(
                        run_id=intent.run_id,
                        call_id=intent.call_id,
                        user_id=_user_id(driver),
                        tier="reconcile",
                        idempotency_key=key,
                    )
                    try:
                        found = await tool.reconcile(args, context)
                    except Exception as exc:  # a broken hook must not lose the run
                        found = None
                        reason = f"the reconcile hook failed: {type(exc).__name__}: {exc}"
                    if found is not None and found.status == "done":
                        outcome = ToolCallSucceeded(
                            **driver.in_span(span, driver.state.turn_span_id),
                            call_id=intent.call_id,
                            tool_name=tool.name,
                            tier="reconciled",
                            result=found.result,
                            idempotency_key=key,
                        )
                    elif found is not None and found.status == "not_done":
                        return _Job(
                            pending, tool, args, dict(intent.arguments), span, key, intent.at
                        )
                    elif found is not None:
                        reason = "the reconcile hook could not tell whether it happened"
                elif tool.retry_safe:
                    return _Job(pending, tool, args, dict(intent.arguments), span, key, intent.at)
                else:
                    reason = "the tool has no reconcile hook and is not safe to retry"
            else:
                reason = "the recorded arguments no longer fit the tool"
        else:
            reason = "the tool is no longer part of the agent"
        if outcome is None:
            outcome = ToolOutcomeUnknown(
                **driver.in_span(span, driver.state.turn_span_id),
                call_id=intent.call_id,
                tool_name=intent.tool_name,
                idempotency_key=key,
                message=f"The run was interrupted during this call and {reason}: it may or may "
                "not have happened. Do not assume either way.",
            )
        first.append(outcome)
        if key is not None:
            ledger.append(ledger_append(driver, key, outcome))
        return None

    async def _execute(
        self, driver: RunDriver, job: _Job, outcomes: list[list[Event]], index: int
    ) -> None:
        events: list[Event] = []
        tool = job.tool
        call_id = job.call.call.id
        agent = driver.agent
        for tier, _ in tool.tiers:
            now = driver.clock.now()
            tier_span = driver.ids.new_id()
            until = circuit_open_until(
                self.health.state,
                tool.name,
                tier,
                threshold=agent.breaker.threshold,
                cooldown=agent.breaker.cooldown,
            )
            meta = driver.in_span(tier_span, job.span_id, now)
            if until is not None and now < until:
                events.append(
                    ToolTierSkipped(
                        **meta, call_id=call_id, tool_name=tool.name, tier=tier, until=until
                    )
                )
                continue
            context = ToolContext(
                run_id=driver.state.run_id,
                call_id=call_id,
                user_id=_user_id(driver),
                tier=tier,
                idempotency_key=job.key,
            )
            try:
                with anyio.fail_after(tool.timeout or agent.tool_timeout):
                    result = await tool.invoke(tier, job.args, context)
            except Exception as exc:  # any failure of a tier is recorded; cancellation is not one
                ended = driver.clock.now()
                events.append(
                    ToolTierFailed(
                        **meta,
                        call_id=call_id,
                        tool_name=tool.name,
                        tier=tier,
                        error_type=type(exc).__name__,
                        message=str(exc)[:2000] or type(exc).__name__,
                        duration_ms=elapsed_ms(now, ended),
                    )
                )
                continue
            ended = driver.clock.now()
            events.append(
                ToolCallSucceeded(
                    **driver.in_span(job.span_id, driver.state.turn_span_id, ended),
                    call_id=call_id,
                    tool_name=tool.name,
                    tier=tier,
                    result=result,
                    idempotency_key=job.key,
                    duration_ms=elapsed_ms(now, ended),
                )
            )
            outcomes[index] = events
            return
        events.append(
            ToolCallDegraded(
                **driver.in_span(job.span_id, driver.state.turn_span_id),
                call_id=call_id,
                tool_name=tool.name,
                tiers=tool.tier_names,
                message=f"Every implementation of {tool.name!r} failed or is switched off for "
                "now. Do not call this tool again in this run.",
            )
        )
        outcomes[index] = events

    @staticmethod
    def _intent(driver: RunDriver, job: _Job) -> ToolCallIntended:
        # Calls without side effects record their intent with the outcome: nothing to protect.
        return ToolCallIntended(
            **driver.in_span(job.span_id, driver.state.turn_span_id, job.intended_at),
            call_id=job.call.call.id,
            tool_name=job.tool.name,
            arguments=job.arguments,
        )


def _user_id(driver: RunDriver) -> str:
    started = driver.state.started
    return started.user_id if started is not None else ""


def ledger_append(driver: RunDriver, key: str, outcome: Event) -> StreamAppend:
    """The append that records ``outcome`` in the ledger stream of ``key``."""
    return StreamAppend(key_stream(key), [NewEvent(outcome, driver.ids.new_id())])
