"""Performing model-call steps: request (with its budget reservation), send, retry, fall back.

With a capped budget, a request's worst case (an upper bound of its input tokens plus
``max_tokens``, at the model's price) is reserved against the run's cap and the user's daily cap
*before* it is sent, in one atomic append to the run's stream and the user's day ledger, with
the ledger's expected version, so concurrent runs of one user, in any number of processes,
cannot together pass the cap. The real cost is settled from the answer; an error or an
interrupted request gives the reservation back.

A server may ignore the output limit, so an answer can cost more than its reservation. That
overshoot is recorded (``BudgetOvershot``) in the same append as the settlement, in both
streams, and closes the run and the user's day: every later reservation is refused
(``check_reservation``'s ``run_closed_by`` and ``day_closed_by``), so one broken promise does
not become many.
"""

from __future__ import annotations

from decimal import Decimal

from agentledger.engine._errors import EngineError
from agentledger.engine.models._pricing import max_input_tokens
from agentledger.engine.policies._budget import BudgetPolicy, check_reservation
from agentledger.events import (
    BudgetExceeded,
    BudgetOvershot,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    ConcurrencyError,
    Event,
    ModelCallInterrupted,
    ModelCallRequested,
    ModelCallResponded,
    ModelCallRetried,
    ModelFellBack,
    NewEvent,
    StreamAppend,
)
from agentledger.projections._streams import day_stream

from ._commands import AbandonRequest, FallBack, RequestModel, Retry, SendRequest
from ._ports import IdSource, SpanFields
from ._requests import build_request, request_body, request_digest
from ._step import Step, Writer

_LEDGER_RACE_ATTEMPTS = 200


async def request_model(command: RequestModel, step: Step, writer: Writer) -> None:
    """Record the request (after its back-off) and send it; when capped, record it with the
    reservation of its worst case instead, and leave the sending to the next step."""
    clock = step.ports.clock
    if command.not_before is not None:
        wait = (command.not_before - clock.now()).total_seconds()
        if wait > 0:
            await clock.sleep(wait)
    request = build_request(step.state, step.agent, command.purpose)
    body = request_body(request)
    call_id = step.ports.ids.new_id()
    requested = ModelCallRequested(
        **step.span(call_id, step.turn_span),
        call_id=call_id,
        model=command.model.name,
        attempt=command.attempt,
        purpose=command.purpose,
        max_tokens=request.max_tokens,
        message_count=len(request.messages),
        request_digest=request_digest(request, body),
    )
    policy = step.budget_policy
    if policy is None:
        writer.stage([requested])
        answer = await step.ports.models.attempt(requested, request)
        writer.stage([answer])
        return
    price = step.agent.price_of(command.model)
    worst = price.worst_case(max_input_tokens(len(body), len(request.messages)), request.max_tokens)
    await _reserve(step, writer, policy, worst, requested)


async def _reserve(
    step: Step,
    writer: Writer,
    policy: BudgetPolicy,
    amount: Decimal,
    requested: ModelCallRequested,
) -> None:
    """Write ``requested`` with its reservation, or with ``BudgetExceeded`` when a cap forbids."""
    ports, state = step.ports, step.state
    assert state.started is not None
    user_id = state.started.user_id
    for _ in range(_LEDGER_RACE_ATTEMPTS):
        now = ports.clock.now()
        stream = day_stream(user_id, step.budget_day(now))
        ledger = await ports.ledgers.day_ledger(stream)
        span = step.span(requested.call_id, requested.parent_span_id, now)
        exceeded = check_reservation(
            amount=amount,
            run_committed=state.committed_usd,
            day_committed=ledger.committed,
            policy=policy,
            run_closed_by=state.budget_closed_by,
            day_closed_by=ledger.closed_by,
        )
        if exceeded is not None:
            writer.stage(
                [
                    requested,
                    BudgetExceeded(
                        **span,
                        scope=exceeded.scope,
                        cap_usd=exceeded.cap,
                        committed_usd=exceeded.committed,
                        requested_usd=exceeded.requested,
                        closed_by=exceeded.closed_by,
                    ),
                ]
            )
            return
        reserved = BudgetReserved(
            **span,
            reservation_id=ports.ids.new_id(),
            user_id=user_id,
            day=step.budget_day(now),
            surface=state.started.surface,
            model=requested.model,
            amount_usd=amount,
        )
        entry = StreamAppend(
            stream, [NewEvent(reserved, ports.ids.new_id())], expected_version=ledger.version
        )
        try:
            await writer.commit([requested, reserved], entry)
        except ConcurrencyError as exc:
            if exc.stream_id != stream:
                raise
            ports.ledgers.forget(stream)  # another run reserved first: read again and retry
            continue
        return
    raise EngineError(f"could not reserve budget for user {user_id!r}: the ledger kept moving")


async def send_request(command: SendRequest, step: Step, writer: Writer) -> None:
    """Send a request recorded with its reservation."""
    requested = command.requested
    request = build_request(step.state, step.agent, requested.purpose)
    answer = await step.ports.models.attempt(requested, request)
    call = step.state.model_call
    reservation = call.reservation if call is not None else None
    if reservation is None:  # recorded before its surface had caps: nothing to settle
        writer.stage([answer])
        return
    span = step.span(requested.call_id, requested.parent_span_id, answer.at)
    if not isinstance(answer, ModelCallResponded):
        released = release(reservation, "the model call failed", span)
        writer.stage([answer, released], ledger_entry(step.ports.ids, reservation, released))
        return
    closing: list[BudgetSettled | BudgetOvershot] = [
        BudgetSettled(
            **span,
            reservation_id=reservation.reservation_id,
            user_id=reservation.user_id,
            day=reservation.day,
            reserved_usd=reservation.amount_usd,
            actual_usd=answer.cost_usd,
        )
    ]
    if answer.cost_usd > reservation.amount_usd:
        closing.append(overshoot(reservation, answer.cost_usd, span))
    writer.stage([answer, *closing], ledger_entry(step.ports.ids, reservation, *closing))


def abandon_request(command: AbandonRequest, step: Step, writer: Writer) -> None:
    """Close a request whose session stopped before its answer; it will be made again."""
    requested = command.requested
    events: list[Event] = [
        ModelCallInterrupted(
            **step.span(requested.call_id, requested.parent_span_id),
            call_id=requested.call_id,
            model=requested.model,
            attempt=requested.attempt,
        )
    ]
    others: list[StreamAppend] = []
    call = step.state.model_call
    if call is not None and call.reservation is not None:
        released = release(
            call.reservation,
            "the request was interrupted",
            step.span(call.reservation.span_id, call.reservation.parent_span_id),
        )
        events.append(released)
        others.append(ledger_entry(step.ports.ids, call.reservation, released))
    writer.stage(events, *others)


def retry(command: Retry, step: Step, writer: Writer) -> None:
    """Schedule the next attempt on the same model."""
    failure = command.failure
    writer.stage(
        [
            ModelCallRetried(
                **step.span(failure.call_id, failure.parent_span_id),
                call_id=failure.call_id,
                model=failure.model,
                attempt=command.attempt,
                delay_s=command.delay,
            )
        ]
    )


def fall_back(command: FallBack, step: Step, writer: Writer) -> None:
    """Move the call on to the next model of its chain."""
    failure = command.failure
    writer.stage(
        [
            ModelFellBack(
                **step.span(step.turn_span, step.run_id if step.state.turn_span_id else None),
                call_id=failure.call_id,
                from_model=failure.model,
                to_model=command.to.name,
                reason=failure.error_type,
            )
        ]
    )


def release(reservation: BudgetReserved, reason: str, span: SpanFields) -> BudgetReleased:
    """The event that gives ``reservation`` back unspent (in its own span)."""
    return BudgetReleased(
        **span,
        reservation_id=reservation.reservation_id,
        user_id=reservation.user_id,
        day=reservation.day,
        amount_usd=reservation.amount_usd,
        reason=reason,
    )


def overshoot(reservation: BudgetReserved, actual: Decimal, span: SpanFields) -> BudgetOvershot:
    """The event that records a call costing ``actual``, more than ``reservation`` set aside."""
    return BudgetOvershot(
        **span,
        reservation_id=reservation.reservation_id,
        user_id=reservation.user_id,
        day=reservation.day,
        surface=reservation.surface,
        model=reservation.model,
        reserved_usd=reservation.amount_usd,
        actual_usd=actual,
        over_usd=actual - reservation.amount_usd,
    )


def ledger_entry(
    ids: IdSource,
    reservation: BudgetReserved,
    *events: BudgetSettled | BudgetReleased | BudgetOvershot,
) -> StreamAppend:
    """The append that records ``events`` in the day ledger its reservation was made in."""
    return StreamAppend(
        day_stream(reservation.user_id, reservation.day),
        [NewEvent(event, ids.new_id()) for event in events],
    )
