"""The event catalog: every fact the engine records, as frozen pydantic models in one tagged union.

The ``type`` literal of each class is a wire contract: classes may be renamed, tags never. A class
that changes shape in an incompatible way bumps ``schema_version`` and registers an upcaster for
the old shape (see ``_codec``). Adding an optional field, or a new class to ``Event``, needs
neither.

Money is ``Decimal`` US dollars, exact; it travels as a JSON string. Times come from the engine's
clock port, never from the machine.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class _Frozen(BaseModel):
    # JSON has no infinity or NaN (orjson writes them as null), so they are refused at the source.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Usage(_Frozen):
    """Token counts reported by a provider for one model call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


class ToolCall(_Frozen):
    """One tool call asked for by a model: provider call id, tool name and raw JSON arguments."""

    id: str
    name: str
    arguments: str


class FieldIssue(_Frozen):
    """One reason tool arguments were rejected: where (a JSON path) and what is wrong."""

    loc: tuple[str | int, ...] = ()
    message: str
    kind: str = "value_error"


class CheckResult(_Frozen):
    """The outcome of one critic check."""

    name: str
    passed: bool
    issue: str | None = None


class EventBase(_Frozen):
    """Fields every event has: the run it belongs to, its span in the run's trace, and its time.

    ``span_id`` names the unit of work this event belongs to (the run, a turn, a model call, a
    tool call, a tier attempt); ``parent_span_id`` names the enclosing one, so a run's events form
    a tree. ``at`` is the time on the engine's clock port when the fact happened.
    """

    schema_version: ClassVar[int] = 1

    run_id: str
    span_id: str
    parent_span_id: str | None = None
    at: datetime


# -- runs ------------------------------------------------------------------------------------


class RunStarted(EventBase):
    """A run began: who asked, through which surface, with which agent, model and task."""

    type: Literal["run_started"] = "run_started"
    agent: str
    model: str
    task: str
    user_id: str
    surface: str = "default"
    system_prompt: str = ""
    forked_from: str | None = None
    forked_at_version: int | None = None
    settings: dict[str, JsonValue] = Field(default_factory=dict)
    conversation_id: str | None = None
    """The conversation this run belongs to (runs of one conversation share their history)."""
    follows: str | None = None
    """The run of the conversation this one continues."""
    parent_run_id: str | None = None
    """For a sub-agent's run: the run whose tool call started it."""
    parent_call_id: str | None = None
    """For a sub-agent's run: the parent's tool call that started it."""


class TurnStarted(EventBase):
    """The engine began turn ``turn`` (1-based) of a run: one model call and its tool calls."""

    type: Literal["turn_started"] = "turn_started"
    turn: int


class RunCompleted(EventBase):
    """A run produced its answer. ``flagged`` marks an answer the critic never accepted."""

    type: Literal["run_completed"] = "run_completed"
    output: str
    flagged: bool = False
    turns: int = 0
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)


class RunFailed(EventBase):
    """A run stopped on an error it could not recover from."""

    type: Literal["run_failed"] = "run_failed"
    error_type: str
    message: str


class RunCancelled(EventBase):
    """A run was cancelled by its caller; nothing after this event belongs to it.

    ``after_version`` is the version the run had reached when the cancellation struck; the
    events between it and this one close what the run left open (reservations, side effects in
    flight), so a replay knows where to cancel.
    """

    type: Literal["run_cancelled"] = "run_cancelled"
    reason: str = ""
    after_version: int | None = None


class RunPaused(EventBase):
    """A run waits for something outside it, such as a human confirmation of tool calls."""

    type: Literal["run_paused"] = "run_paused"
    reason: str
    call_ids: tuple[str, ...] = ()


class RunResumed(EventBase):
    """A paused or interrupted run was picked up again.

    It starts a new session of the run: a model request or a side effect that was in flight
    when the previous session stopped is settled (interrupted, reconciled, re-run or reported
    unknown) by what follows.
    """

    type: Literal["run_resumed"] = "run_resumed"
    reason: str = ""


# -- model calls -------------------------------------------------------------------------------


ModelPurpose = Literal["agent", "summary", "judge"]


class ModelCallRequested(EventBase):
    """The engine asked a model for a reply. ``request_digest`` fingerprints what was sent."""

    type: Literal["model_call_requested"] = "model_call_requested"
    call_id: str
    model: str
    attempt: int = 1
    purpose: ModelPurpose = "agent"
    max_tokens: int | None = None
    message_count: int = 0
    request_digest: str = ""


class ModelCallResponded(EventBase):
    """A model answered: its text and tool calls, the tokens it used and what they cost."""

    type: Literal["model_call_responded"] = "model_call_responded"
    call_id: str
    model: str
    purpose: ModelPurpose = "agent"
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)
    duration_ms: float = 0.0


class ModelCallFailed(EventBase):
    """One attempt at a model call failed (HTTP status, timeout, connection, malformed reply)."""

    type: Literal["model_call_failed"] = "model_call_failed"
    call_id: str
    model: str
    attempt: int = 1
    error_type: str
    message: str
    status_code: int | None = None
    retry_after_s: float | None = None
    duration_ms: float = 0.0
    retryable: bool | None = None
    """Whether trying the same model again may help (``None`` in logs written before the
    field existed: it follows from ``error_type``)."""


class ModelCallInterrupted(EventBase):
    """A recorded model request got no answer because its process stopped (a crash, a kill).

    Not a failure of the model: it does not count as an attempt, and the request is made again.
    """

    type: Literal["model_call_interrupted"] = "model_call_interrupted"
    call_id: str
    model: str
    attempt: int = 1


class ModelCallRetried(EventBase):
    """The engine will try the same model again after ``delay_s``."""

    type: Literal["model_call_retried"] = "model_call_retried"
    call_id: str
    model: str
    attempt: int
    delay_s: float


class ModelFellBack(EventBase):
    """The engine gave up on one model for this call and moved to the next in the chain."""

    type: Literal["model_fell_back"] = "model_fell_back"
    call_id: str
    from_model: str
    to_model: str
    reason: str


# -- tool calls --------------------------------------------------------------------------------


ToolRejection = Literal[
    "invalid_arguments",
    "invalid_json",
    "unknown_tool",
    "oversized_arguments",
    "idempotency_conflict",
]


class ToolArgumentsRejected(EventBase):
    """A model's tool call was refused before anything ran; the errors go back to the model."""

    type: Literal["tool_arguments_rejected"] = "tool_arguments_rejected"
    call_id: str
    tool_name: str
    error_type: ToolRejection
    errors: tuple[FieldIssue, ...] = ()
    raw_arguments: str = ""


class ToolCallIntended(EventBase):
    """A validated tool call is about to run; for side effects this precedes any execution."""

    type: Literal["tool_call_intended"] = "tool_call_intended"
    call_id: str
    tool_name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    idempotency_key: str | None = None
    key_scope: str | None = None
    expires_at: datetime | None = None
    """For side effects: when every tier of the call will have run out of time. Until then a
    call without outcome may still be running in its process; after it, it is in doubt."""


class ToolCallClaimed(EventBase):
    """A side effect in doubt is taken over by the session that records this: only the writer of
    this claim (appended with the run's expected version) reconciles or re-runs it.

    ``method`` is ``reconcile`` (ask the tool's reconcile hook) or ``rerun`` (a ``retry_safe``
    tool runs again with the same key); ``expires_at`` bounds how long that may take.
    """

    type: Literal["tool_call_claimed"] = "tool_call_claimed"
    call_id: str
    tool_name: str
    idempotency_key: str | None = None
    method: Literal["reconcile", "rerun"]
    expires_at: datetime | None = None


class ToolCallReconciled(EventBase):
    """What a tool's reconcile hook found about a side effect in doubt: it happened (``done``,
    with its ``result``), it did not (``not_done``: it runs now) or it cannot tell."""

    type: Literal["tool_call_reconciled"] = "tool_call_reconciled"
    call_id: str
    tool_name: str
    idempotency_key: str | None = None
    found: Literal["done", "not_done", "unknown"]
    result: JsonValue = None
    message: str = ""


class ToolCallSucceeded(EventBase):
    """A tool call returned a result, from tier ``tier``."""

    type: Literal["tool_call_succeeded"] = "tool_call_succeeded"
    call_id: str
    tool_name: str
    tier: str = "primary"
    result: JsonValue = None
    idempotency_key: str | None = None
    duration_ms: float = 0.0


class ToolTierFailed(EventBase):
    """One tier (implementation) of a tool failed for one call; the next tier may run."""

    type: Literal["tool_tier_failed"] = "tool_tier_failed"
    call_id: str
    tool_name: str
    tier: str
    error_type: str
    message: str
    duration_ms: float = 0.0


class ToolTierSkipped(EventBase):
    """A tier was not tried because its circuit breaker is open until ``until``.

    ``failures_in_a_row`` and ``last_failure_at`` are the tier's health as the breaker saw it
    (folded from every run's events in the store), so the skip explains itself.
    """

    type: Literal["tool_tier_skipped"] = "tool_tier_skipped"
    call_id: str
    tool_name: str
    tier: str
    until: datetime
    failures_in_a_row: int = 0
    last_failure_at: datetime | None = None


class ToolCallDegraded(EventBase):
    """Every tier of a tool failed or was skipped; the model is told not to retry it."""

    type: Literal["tool_call_degraded"] = "tool_call_degraded"
    call_id: str
    tool_name: str
    tiers: tuple[str, ...] = ()
    message: str = ""


class ToolResultReused(EventBase):
    """A side-effecting call matched a recorded outcome by idempotency key and did not run."""

    type: Literal["tool_result_reused"] = "tool_result_reused"
    call_id: str
    tool_name: str
    idempotency_key: str
    result: JsonValue = None
    original_run_id: str | None = None
    original_call_id: str | None = None


class ToolOutcomeUnknown(EventBase):
    """A side effect was intended but its outcome was never recorded (a crash in between)."""

    type: Literal["tool_outcome_unknown"] = "tool_outcome_unknown"
    call_id: str
    tool_name: str
    idempotency_key: str | None = None
    message: str = ""


# -- human confirmation ------------------------------------------------------------------------


class ConfirmationRequested(EventBase):
    """A ``confirm=True`` tool call waits for a human yes or no."""

    type: Literal["confirmation_requested"] = "confirmation_requested"
    call_id: str
    tool_name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    preview: str = ""


class ConfirmationApproved(EventBase):
    """A human approved a pending tool call."""

    type: Literal["confirmation_approved"] = "confirmation_approved"
    call_id: str
    by: str | None = None


class ConfirmationDenied(EventBase):
    """A human denied a pending tool call; the model is told so."""

    type: Literal["confirmation_denied"] = "confirmation_denied"
    call_id: str
    by: str | None = None
    reason: str = ""


# -- budget ------------------------------------------------------------------------------------


class BudgetReserved(EventBase):
    """The worst-case cost of a model call was set aside against the run's and the user's caps."""

    type: Literal["budget_reserved"] = "budget_reserved"
    reservation_id: str
    user_id: str
    day: date
    surface: str = "default"
    model: str
    amount_usd: Decimal


class BudgetSettled(EventBase):
    """A reservation was replaced by the real cost of the call it covered."""

    type: Literal["budget_settled"] = "budget_settled"
    reservation_id: str
    user_id: str
    day: date
    reserved_usd: Decimal
    actual_usd: Decimal


class BudgetReleased(EventBase):
    """A reservation was given back unspent (the call failed or was cancelled)."""

    type: Literal["budget_released"] = "budget_released"
    reservation_id: str
    user_id: str
    day: date
    amount_usd: Decimal
    reason: str = ""


class BudgetExceeded(EventBase):
    """A model call was not made because it could have passed a cap; this ends the run."""

    type: Literal["budget_exceeded"] = "budget_exceeded"
    scope: Literal["run", "user_day"]
    cap_usd: Decimal
    committed_usd: Decimal
    requested_usd: Decimal


# -- memory and critic -------------------------------------------------------------------------


class MemoryCompacted(EventBase):
    """Old tool results were replaced, in the memory view only, by a summary or a truncation.

    ``replaced_versions`` are the stream versions of the events whose results are summarised;
    the log itself is never rewritten.
    """

    type: Literal["memory_compacted"] = "memory_compacted"
    replaced_versions: tuple[int, ...]
    summary: str
    method: Literal["summary", "truncation"] = "summary"
    tokens_before: int = 0
    tokens_after: int = 0
    kept_chars: int = 0
    """For ``truncation``: how many leading characters of each replaced result stay in view."""


class CriticVerdict(EventBase):
    """The critic judged an answer: by code (``deterministic``) or by a model (``llm``); or
    (``output``) the answer was validated against the agent's ``output_type``, before the
    critic's own checks."""

    type: Literal["critic_verdict"] = "critic_verdict"
    agent: str
    accepted: bool
    method: Literal["deterministic", "llm", "output"] = "deterministic"
    checks: tuple[CheckResult, ...] = ()
    revision: int = 0


class RevisionRequested(EventBase):
    """A rejected answer goes back to the model with the issues found, as ``message``."""

    type: Literal["revision_requested"] = "revision_requested"
    revision: int
    issues: tuple[str, ...]
    message: str = ""


# -- conversations -----------------------------------------------------------------------------


class Exchange(_Frozen):
    """One earlier run of a conversation as a later run sees it: its task and its answer."""

    run_id: str
    task: str
    answer: str


class ConversationContinued(EventBase):
    """The history a run of a conversation starts from, read from the run it ``follows``.

    Written right after ``RunStarted`` (in the same append), so the run's own stream holds
    everything its requests are built from: ``exchanges`` are the earlier runs' tasks and answers
    sent verbatim, oldest first; ``summary`` stands for the exchanges before them (truncated,
    bounded by the memory policy); ``summarised_runs`` names the runs whose exchanges this event
    moved into the summary (the ones earlier runs had already moved are named by theirs).
    ``follows_version`` is the version of the followed run's stream that was read.
    """

    type: Literal["conversation_continued"] = "conversation_continued"
    conversation_id: str
    follows: str
    follows_version: int = 0
    summary: str = ""
    exchanges: tuple[Exchange, ...] = ()
    summarised_runs: tuple[str, ...] = ()


class ConversationJoined(EventBase):
    """A run joined a conversation (stream ``conversation-<id>``), continuing ``follows``.

    Appended with the conversation's expected version in the same append as the run's first
    write, so of two runs racing to continue one conversation only one is recorded.
    """

    type: Literal["conversation_joined"] = "conversation_joined"
    conversation_id: str
    follows: str | None = None


Event = Annotated[
    RunStarted
    | TurnStarted
    | RunCompleted
    | RunFailed
    | RunCancelled
    | RunPaused
    | RunResumed
    | ModelCallRequested
    | ModelCallResponded
    | ModelCallFailed
    | ModelCallInterrupted
    | ModelCallRetried
    | ModelFellBack
    | ToolArgumentsRejected
    | ToolCallIntended
    | ToolCallClaimed
    | ToolCallReconciled
    | ToolCallSucceeded
    | ToolTierFailed
    | ToolTierSkipped
    | ToolCallDegraded
    | ToolResultReused
    | ToolOutcomeUnknown
    | ConfirmationRequested
    | ConfirmationApproved
    | ConfirmationDenied
    | BudgetReserved
    | BudgetSettled
    | BudgetReleased
    | BudgetExceeded
    | MemoryCompacted
    | CriticVerdict
    | RevisionRequested
    | ConversationContinued
    | ConversationJoined,
    Field(discriminator="type"),
]
"""Every event the engine records, discriminated by its ``type`` tag."""


def _catalog() -> dict[str, type[EventBase]]:
    union = Event.__origin__  # type: ignore[attr-defined]
    classes: tuple[type[EventBase], ...] = union.__args__
    return {cls.model_fields["type"].default: cls for cls in classes}


EVENT_TYPES: dict[str, type[EventBase]] = _catalog()
"""The catalog by wire tag: ``{"run_started": RunStarted, ...}``."""

TERMINAL_EVENT_TYPES = frozenset(
    {"run_completed", "run_failed", "run_cancelled", "budget_exceeded"}
)
"""Tags after which a run's stream takes no more events."""
