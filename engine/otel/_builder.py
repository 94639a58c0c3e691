"""The pure part: a run's events -> OpenTelemetry GenAI spans, with their recorded times.

``SpanBuilder`` is a fold. Each event may close spans, and ``add`` returns exactly those, so the
live sink (one event at a time, as they commit) and the export of a recorded run (all events at
once) run the same code and emit the same spans. The span tree is the one the events carry,
with turns folded away (the GenAI conventions know no turn; each span says its turn instead):

    invoke_agent {agent}                 the run: RunStarted .. its terminal event
      chat {model}                       one per model request (each attempt is one)
      execute_tool {tool}                one per tool call: first event .. its outcome
        tool_tier {tool}.{tier}          a tier that failed, with its measured duration

A model attempt ends at its answer and starts ``duration_ms`` before it (the time the model
port measured around the call), so a reservation's write does not count as the model's time.
Events that open or close nothing (a retry's back-off, a fallback, a skipped tier, a critic
verdict, a pause) become span events of the span they belong to while it is open, else of the
run's span. Of the budget's bookkeeping only a request's reservation is kept (an attribute of its
chat span); what the call cost is on the chat span already. Every span carries the run id as
``gen_ai.conversation.id``, or the id of its conversation when it continues one (and its run
span links the run it follows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import agentledger.engine.otel._names as n
from agentledger.events import (
    TERMINAL_EVENT_TYPES,
    BudgetExceeded,
    BudgetReserved,
    ConfirmationDenied,
    ConfirmationRequested,
    Event,
    ModelCallFailed,
    ModelCallInterrupted,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    ToolArgumentsRejected,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
    ToolTierFailed,
    TurnStarted,
)

from ._providers import ProviderOf, default_provider
from ._records import (
    AttributeValue,
    SpanEventRecord,
    SpanKindName,
    SpanRecord,
    StatusName,
    run_trace_id,
    span_id_of,
)

_IGNORED = frozenset({"budget_settled", "budget_released"})
"""Ledger bookkeeping: the money is on the chat span already."""

_TOOL_OPENERS = frozenset({"tool_call_intended", "confirmation_requested"})
_TOOL_CLOSERS = frozenset(
    {
        "tool_call_succeeded",
        "tool_result_reused",
        "tool_call_degraded",
        "tool_outcome_unknown",
        "confirmation_denied",
    }
)
_MODEL_CLOSERS = frozenset({"model_call_responded", "model_call_failed", "model_call_interrupted"})

# Fields worth carrying as a span event's attributes, by event type.
_EVENT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "turn_started": ("turn",),
    "run_paused": ("reason", "call_ids"),
    "run_resumed": ("reason",),
    "model_call_retried": ("model", "attempt", "delay_s"),
    "model_fell_back": ("from_model", "to_model", "reason"),
    "tool_tier_skipped": ("tier", "until", "failures_in_a_row"),
    "tool_call_claimed": ("method", "idempotency_key"),
    "tool_call_reconciled": ("found", "message"),
    "confirmation_approved": ("by",),
    "memory_compacted": ("method", "tokens_before", "tokens_after"),
    "critic_verdict": ("accepted", "method", "revision"),
    "revision_requested": ("revision", "issues"),
}


@dataclass
class _Open:
    """A span whose closing event has not been seen yet."""

    name: str
    kind: SpanKindName
    source: str
    parent: str | None
    start: datetime
    attributes: dict[str, AttributeValue]
    events: list[SpanEventRecord] = field(default_factory=list)
    links: tuple[tuple[int, int], ...] = ()


class SpanBuilder:
    """Folds the events of one run, in log order, into spans; ``add`` returns the spans that
    each event closes. ``provider_of`` names a model's provider (default: the ``genai-prices``
    table)."""

    def __init__(self, *, provider_of: ProviderOf = default_provider) -> None:
        self._provider_of = provider_of
        self._run_id: str | None = None
        self._conversation_id: str | None = None
        self._open: dict[str, _Open] = {}
        self._turns: dict[str, int] = {}
        self._usage = [0, 0, 0]
        self._cost = 0.0
        self._last_at: datetime | None = None
        self.ended = False
        """The run's terminal event was folded: nothing more will come."""

    def add(self, event: Event | RecordedEvent) -> list[SpanRecord]:
        """Fold one event; returns the spans it closed (children before their parents)."""
        if isinstance(event, RecordedEvent):
            event = event.event
        if self._run_id is None:
            self._run_id = event.run_id
        elif event.run_id != self._run_id:
            raise ValueError(
                f"event of run {event.run_id!r} given to the builder of {self._run_id!r}"
            )
        if self.ended:
            return []
        self._last_at = event.at
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            return handler(self, event)
        if event.type not in _IGNORED:
            self._note(event)
        return []

    def open_spans(self) -> list[SpanRecord]:
        """The spans still open, ended at the last event seen and marked ``agentledger.span.open``
        (for a run still going, paused or cut off by a crash). The builder is not changed."""
        if self._last_at is None:
            return []
        at = self._last_at
        return [
            self._record(span, at, extra={n.SPAN_OPEN: True})
            for span in sorted(self._open.values(), key=lambda s: s.source == self._run_id)
        ]

    # -- opening and closing ---------------------------------------------------------------

    def _open_span(
        self,
        event: Event,
        name: str,
        kind: SpanKindName,
        attributes: dict[str, AttributeValue],
        *,
        start: datetime | None = None,
    ) -> _Open:
        parent = None if event.span_id == event.run_id else event.run_id
        if isinstance(event, ToolTierFailed):
            parent = event.parent_span_id
        attributes[n.GEN_AI_CONVERSATION_ID] = self._conversation_id or event.run_id
        span = _Open(name, kind, event.span_id, parent, start or event.at, attributes)
        turn = self._turns.get(event.parent_span_id or "")
        if turn is not None:
            span.attributes[n.TURN] = turn
        self._open[event.span_id] = span
        return span

    def _close(
        self,
        source: str,
        end: datetime,
        *,
        attributes: Mapping[str, AttributeValue] | None = None,
        error: tuple[str, str] | None = None,
        start: datetime | None = None,
    ) -> list[SpanRecord]:
        span = self._open.pop(source, None)
        if span is None:  # opened in a session this builder did not see
            return []
        if start is not None:
            span.start = max(span.start, start)
        status: StatusName = "unset"
        message = None
        extra = dict(attributes or {})
        if error is not None:
            extra[n.ERROR_TYPE], message = error
            status = "error"
        return [self._record(span, end, extra=extra, status=status, message=message)]

    def _record(
        self,
        span: _Open,
        end: datetime,
        *,
        extra: Mapping[str, AttributeValue],
        status: StatusName = "unset",
        message: str | None = None,
    ) -> SpanRecord:
        run_id = self._run_id
        assert run_id is not None
        return SpanRecord(
            name=span.name,
            kind=span.kind,
            trace_id=run_trace_id(run_id),
            span_id=span_id_of(run_id, span.source),
            parent_span_id=None if span.parent is None else span_id_of(run_id, span.parent),
            start=span.start,
            end=max(end, span.start),
            attributes={**span.attributes, **extra},
            status=status,
            status_message=message,
            events=tuple(span.events),
            links=span.links,
            source=span.source,
        )

    def _note(self, event: Event) -> None:
        """``event`` as a span event of its span if open, else of the run's span."""
        span = self._open.get(event.span_id) or self._open.get(event.run_id)
        if span is None:
            return
        values = event.model_dump()
        attributes = {
            f"agentledger.{key}": value
            for key in _EVENT_FIELDS.get(event.type, ())
            if (value := _attribute(values.get(key))) is not None
        }
        span.events.append(SpanEventRecord(event.type, event.at, attributes))

    def _provider(self, attributes: dict[str, AttributeValue], model: str) -> None:
        provider = self._provider_of(model)
        if provider is not None:
            attributes[n.GEN_AI_PROVIDER_NAME] = provider

    # -- the run -----------------------------------------------------------------------------

    def _started(self, event: RunStarted) -> list[SpanRecord]:
        attributes: dict[str, AttributeValue] = {
            n.GEN_AI_OPERATION_NAME: n.OP_INVOKE_AGENT,
            n.GEN_AI_AGENT_NAME: event.agent,
            n.GEN_AI_REQUEST_MODEL: event.model,
            n.RUN_ID: event.run_id,
            n.RUN_USER_ID: event.user_id,
            n.RUN_SURFACE: event.surface,
        }
        self._provider(attributes, event.model)
        self._conversation_id = event.conversation_id
        span = self._open_span(event, f"invoke_agent {event.agent}", "internal", attributes)
        if event.forked_from is not None:
            attributes[n.RUN_FORKED_FROM] = event.forked_from
            if event.forked_at_version is not None:
                attributes[n.RUN_FORKED_AT_VERSION] = event.forked_at_version
            origin = event.forked_from
            span.links = ((run_trace_id(origin), span_id_of(origin, origin)),)
        if event.follows is not None:
            # The run of the conversation this one continues: a trace of its own, linked.
            attributes[n.RUN_FOLLOWS] = event.follows
            span.links = (
                *span.links,
                (run_trace_id(event.follows), span_id_of(event.follows, event.follows)),
            )
        return []

    def _turn(self, event: TurnStarted) -> list[SpanRecord]:
        self._turns[event.span_id] = event.turn
        self._note(event)
        return []

    def _ended(self, event: Event) -> list[SpanRecord]:
        """A terminal event: what is still open ends with the run, for the run's reason."""
        status, error = _run_end(event)
        closed: list[SpanRecord] = []
        if isinstance(event, BudgetExceeded):  # it closes the request it refused first
            closed += self._close(event.span_id, event.at, error=error)
        for source in [s for s in self._open if s != event.run_id]:
            closed += self._close(
                source, event.at, error=error or (status, f"the run ended: {status}")
            )
        attributes: dict[str, AttributeValue] = {
            n.RUN_STATUS: status,
            n.GEN_AI_USAGE_INPUT_TOKENS: self._usage[0],
            n.GEN_AI_USAGE_OUTPUT_TOKENS: self._usage[1],
            n.COST_USD: self._cost,
            n.RUN_TURNS: max(self._turns.values(), default=0),
        }
        if self._usage[2]:
            attributes[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = self._usage[2]
        if isinstance(event, RunCompleted):
            attributes[n.RUN_FLAGGED] = event.flagged
        closed += self._close(event.run_id, event.at, attributes=attributes, error=error)
        self.ended = True
        self._open.clear()
        return closed

    # -- model calls -------------------------------------------------------------------------

    def _requested(self, event: ModelCallRequested) -> list[SpanRecord]:
        attributes: dict[str, AttributeValue] = {
            n.GEN_AI_OPERATION_NAME: n.OP_CHAT,
            n.GEN_AI_REQUEST_MODEL: event.model,
            n.MODEL_ATTEMPT: event.attempt,
            n.MODEL_PURPOSE: event.purpose,
        }
        if event.max_tokens is not None:
            attributes[n.GEN_AI_REQUEST_MAX_TOKENS] = event.max_tokens
        self._provider(attributes, event.model)
        self._open_span(event, f"chat {event.model}", "client", attributes)
        return []

    def _reserved(self, event: BudgetReserved) -> list[SpanRecord]:
        span = self._open.get(event.span_id)
        if span is not None:
            span.attributes[n.BUDGET_RESERVED_USD] = float(event.amount_usd)
        return []

    def _responded(self, event: ModelCallResponded) -> list[SpanRecord]:
        usage = event.usage
        self._usage[0] += usage.input_tokens
        self._usage[1] += usage.output_tokens
        self._usage[2] += usage.cached_input_tokens
        self._cost += float(event.cost_usd)
        attributes: dict[str, AttributeValue] = {
            n.GEN_AI_RESPONSE_MODEL: event.model,
            n.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
            n.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
            n.COST_USD: float(event.cost_usd),
        }
        if usage.cached_input_tokens:
            attributes[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
        if event.finish_reason is not None:
            attributes[n.GEN_AI_RESPONSE_FINISH_REASONS] = (event.finish_reason,)
        return self._close(
            event.span_id,
            event.at,
            attributes=attributes,
            start=_began(event.at, event.duration_ms),
        )

    def _failed(self, event: ModelCallFailed) -> list[SpanRecord]:
        attributes: dict[str, AttributeValue] = {}
        if event.status_code is not None:
            attributes[n.HTTP_RESPONSE_STATUS_CODE] = event.status_code
        if event.retryable is not None:
            attributes[n.MODEL_RETRYABLE] = event.retryable
        return self._close(
            event.span_id,
            event.at,
            attributes=attributes,
            error=(event.error_type, event.message),
            start=_began(event.at, event.duration_ms),
        )

    def _interrupted(self, event: ModelCallInterrupted) -> list[SpanRecord]:
        return self._close(
            event.span_id, event.at, error=("interrupted", "the session stopped before the reply")
        )

    # -- tool calls --------------------------------------------------------------------------

    def _tool_opened(self, event: Event) -> list[SpanRecord]:
        tool = getattr(event, "tool_name", "")
        if event.span_id not in self._open:
            attributes: dict[str, AttributeValue] = {
                n.GEN_AI_OPERATION_NAME: n.OP_EXECUTE_TOOL,
                n.GEN_AI_TOOL_NAME: tool,
                n.GEN_AI_TOOL_CALL_ID: getattr(event, "call_id", ""),
                n.GEN_AI_TOOL_TYPE: "function",
            }
            self._open_span(event, f"execute_tool {tool}", "internal", attributes)
        if isinstance(event, ToolCallIntended) and event.idempotency_key is not None:
            self._open[event.span_id].attributes[n.TOOL_IDEMPOTENCY_KEY] = event.idempotency_key
        if isinstance(event, ConfirmationRequested):
            self._note(event)
        return []

    def _rejected(self, event: ToolArgumentsRejected) -> list[SpanRecord]:
        self._tool_opened(event)
        return self._close(
            event.span_id,
            event.at,
            attributes={n.TOOL_OUTCOME: "rejected"},
            error=(
                event.error_type,
                "; ".join(i.message for i in event.errors) or event.error_type,
            ),
        )

    def _tier_failed(self, event: ToolTierFailed) -> list[SpanRecord]:
        attributes: dict[str, AttributeValue] = {
            n.GEN_AI_TOOL_NAME: event.tool_name,
            n.GEN_AI_TOOL_CALL_ID: event.call_id,
            n.TOOL_TIER: event.tier,
        }
        name = f"tool_tier {event.tool_name}.{event.tier}"
        self._open_span(
            event, name, "internal", attributes, start=_began(event.at, event.duration_ms)
        )
        return self._close(event.span_id, event.at, error=(event.error_type, event.message))

    def _tool_closed(self, event: Event) -> list[SpanRecord]:
        outcome, error = _tool_outcome(event)
        attributes: dict[str, AttributeValue] = {n.TOOL_OUTCOME: outcome}
        if isinstance(event, ToolCallSucceeded):
            attributes[n.TOOL_TIER] = event.tier
        return self._close(event.span_id, event.at, attributes=attributes, error=error)


def _began(end: datetime, duration_ms: float) -> datetime | None:
    """When a measured piece of work began, or ``None`` when nothing was measured."""
    return end - timedelta(milliseconds=duration_ms) if duration_ms > 0 else None


def _issues(event: ToolArgumentsRejected) -> str:
    return "; ".join(issue.message for issue in event.errors) or event.error_type


def _run_end(event: Event) -> tuple[str, tuple[str, str] | None]:
    """The run's status and error (``error.type``, message) as its terminal event says."""
    if isinstance(event, RunCompleted):
        return "completed", None
    if isinstance(event, RunFailed):
        return "failed", (event.error_type, event.message)
    if isinstance(event, RunCancelled):
        return "cancelled", None
    assert isinstance(event, BudgetExceeded)
    message = f"the {event.scope} cap of ${event.cap_usd} would have been passed"
    return "budget_exceeded", ("budget_exceeded", message)


def _tool_outcome(event: Event) -> tuple[str, tuple[str, str] | None]:
    if isinstance(event, ToolCallSucceeded):
        return "ok", None
    if isinstance(event, ToolResultReused):
        return "reused", None
    if isinstance(event, ConfirmationDenied):
        return "denied", None
    if isinstance(event, ToolCallDegraded):
        return "degraded", ("degraded", event.message or "every tier failed or was skipped")
    assert isinstance(event, ToolOutcomeUnknown)
    return "unknown", ("outcome_unknown", event.message or "the outcome was never recorded")


def _attribute(value: Any) -> AttributeValue | None:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return tuple(str(v) for v in value)
    return str(value)


_Handler = Callable[[SpanBuilder, Any], list[SpanRecord]]
_HANDLERS: dict[str, _Handler] = {
    "run_started": SpanBuilder._started,
    "turn_started": SpanBuilder._turn,
    "model_call_requested": SpanBuilder._requested,
    "budget_reserved": SpanBuilder._reserved,
    "model_call_responded": SpanBuilder._responded,
    "model_call_failed": SpanBuilder._failed,
    "model_call_interrupted": SpanBuilder._interrupted,
    "tool_arguments_rejected": SpanBuilder._rejected,
    "tool_tier_failed": SpanBuilder._tier_failed,
    **{tag: SpanBuilder._tool_opened for tag in _TOOL_OPENERS},
    **{tag: SpanBuilder._tool_closed for tag in _TOOL_CLOSERS},
    **{tag: SpanBuilder._ended for tag in TERMINAL_EVENT_TYPES},
}


def build_spans(
    events: Iterable[Event | RecordedEvent],
    *,
    include_open: bool = False,
    provider_of: ProviderOf = default_provider,
) -> list[SpanRecord]:
    """The spans of one run's events (in log order), in the order they closed.

    Spans whose closing event is not in ``events`` (a run still going, paused, or cut off) are
    left out, unless ``include_open``: then they end at the last event and carry
    ``agentledger.span.open = true``.
    """
    builder = SpanBuilder(provider_of=provider_of)
    spans = [span for event in events for span in builder.add(event)]
    if include_open and not builder.ended:
        spans += builder.open_spans()
    return spans
