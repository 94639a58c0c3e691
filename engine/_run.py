"""The run driver: folds a run, asks ``decide`` for the next step and performs it.

``perform`` is the only place with I/O. Each step's outcome is appended as events with the run's
expected version, so two processes driving one run cannot both write: the second gets a
``ConcurrencyError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TypedDict

from agentledger.engine.models._model import ModelRequest
from agentledger.engine.policies._budget import BudgetPolicy, Budgets
from agentledger.engine.policies._checks import JUDGE_CHECK_NAME
from agentledger.events import (
    CheckResult,
    ConcurrencyError,
    CriticVerdict,
    Event,
    EventStore,
    MemoryCompacted,
    NewEvent,
    RecordedEvent,
    RevisionRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunStarted,
    StreamAppend,
    ToolOutcomeUnknown,
    TurnStarted,
)
from agentledger.projections._memory_view import (
    memory_view,
    plan_compaction,
    summary_fields,
    truncation_fallback,
)
from agentledger.projections._messages import Message, SystemMessage, UserMessage
from agentledger.projections._run_state import RunState, RunStateProjection

from ._agent import Agent
from ._decide import CallModel, Complete, Critique, Fail, Pause, RunTools, Stop, decide
from ._errors import EngineError, RunConflictError
from ._model_call import LedgerCache, call_model, ledger_append, release
from ._ports import Clock, IdSource
from ._tool_runner import ToolRunner
from ._tool_runner import ledger_append as key_ledger_append

_PROJECTION = RunStateProjection()
_UNWRITTEN = datetime.min.replace(tzinfo=UTC)

SUMMARY_INSTRUCTIONS = (
    "You compress tool results for an agent's memory. Summarise the results below: keep every "
    "fact, number, name and identifier the agent may still need; drop repetition and "
    "formatting. Answer with the summary only."
)


def run_stream(run_id: str) -> str:
    """The stream id of a run."""
    return f"run-{run_id}"


class SpanFields(TypedDict):
    """The envelope fields of an event in a span of a run."""

    run_id: str
    span_id: str
    parent_span_id: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class EngineServices:
    """What every run of an engine shares: the store, the ports and the policies."""

    store: EventStore
    clock: Clock
    ids: IdSource
    tools: ToolRunner
    ledgers: LedgerCache
    budgets: Budgets | None
    publish: Callable[[Sequence[RecordedEvent]], None]


class RunDriver:
    """Drives one run to its end or its next pause. Not shared between tasks."""

    def __init__(self, services: EngineServices, agent: Agent | None, state: RunState) -> None:
        self.services = services
        self.store = services.store
        self.clock = services.clock
        self.ids = services.ids
        self.ledgers = services.ledgers
        self._agent = agent
        self.state = state
        self._opening: list[Event] = []

    def open(self, started: RunStarted) -> None:
        """Start a new run: ``started`` is folded now and written with the first append."""
        self.state = self._fold_ahead(self.state, [started])
        self._opening = [started]

    def opened(self) -> None:
        """The run's start is known to be in the store (it was read back)."""
        self._opening = []

    @property
    def agent(self) -> Agent:
        """The agent of the run; a driver made only to record (cancel, approve) has none."""
        if self._agent is None:
            raise RuntimeError("this run driver only records events; it has no agent")
        return self._agent

    @property
    def budget_policy(self) -> BudgetPolicy | None:
        """The run's caps, or ``None`` when its surface has none (then nothing is reserved)."""
        budgets, started = self.services.budgets, self.state.started
        if budgets is None or started is None:
            return None
        policy = budgets.policy(started.surface)
        if policy.per_run_usd is None and policy.per_user_day_usd is None:
            return None
        return policy

    def budgets_day(self, at: datetime) -> date:
        """The budget day ``at`` falls in (the configured time zone's calendar)."""
        assert self.services.budgets is not None
        return self.services.budgets.day(at)

    async def append(
        self, events: Sequence[Event], *others: StreamAppend, final: bool = False
    ) -> None:
        """Append events to the run (and other streams, atomically) and fold them in.

        ``final`` marks the last write of a step: if what it records leads to a step that needs
        no I/O (completing, pausing, failing), that step's event goes into the same write, one
        commit fewer per run for the same log. Writes in the middle of a step (a reservation,
        a retry, a side effect's intent) never conclude the run.
        """
        events = list(events)
        state = self._fold_ahead(self.state, events)
        if final and self._agent is not None:
            step = decide(state, self._agent)
            if isinstance(step, Pause | Complete | Fail):
                conclusion = self._conclusion(step, state)
                events.append(conclusion)
                state = self._fold_ahead(state, [conclusion])
        opening = self._opening
        run = StreamAppend(
            run_stream(self.state.run_id),
            [NewEvent(e, self.ids.new_id()) for e in [*opening, *events]],
            expected_version=self.state.version - len(opening),
        )
        try:
            recorded = await self.store.append(run, *_merged(others))
        except ConcurrencyError as exc:
            if exc.stream_id != run.stream_id:
                raise
            if opening:
                raise EngineError(
                    f"run {self.state.run_id!r} already exists; use resume()"
                ) from None
            raise RunConflictError(
                f"run {self.state.run_id!r} changed meanwhile (is another engine driving "
                "it?); load it and try again"
            ) from exc
        self._opening = []
        # The fold reads nothing of the envelope but the version, which the expected version
        # fixes, so the state folded ahead is the state of what was written.
        self.state = state
        self.services.publish(recorded)

    @staticmethod
    def _fold_ahead(state: RunState, events: Sequence[Event]) -> RunState:
        # The run-state fold reads only the event and its version from the envelope, so the
        # other envelope fields of these not-yet-written events are placeholders.
        stream = run_stream(state.run_id)
        for event in events:
            state = _PROJECTION.evolve(
                state, RecordedEvent(stream, state.version + 1, 0, "-", _UNWRITTEN, 1, event)
            )
        return state

    async def drive(self) -> RunState:
        """Perform steps until ``decide`` says stop; return the final state."""
        while True:
            match decide(self.state, self.agent):
                case Stop():
                    return self.state
                case CallModel(turn=turn):
                    await self._turn(turn)
                case RunTools(calls=calls):
                    await self.services.tools.run(self, calls)
                case Critique(answer=answer):
                    await self._critique(answer)
                case Pause() | Complete() | Fail() as step:
                    await self.append([self._conclusion(step, self.state)])

    def _conclusion(self, step: Pause | Complete | Fail, state: RunState) -> Event:
        """The event of a step that needs no I/O, given the state it follows."""
        match step:
            case Pause(call_ids=call_ids):
                return RunPaused(**self._meta(), reason="awaiting confirmation", call_ids=call_ids)
            case Complete(output=output, flagged=flagged):
                return RunCompleted(
                    **self._meta(),
                    output=output,
                    flagged=flagged,
                    turns=state.turn,
                    usage=state.usage,
                    cost_usd=state.cost_usd,
                )
            case Fail(error_type=error_type, message=message):
                return RunFailed(**self._meta(), error_type=error_type, message=message)

    def settle_leftovers(self, reason: str) -> tuple[list[Event], list[StreamAppend]]:
        """Events that close what an interrupted run left open: reservations are released (the
        call will be made again, or never), so no budget leaks."""
        events: list[Event] = []
        ledger: list[StreamAppend] = []
        for reservation in self.state.reservations.values():
            released = release(self, reservation, reason, self.state.turn_span_id)
            events.append(released)
            ledger.append(ledger_append(self, reservation, released))
        return events, ledger

    async def cancel(self, reason: str) -> None:
        """Record the cancellation: side effects left in flight are marked outcome-unknown and
        reservations are released."""
        events, ledger = self.settle_leftovers("the run was cancelled")
        for call_id, call in self.state.calls.items():
            if call.status != "intended":
                continue
            key = call.intent.idempotency_key if call.intent else None
            unknown = ToolOutcomeUnknown(
                **self.in_span(call.span_id or self.ids.new_id(), self.state.turn_span_id),
                call_id=call_id,
                tool_name=call.call.name,
                idempotency_key=key,
                message="The run was cancelled while this call was in flight.",
            )
            events.append(unknown)
            if key is not None:
                ledger.append(key_ledger_append(self, key, unknown))
        events.append(RunCancelled(**self._meta(), reason=reason))
        await self.append(events, *ledger)

    def _meta(self) -> SpanFields:
        """The envelope fields of a run-level event (its span is the run's)."""
        return self.in_span(self.state.run_id, None)

    def in_span(self, span_id: str, parent: str | None, at: datetime | None = None) -> SpanFields:
        """The envelope fields of an event of span ``span_id`` (child of ``parent``), at ``at``
        (default: now on the clock)."""
        return {
            "run_id": self.state.run_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "at": self.clock.now() if at is None else at,
        }

    async def _turn(self, turn: int) -> None:
        agent = self.agent
        run_id = self.state.run_id
        turn_span = self.ids.new_id()
        pending: list[Event] = [
            TurnStarted(
                **self.in_span(turn_span, run_id),
                turn=turn,
            )
        ]
        messages: Sequence[Message] = self.state.messages
        if agent.memory is not None:
            compacted = await self._compact(turn_span, pending)
            if compacted is None:
                return  # the run ended
            pending = compacted
            state = self.state
            messages = memory_view(state.messages, state.message_versions, state.compactions)
        request = ModelRequest(
            messages=messages, tools=agent.tool_specs, max_tokens=agent.max_tokens
        )
        outcome = await call_model(
            self,
            purpose="agent",
            request=request,
            models=agent.models,
            parent_span=turn_span,
            pending=pending,
        )
        if outcome is not None:
            await self.append(outcome.events, *outcome.ledger, final=True)

    async def _compact(self, turn_span: str, pending: list[Event]) -> list[Event] | None:
        """Compact old tool results if the memory policy says so (pattern 2).

        Returns the events still to append, or ``None`` if the run ended (the context cannot
        fit, or the summary call passed the budget).
        """
        policy = self.agent.memory
        assert policy is not None
        state = self.state
        plan = plan_compaction(
            state.messages,
            state.message_versions,
            state.compactions,
            policy,
            reported_input_tokens=state.reported_input_tokens,
            reported_for=state.reported_for,
        )
        if plan is None:
            return pending
        if not plan.fits:
            failed = RunFailed(
                **self._meta(),
                error_type="context_exhausted",
                message=f"the conversation needs {plan.tokens_after} tokens even with every old "
                f"tool result compacted; the memory ceiling is {policy.max_tokens}",
            )
            await self.append([*pending, failed])
            return None
        request = ModelRequest(
            messages=[
                SystemMessage(content=SUMMARY_INSTRUCTIONS),
                UserMessage(content=plan.text_to_summarise),
            ],
            max_tokens=policy.summary_max_tokens,
        )
        outcome = await call_model(
            self,
            purpose="summary",
            request=request,
            models=(self.agent.summary_model or self.agent.model,),
            parent_span=turn_span,
            pending=pending,
            fail_run=False,
        )
        if self.state.is_terminal:
            return None  # the budget could not cover the summary
        events: list[Event] = []
        ledger: list[StreamAppend] = []
        if outcome is not None:
            events, ledger = outcome.events, outcome.ledger
        if outcome is not None and outcome.reply.text.strip():
            fields = summary_fields(plan, outcome.reply.text)
        else:
            # The summariser failed: a marked truncation keeps the run going within the ceiling.
            fields = truncation_fallback(plan)
        compacted = MemoryCompacted(
            **self.in_span(self.ids.new_id(), turn_span),
            **fields,
        )
        await self.append([*events, compacted], *ledger)
        return []

    async def _critique(self, answer: str) -> None:
        """Judge the current answer: code checks first, the LLM judge only if they pass."""
        critic = self.agent.critic
        assert critic is not None
        state = self.state
        parent = state.turn_span_id
        results = critic.evaluate(answer)
        accepted = critic.accepted(results)
        issues = critic.issues(results)
        events: list[Event] = [
            CriticVerdict(
                **self.in_span(self.ids.new_id(), parent),
                agent=self.agent.name,
                accepted=accepted,
                method="deterministic",
                checks=results,
                revision=state.revision,
            )
        ]
        ledger: list[StreamAppend] = []
        actionable = True
        if critic.judge is not None and critic.wants_judge(results):
            assert state.started is not None
            judge = critic.judge
            outcome = await call_model(
                self,
                purpose="judge",
                request=judge.request(state.started.task, answer),
                models=(judge.model,),
                parent_span=state.turn_span_id or state.run_id,
                pending=events,
                fail_run=False,
            )
            if self.state.is_terminal:
                return  # the budget could not cover the judge
            verdict = judge.parse(outcome.reply) if outcome is not None else None
            accepted = verdict is not None and verdict.accepted
            # A judge that failed or answered nonsense rejects (fail closed), but its complaint
            # is about itself, not the answer, so it is not sent back for revision.
            actionable = verdict is not None and not verdict.judge_failed
            issues = verdict.issues if verdict is not None else ()
            check = (
                verdict.check_result()
                if verdict is not None
                else critic_failure("the judge model could not be reached")
            )
            events = [] if outcome is None else outcome.events
            ledger = [] if outcome is None else outcome.ledger
            events.append(
                CriticVerdict(
                    **self.in_span(self.ids.new_id(), parent),
                    agent=self.agent.name,
                    accepted=accepted,
                    method="llm",
                    checks=(check,),
                    revision=state.revision,
                )
            )
        if not accepted and actionable and issues and critic.may_revise(state.revision):
            events.append(
                RevisionRequested(
                    **self.in_span(self.ids.new_id(), parent),
                    revision=state.revision + 1,
                    issues=issues,
                    message=critic.revision_message(issues),
                )
            )
        await self.append(events, *ledger, final=True)


def critic_failure(issue: str) -> CheckResult:
    """The judge's check when no verdict could be had at all."""
    return CheckResult(name=JUDGE_CHECK_NAME, passed=False, issue=issue)


def _merged(appends: Sequence[StreamAppend]) -> list[StreamAppend]:
    """One append per stream: several outcomes may go to one ledger stream in one write."""
    by_stream: dict[str, StreamAppend] = {}
    for append in appends:
        known = by_stream.get(append.stream_id)
        if known is None:
            by_stream[append.stream_id] = append
        else:
            by_stream[append.stream_id] = StreamAppend(
                append.stream_id,
                [*known.events, *append.events],
                known.expected_version
                if known.expected_version is not None
                else append.expected_version,
            )
    return list(by_stream.values())
