"""The run-state projection: everything the engine's ``decide`` needs, folded from a run's stream.

A fresh process that folds a run's events gets exactly the state of the process that wrote them;
the engine keeps nothing else. The fold is pure and copy-on-write: ``evolve`` returns a new state
and never touches the one it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from agentledger.events import (
    BudgetExceeded,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    ConfirmationApproved,
    ConfirmationDenied,
    ConfirmationRequested,
    CriticVerdict,
    Event,
    MemoryCompacted,
    ModelCallRequested,
    ModelCallResponded,
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
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
    TurnStarted,
    Usage,
)

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
    "intended",  # a side effect's intent is recorded, its outcome is not: in doubt after a crash
    "awaiting_confirmation",
    "approved",
    "resolved",  # a result for the model is recorded
]


@dataclass(frozen=True, slots=True)
class ToolCallState:
    """One tool call of the current turn and how far it got."""

    call: ToolCall
    status: ToolCallStatus = "requested"
    span_id: str | None = None
    intent: ToolCallIntended | None = None


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
    messages: tuple[Message, ...] = ()
    """The whole conversation, uncompacted; the memory view derives what is sent from it."""
    message_versions: tuple[int, ...] = ()
    """The stream version of the event each message of ``messages`` comes from."""
    compactions: tuple[MemoryCompacted, ...] = ()
    reported_input_tokens: int | None = None
    """Input tokens the provider reported for the last agent call (``None`` after compaction)."""
    reported_for: int = 0
    """How many messages that report covers (the first ``reported_for`` of ``messages``)."""
    requested_messages: int = 0
    calls: dict[str, ToolCallState] = field(default_factory=dict)
    """The current turn's tool calls by call id, in the order the model made them."""
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
    critic_turn: int = 0
    """The turn whose answer the critic judged last, and whether its last verdict accepted."""
    critic_accepted: bool = False
    error: str | None = None

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


def _with(state: RunState, changes: dict[str, Any]) -> RunState:
    # dataclasses.replace re-runs __init__ with all its checks; copying the instance dict is
    # the same copy at a fraction of the cost, and the fold runs it once per event.
    new = object.__new__(RunState)
    object.__setattr__(new, "__dict__", {**state.__dict__, **changes})
    return new


def _resolved(state: RunState, version: int, call_id: str, content: str) -> dict[str, Any]:
    """The changes that record the result (``content``, JSON) of a call of the current turn."""
    current = state.calls.get(call_id)
    if current is None or current.status == "resolved":
        return {}  # a result for a call not of this turn, or a second one: nothing to add
    message = ToolResultMessage(tool_call_id=call_id, tool_name=current.call.name, content=content)
    return {
        "calls": {**state.calls, call_id: replace(current, status="resolved")},
        "messages": (*state.messages, message),
        "message_versions": (*state.message_versions, version),
    }


def _call_changed(state: RunState, call_id: str, **changes: Any) -> dict[str, Any]:
    current = state.calls.get(call_id)
    if current is None:
        return {}
    return {"calls": {**state.calls, call_id: replace(current, **changes)}}


def _changes(state: RunState, event: Event, version: int) -> dict[str, Any]:
    """What ``event`` (at stream ``version``) changes in ``state``, as field values."""
    match event:
        case RunStarted():
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
        case TurnStarted():
            return {"turn": event.turn, "turn_span_id": event.span_id, "calls": {}}
        case ModelCallRequested(purpose="agent"):
            return {"requested_messages": event.message_count}
        case ModelCallRequested(purpose="judge"):
            # The code checks' verdict (written with this request) is not the last word while
            # the judge's is outstanding: a run cut off here is judged again when resumed.
            return {"critic_turn": 0}
        case ModelCallResponded():
            spend = {
                "usage": _add_usage(state.usage, event.usage),
                "cost_usd": state.cost_usd + event.cost_usd,
            }
            if event.purpose != "agent":
                return spend  # a summary or a judgement is not part of the conversation
            assistant = AssistantMessage(content=event.text, tool_calls=event.tool_calls)
            return {
                **spend,
                "messages": (*state.messages, assistant),
                "message_versions": (*state.message_versions, version),
                "calls": {c.id: ToolCallState(call=c) for c in event.tool_calls},
                "last_answer": event.text or state.last_answer,
                "reported_input_tokens": event.usage.input_tokens or None,
                "reported_for": state.requested_messages,
            }
        case BudgetReserved():
            return {"reservations": {**state.reservations, event.reservation_id: event}}
        case BudgetSettled():
            if event.reservation_id not in state.reservations:
                return {}
            rest = {k: v for k, v in state.reservations.items() if k != event.reservation_id}
            return {"reservations": rest, "spent_usd": state.spent_usd + event.actual_usd}
        case BudgetReleased():
            rest = {k: v for k, v in state.reservations.items() if k != event.reservation_id}
            return {"reservations": rest}
        case BudgetExceeded():
            return {"status": "budget_exceeded", "output": state.last_answer or None}
        case MemoryCompacted():
            # What the provider reported no longer describes what will be sent.
            return {"compactions": (*state.compactions, event), "reported_input_tokens": None}
        case CriticVerdict():
            return {"critic_turn": state.turn, "critic_accepted": event.accepted}
        case RevisionRequested():
            text = event.message or "Please revise your answer. Issues:\n" + "\n".join(
                f"- {issue}" for issue in event.issues
            )
            return {
                "revision": event.revision,
                "messages": (*state.messages, UserMessage(content=text)),
                "message_versions": (*state.message_versions, version),
            }
        case ToolArgumentsRejected():
            content = tool_result_error(event.error_type, event.errors)
            return _resolved(state, version, event.call_id, content)
        case ToolCallIntended():
            return _call_changed(
                state, event.call_id, status="intended", span_id=event.span_id, intent=event
            )
        case ToolCallSucceeded() | ToolResultReused():
            return _resolved(state, version, event.call_id, tool_result_ok(event.result))
        case ToolCallDegraded():
            return _resolved(state, version, event.call_id, tool_result_degraded(event.tool_name))
        case ToolOutcomeUnknown():
            content = tool_result_unknown_outcome(event.tool_name, event.message)
            return _resolved(state, version, event.call_id, content)
        case ConfirmationRequested():
            return _call_changed(
                state, event.call_id, status="awaiting_confirmation", span_id=event.span_id
            )
        case ConfirmationApproved():
            return _call_changed(state, event.call_id, status="approved")
        case ConfirmationDenied():
            return _resolved(state, version, event.call_id, tool_result_denied(event.reason))
        case RunPaused():
            return {"status": "paused"}
        case RunResumed():
            return {"status": "running"} if state.status == "paused" else {}
        case RunCompleted():
            return {"status": "completed", "output": event.output, "flagged": event.flagged}
        case RunFailed():
            return {"status": "failed", "error": f"{event.error_type}: {event.message}"}
        case RunCancelled():
            return {"status": "cancelled", "error": event.reason or None}
    return {}


class RunStateProjection:
    """The ``Projection`` of one run's stream into a ``RunState``."""

    def initial(self) -> RunState:
        return RunState()

    def evolve(self, state: RunState, recorded: RecordedEvent) -> RunState:
        changes = _changes(state, recorded.event, recorded.version)
        changes["version"] = recorded.version
        return _with(state, changes)


def fold_run(events: list[RecordedEvent], state: RunState | None = None) -> RunState:
    """Fold a run's recorded events (oldest first) into its state."""
    projection = RunStateProjection()
    current = projection.initial() if state is None else state
    for recorded in events:
        current = projection.evolve(current, recorded)
    return current
