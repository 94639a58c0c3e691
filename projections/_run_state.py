"""The run-state projection: everything the engine's ``decide`` needs, folded from a run's stream.

A fresh process that folds a run's events gets exactly the state of the process that wrote them;
the engine keeps nothing else. That includes the progress of work in flight: how far a model call
got (attempts, fallback position, the reservation it holds, when it may be retried), how far each
tool call got (intent, tiers tried, a claim on it after a crash), whether the turn's memory was
compacted and what the critic said. The fold is pure and copy-on-write: ``evolve_run`` returns a
new state and never touches the one it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

from agentledger.events import (
    BudgetExceeded,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    ConfirmationApproved,
    ConfirmationDenied,
    ConfirmationRequested,
    ConversationContinued,
    ConversationJoined,
    CriticVerdict,
    Event,
    MemoryCompacted,
    ModelCallFailed,
    ModelCallInterrupted,
    ModelCallRequested,
    ModelCallResponded,
    ModelCallRetried,
    ModelFellBack,
    ModelPurpose,
    RecordedEvent,
    RevisionRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunResumed,
    RunStarted,
    ToolArgumentsRejected,
    ToolCall,
    ToolCallClaimed,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallReconciled,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
    ToolTierFailed,
    ToolTierSkipped,
    TurnStarted,
    Usage,
)

from ._conversation import with_history
from ._messages import AssistantMessage, Message, SystemMessage, ToolResultMessage, UserMessage
from ._tool_results import (
    tool_result_degraded,
    tool_result_denied,
    tool_result_error,
    tool_result_ok,
    tool_result_unknown_outcome,
)

RunStatus = Literal[
    "new", "running", "paused", "completed", "failed", "cancelled", "budget_exceeded"
]
ToolCallStatus = Literal[
    "requested",  # the model asked for it; nothing recorded since
    "awaiting_confirmation",
    "approved",
    "intended",  # validated and cleared to run: its tiers are being tried
    "claimed",  # a side effect in doubt, claimed for its reconcile hook
    "resolved",  # a result for the model is recorded
]


@dataclass(frozen=True)
class ToolCallState:
    """One tool call of the current turn and how far it got.

    ``tiers_done`` counts the tiers tried (failed or skipped) since the call was intended, or
    since a claim or a reconcile hook sent it back to its first tier. ``interrupted`` marks a
    call that was in flight (intended or claimed) when its session stopped: the next session
    finds it in doubt.
    """

    call: ToolCall
    index: int = 0
    """Its position among the calls of the model's reply."""
    status: ToolCallStatus = "requested"
    span_id: str | None = None
    intent: ToolCallIntended | None = None
    tiers_done: int = 0
    interrupted: bool = False
    claim: ToolCallClaimed | None = None

    @property
    def key(self) -> str | None:
        """The idempotency key of a side effect's intent (``None`` before, or for other tools)."""
        return self.intent.idempotency_key if self.intent is not None else None


@dataclass(frozen=True)
class ModelCallState:
    """One logical model call in progress (an agent turn's, a summary's or a judgement's).

    ``model_index`` is the position in the model chain it has reached (fallbacks move it on),
    ``answered`` the attempts on that model that got an answer (a reply or an error). ``open`` is
    a request recorded without an answer yet, holding ``reservation`` when a budget applies;
    ``interrupted`` says its session stopped before the answer. ``failure`` is the latest error,
    while retrying or falling back is still to be decided; ``retry_at`` the earliest time of the
    next attempt after a back-off.
    """

    purpose: ModelPurpose
    model_index: int = 0
    answered: int = 0
    open: ModelCallRequested | None = None
    interrupted: bool = False
    reservation: BudgetReserved | None = None
    failure: ModelCallFailed | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True)
class CriticProgress:
    """What the critic said about the answer of ``turn``: the code checks' verdict, and the
    judge's once it has spoken (``final``); before both, for an agent with an output type, the
    verdict of the answer's validation (``output``)."""

    turn: int
    code: CriticVerdict | None = None
    final: CriticVerdict | None = None
    output: CriticVerdict | None = None


@dataclass(frozen=True)
class RunState:
    """A run as its events describe it."""

    run_id: str = ""
    status: RunStatus = "new"
    version: int = 0
    """The stream version folded so far: the expected version of the run's next append."""
    started: RunStarted | None = None
    turn: int = 0
    turn_span_id: str | None = None
    replied_turn: int = 0
    """The turn whose agent reply was recorded last (``turn`` once the turn's model answered)."""
    messages: tuple[Message, ...] = ()
    """The whole conversation, uncompacted; the memory view derives what is sent from it."""
    message_versions: tuple[int, ...] = ()
    """The stream version of the event each message of ``messages`` comes from."""
    compactions: tuple[MemoryCompacted, ...] = ()
    compacted_turn: int = 0
    """The turn whose memory was compacted last (at most once per turn)."""
    reported_input_tokens: int | None = None
    """Input tokens the provider reported for the last agent call (``None`` after compaction)."""
    reported_for: int = 0
    """How many messages that report covers (the first ``reported_for`` of ``messages``)."""
    requested_messages: int = 0
    calls: dict[str, ToolCallState] = field(default_factory=dict)
    """The current turn's tool calls by call id, in the order the model made them."""
    results_at: int = 0
    """Where the current turn's tool results start in ``messages`` (they stay in call order)."""
    model_call: ModelCallState | None = None
    """The model call in progress, if any."""
    summary_reply: str | None = None
    """The summariser's text for the compaction about to be recorded."""
    judge_reply: ModelCallResponded | None = None
    """The judge's reply for the verdict about to be recorded."""
    critic: CriticProgress | None = None
    last_answer: str = ""
    """The newest non-empty text of the model: the best answer the run has."""
    output: str | None = None
    flagged: bool = False
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    """What the run's model calls cost, from their replies."""
    spent_usd: Decimal = Decimal(0)
    """Settled budget: the sum of the run's ``BudgetSettled.actual_usd``."""
    reservations: dict[str, BudgetReserved] = field(default_factory=dict)
    """Budget reserved for model calls not settled or released yet, by reservation id."""
    revision: int = 0
    """Revisions the critic has asked for so far."""
    revision_turn: int = 0
    """The turn whose answer was last sent back for revision."""
    output_revisions: int = 0
    """How many of ``revision`` sent back an answer that was not a valid output type."""
    error: str | None = None
    conversation: ConversationContinued | None = None
    """The history the run was started with, for a run that continues a conversation."""

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended (completed, failed, cancelled or out of budget)."""
        return self.status in ("completed", "failed", "cancelled", "budget_exceeded")

    @property
    def committed_usd(self) -> Decimal:
        """Settled spend plus outstanding reservations: what the run cap is checked against."""
        return self.spent_usd + sum((r.amount_usd for r in self.reservations.values()), Decimal(0))


def _add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
    )


T = TypeVar("T", RunState, ToolCallState, ModelCallState, CriticProgress)


def _with(state: T, changes: dict[str, Any]) -> T:
    # dataclasses.replace re-runs __init__ with all its checks; copying the instance dict is
    # the same copy at a fraction of the cost, and the fold runs it for nearly every event.
    new = object.__new__(type(state))
    object.__setattr__(new, "__dict__", {**state.__dict__, **changes})
    return new


_NEW_CALL = ToolCallState(call=ToolCall(id="", name="", arguments=""))
"""A call's state before anything happened to it, copied for every new call (copying an
instance's dict is cheaper than a frozen dataclass's ``__init__``, on every model reply)."""

_NEW_MODEL_CALL: dict[str, ModelCallState] = {
    purpose: ModelCallState(purpose) for purpose in ("agent", "summary", "judge")
}


def _replace(state: T, **changes: Any) -> T:
    """``state`` with ``changes`` (a frozen state's copy, without ``dataclasses.replace``'s
    cost)."""
    return _with(state, changes)


def _resolved(state: RunState, version: int, call_id: str, content: str) -> dict[str, Any]:
    """The changes that record the result (``content``, JSON) of a call of the current turn.

    The result message goes where the call's position says, whatever order the results came
    in (a rejection, a cache hit and a re-run after a crash settle at different times), so the
    model always sees a turn's results in the order it made the calls.
    """
    current = state.calls.get(call_id)
    if current is None or current.status == "resolved":
        return {}  # a result for a call not of this turn, or a second one: nothing to add
    message = ToolResultMessage(tool_call_id=call_id, tool_name=current.call.name, content=content)
    before = sum(
        1 for c in state.calls.values() if c.status == "resolved" and c.index < current.index
    )
    at = state.results_at + before
    return {
        "calls": {**state.calls, call_id: _replace(current, status="resolved")},
        "messages": (*state.messages[:at], message, *state.messages[at:]),
        "message_versions": (
            *state.message_versions[:at],
            version,
            *state.message_versions[at:],
        ),
    }


def _call_changed(state: RunState, call_id: str, **changes: Any) -> dict[str, Any]:
    current = state.calls.get(call_id)
    if current is None or current.status == "resolved":
        return {}
    return {"calls": {**state.calls, call_id: _replace(current, **changes)}}


def _model_call_changed(state: RunState, **changes: Any) -> dict[str, Any]:
    if state.model_call is None:
        return {}
    return {"model_call": _replace(state.model_call, **changes)}


def _reply(state: RunState, event: ModelCallResponded, version: int) -> dict[str, Any]:
    spend = {
        "usage": _add_usage(state.usage, event.usage),
        "cost_usd": state.cost_usd + event.cost_usd,
        "model_call": None,
    }
    if event.purpose == "summary":
        return {**spend, "summary_reply": event.text}
    if event.purpose == "judge":
        return {**spend, "judge_reply": event}
    assistant = AssistantMessage(content=event.text, tool_calls=event.tool_calls)
    return {
        **spend,
        "messages": (*state.messages, assistant),
        "message_versions": (*state.message_versions, version),
        "calls": {
            c.id: _with(_NEW_CALL, {"call": c, "index": i}) for i, c in enumerate(event.tool_calls)
        },
        "results_at": len(state.messages) + 1,
        "replied_turn": state.turn,
        "last_answer": event.text or state.last_answer,
        "reported_input_tokens": event.usage.input_tokens or None,
        "reported_for": state.requested_messages,
    }


def _resumed(state: RunState) -> dict[str, Any]:
    """A new session: work the previous one left in flight is now interrupted."""
    changes: dict[str, Any] = {}
    if state.status == "paused":
        changes["status"] = "running"
    call = state.model_call
    if call is not None and call.open is not None:
        changes["model_call"] = _replace(call, interrupted=True)
    in_flight = {
        call_id: _replace(c, interrupted=True)
        for call_id, c in state.calls.items()
        if c.status in ("intended", "claimed")
    }
    if in_flight:
        changes["calls"] = {**state.calls, **in_flight}
    return changes


# -- what each event changes: one handler per event type --------------------------------------

Changes = dict[str, Any]


def _requested(state: RunState, event: ModelCallRequested, version: int) -> Changes:
    current = state.model_call
    if current is None or current.purpose != event.purpose:
        current = _NEW_MODEL_CALL[event.purpose]
    opened = _replace(current, open=event, interrupted=False, failure=None, retry_at=None)
    if event.purpose == "agent":
        return {"model_call": opened, "requested_messages": event.message_count}
    return {"model_call": opened}


def _failed(state: RunState, event: ModelCallFailed, version: int) -> Changes:
    call = state.model_call
    if call is None:
        return {}
    answered = call.answered + 1
    return _model_call_changed(state, open=None, reservation=None, answered=answered, failure=event)


def _interrupted(state: RunState, event: ModelCallInterrupted, version: int) -> Changes:
    return _model_call_changed(state, open=None, reservation=None, interrupted=False)


def _retried(state: RunState, event: ModelCallRetried, version: int) -> Changes:
    retry_at = event.at + timedelta(seconds=event.delay_s)
    return _model_call_changed(state, failure=None, retry_at=retry_at)


def _fell_back(state: RunState, event: ModelFellBack, version: int) -> Changes:
    call = state.model_call
    if call is None:
        return {}
    index = call.model_index + 1
    return _model_call_changed(state, model_index=index, answered=0, failure=None, retry_at=None)


def _reserved(state: RunState, event: BudgetReserved, version: int) -> Changes:
    changes: Changes = {"reservations": {**state.reservations, event.reservation_id: event}}
    call = state.model_call
    if call is not None and call.open is not None and call.open.call_id == event.span_id:
        changes["model_call"] = _replace(call, reservation=event)
    return changes


def _settled(state: RunState, event: BudgetSettled, version: int) -> Changes:
    if event.reservation_id not in state.reservations:
        return {}
    rest = {k: v for k, v in state.reservations.items() if k != event.reservation_id}
    return {"reservations": rest, "spent_usd": state.spent_usd + event.actual_usd}


def _released(state: RunState, event: BudgetReleased, version: int) -> Changes:
    rest = {k: v for k, v in state.reservations.items() if k != event.reservation_id}
    return {"reservations": rest}


def _exceeded(state: RunState, event: BudgetExceeded, version: int) -> Changes:
    return {"status": "budget_exceeded", "output": state.last_answer or None}


def _rejected(state: RunState, event: ToolArgumentsRejected, version: int) -> Changes:
    content = tool_result_error(event.error_type, event.errors)
    return _resolved(state, version, event.call_id, content)


def _intended(state: RunState, event: ToolCallIntended, version: int) -> Changes:
    return _call_changed(
        state,
        event.call_id,
        status="intended",
        span_id=event.span_id,
        intent=event,
        tiers_done=0,
        interrupted=False,
    )


def _claimed(state: RunState, event: ToolCallClaimed, version: int) -> Changes:
    status = "claimed" if event.method == "reconcile" else "intended"
    return _call_changed(
        state, event.call_id, status=status, claim=event, tiers_done=0, interrupted=False
    )


def _reconciled(state: RunState, event: ToolCallReconciled, version: int) -> Changes:
    if event.found != "not_done":
        return {}  # the outcome that follows settles the call
    return _call_changed(state, event.call_id, status="intended", tiers_done=0)


def _tier_tried(state: RunState, event: ToolTierFailed | ToolTierSkipped, version: int) -> Changes:
    current = state.calls.get(event.call_id)
    if current is None or current.status != "intended":
        return {}
    return _call_changed(state, event.call_id, tiers_done=current.tiers_done + 1)


def _succeeded(
    state: RunState, event: ToolCallSucceeded | ToolResultReused, version: int
) -> Changes:
    return _resolved(state, version, event.call_id, tool_result_ok(event.result))


def _degraded(state: RunState, event: ToolCallDegraded, version: int) -> Changes:
    return _resolved(state, version, event.call_id, tool_result_degraded(event.tool_name))


def _unknown(state: RunState, event: ToolOutcomeUnknown, version: int) -> Changes:
    content = tool_result_unknown_outcome(event.tool_name, event.message)
    return _resolved(state, version, event.call_id, content)


def _confirmation(state: RunState, event: ConfirmationRequested, version: int) -> Changes:
    return _call_changed(
        state, event.call_id, status="awaiting_confirmation", span_id=event.span_id
    )


def _approved(state: RunState, event: ConfirmationApproved, version: int) -> Changes:
    return _call_changed(state, event.call_id, status="approved")


def _denied(state: RunState, event: ConfirmationDenied, version: int) -> Changes:
    return _resolved(state, version, event.call_id, tool_result_denied(event.reason))


def _started(state: RunState, event: RunStarted, version: int) -> Changes:
    messages: list[Message] = []
    if event.system_prompt:
        messages.append(SystemMessage(content=event.system_prompt))
    messages.append(UserMessage(content=event.task))
    return {
        "run_id": event.run_id,
        "status": "running",
        "started": event,
        "messages": tuple(messages),
        "message_versions": (version,) * len(messages),
    }


def _continued(state: RunState, event: ConversationContinued, version: int) -> Changes:
    if state.conversation is not None or state.turn or not state.messages:
        return {}  # history opens a run, once: anywhere else it changes nothing
    messages, versions = with_history(state.messages, state.message_versions, event, version)
    return {"conversation": event, "messages": messages, "message_versions": versions}


def _joined(state: RunState, event: ConversationJoined, version: int) -> Changes:
    return {}  # written to the conversation's stream, never to a run's


def _turn(state: RunState, event: TurnStarted, version: int) -> Changes:
    return {"turn": event.turn, "turn_span_id": event.span_id, "calls": {}}


def _compacted(state: RunState, event: MemoryCompacted, version: int) -> Changes:
    # What the provider reported no longer describes what will be sent.
    return {
        "compactions": (*state.compactions, event),
        "reported_input_tokens": None,
        "compacted_turn": state.turn,
        "summary_reply": None,
        "model_call": None,
    }


def _verdict(state: RunState, event: CriticVerdict, version: int) -> Changes:
    if event.method == "output":
        return {"critic": CriticProgress(state.turn, output=event)}
    progress = state.critic
    if progress is None or progress.turn != state.turn:
        progress = CriticProgress(state.turn)
    if event.method == "deterministic":
        return {"critic": CriticProgress(state.turn, code=event, output=progress.output)}
    return {"critic": _replace(progress, final=event), "judge_reply": None, "model_call": None}


def _revision(state: RunState, event: RevisionRequested, version: int) -> Changes:
    text = event.message or "Please revise your answer. Issues:\n" + "\n".join(
        f"- {issue}" for issue in event.issues
    )
    # A revision follows the verdict that asked for it: an output verdict with no code verdict
    # after it sent back an answer that was not valid output (counted apart from the critic's).
    progress = state.critic
    invalid_output = (
        progress is not None
        and progress.turn == state.turn
        and progress.code is None
        and progress.output is not None
        and not progress.output.accepted
    )
    return {
        "revision": event.revision,
        "revision_turn": state.turn,
        "output_revisions": state.output_revisions + invalid_output,
        "messages": (*state.messages, UserMessage(content=text)),
        "message_versions": (*state.message_versions, version),
    }


def _paused(state: RunState, event: RunPaused, version: int) -> Changes:
    return {"status": "paused"}


def _session(state: RunState, event: RunResumed, version: int) -> Changes:
    return _resumed(state)


def _completed(state: RunState, event: RunCompleted, version: int) -> Changes:
    return {"status": "completed", "output": event.output, "flagged": event.flagged}


def _run_failed(state: RunState, event: RunFailed, version: int) -> Changes:
    return {"status": "failed", "error": f"{event.error_type}: {event.message}"}


def _cancelled(state: RunState, event: RunCancelled, version: int) -> Changes:
    return {"status": "cancelled", "error": event.reason or None}


def _answered(state: RunState, event: ModelCallResponded, version: int) -> Changes:
    return _reply(state, event, version)


_HANDLERS: dict[str, Callable[[RunState, Any, int], Changes]] = {
    "run_started": _started,
    "turn_started": _turn,
    "run_completed": _completed,
    "run_failed": _run_failed,
    "run_cancelled": _cancelled,
    "run_paused": _paused,
    "run_resumed": _session,
    "model_call_requested": _requested,
    "model_call_responded": _answered,
    "model_call_failed": _failed,
    "model_call_interrupted": _interrupted,
    "model_call_retried": _retried,
    "model_fell_back": _fell_back,
    "tool_arguments_rejected": _rejected,
    "tool_call_intended": _intended,
    "tool_call_claimed": _claimed,
    "tool_call_reconciled": _reconciled,
    "tool_call_succeeded": _succeeded,
    "tool_tier_failed": _tier_tried,
    "tool_tier_skipped": _tier_tried,
    "tool_call_degraded": _degraded,
    "tool_result_reused": _succeeded,
    "tool_outcome_unknown": _unknown,
    "confirmation_requested": _confirmation,
    "confirmation_approved": _approved,
    "confirmation_denied": _denied,
    "budget_reserved": _reserved,
    "budget_settled": _settled,
    "budget_released": _released,
    "budget_exceeded": _exceeded,
    "memory_compacted": _compacted,
    "critic_verdict": _verdict,
    "revision_requested": _revision,
    "conversation_continued": _continued,
    "conversation_joined": _joined,
}
"""Every event type's handler (a test checks the catalog has no type without one)."""


def evolve_run(state: RunState, event: Event, version: int) -> RunState:
    """The state after ``event``, recorded at stream ``version`` (all the fold reads of the
    envelope), so events not written yet fold the same as events read back."""
    changes = _HANDLERS[event.type](state, event, version)
    changes["version"] = version
    return _with(state, changes)


class RunStateProjection:
    """The ``Projection`` of one run's stream into a ``RunState``."""

    def initial(self) -> RunState:
        return RunState()

    def evolve(self, state: RunState, recorded: RecordedEvent) -> RunState:
        return evolve_run(state, recorded.event, recorded.version)


def fold_run(events: list[RecordedEvent], state: RunState | None = None) -> RunState:
    """Fold a run's recorded events (oldest first) into its state."""
    current = RunState() if state is None else state
    for recorded in events:
        current = evolve_run(current, recorded.event, recorded.version)
    return current
