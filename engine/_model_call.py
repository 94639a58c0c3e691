"""One logical model call: budget reservation, attempts with back-off, fallbacks, settlement.

Every attempt is an event. With a capped budget, the call's worst case (an upper bound of the
input tokens plus ``max_tokens``, at the model's price) is reserved against the run's cap and the
user's daily cap *before* the request is sent, in one atomic append to the run's stream and the
user's day ledger (with the ledger's expected version, so concurrent runs of one user, in any
number of processes, cannot together pass the cap). The real cost is settled after the reply;
a failed attempt releases its reservation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio
from pydantic import TypeAdapter

from agentledger.engine.models._model import Model, ModelReply, ModelRequest
from agentledger.engine.models._pricing import max_input_tokens
from agentledger.engine.policies._budget import BudgetPolicy, check_reservation, day_stream
from agentledger.events import (
    BudgetExceeded,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    ConcurrencyError,
    Event,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    ModelCallRetried,
    ModelFellBack,
    ModelPurpose,
    NewEvent,
    RunFailed,
    StreamAppend,
)
from agentledger.projections._messages import Message
from agentledger.projections._spend import LedgerState, fold_ledger

from ._errors import EngineError, ModelError, ModelRateLimitedError, ModelTimeoutError
from ._ports import elapsed_ms

if TYPE_CHECKING:
    from ._run import RunDriver

_MESSAGES = TypeAdapter(list[Message])
_LEDGER_RACE_ATTEMPTS = 200


@dataclass
class CallOutcome:
    """A model call that got a reply: its events, not yet appended, so the caller can add its own
    (a compaction, a verdict) to the same atomic append."""

    reply: ModelReply
    events: list[Event] = field(default_factory=list)
    ledger: list[StreamAppend] = field(default_factory=list)


class LedgerCache:
    """The day ledgers this process has read, so a reservation reads only what is new."""

    def __init__(self) -> None:
        self._states: dict[str, LedgerState] = {}

    async def current(self, driver: RunDriver, stream: str) -> LedgerState:
        """The ledger as it is in the store now."""
        known = self._states.get(stream)
        after = known.version if known is not None else 0
        fresh = await driver.store.read_stream(stream, after=after)
        state = fold_ledger(fresh, known) if fresh or known is None else known
        self._states[stream] = state
        return state

    def forget(self, stream: str) -> None:
        """Drop a ledger whose cached version proved stale."""
        self._states.pop(stream, None)


async def call_model(
    driver: RunDriver,
    *,
    purpose: ModelPurpose,
    request: ModelRequest,
    models: Sequence[Model],
    parent_span: str,
    pending: list[Event],
    fail_run: bool = True,
) -> CallOutcome | None:
    """Make one model call through the chain ``models``.

    ``pending`` are events to append with the first write (e.g. the turn's start). ``None``
    means there is no reply, and everything up to here is recorded: either the budget would be
    passed (the run has ended with ``BudgetExceeded``) or every model failed, which ends the run
    with ``RunFailed`` unless ``fail_run`` is false (a summary or a judgement has a fallback).
    """
    agent = driver.agent
    run_id = driver.state.run_id
    body = _MESSAGES.dump_json(list(request.messages))
    digest = _digest(body, request)
    policy = driver.budget_policy
    error: ModelError | None = None
    call_id = ""
    for index, model in enumerate(models):
        price = agent.price_of(model)
        attempt = 0
        while True:
            attempt += 1
            call_id = driver.ids.new_id()
            started = driver.clock.now()
            pending.append(
                ModelCallRequested(
                    **driver.in_span(call_id, parent_span, started),
                    call_id=call_id,
                    model=model.name,
                    attempt=attempt,
                    purpose=purpose,
                    max_tokens=request.max_tokens,
                    message_count=len(request.messages),
                    request_digest=digest,
                )
            )
            reservation: BudgetReserved | None = None
            if policy is not None:
                worst = price.worst_case(
                    max_input_tokens(len(body), len(request.messages)), request.max_tokens
                )
                reservation = await _reserve(driver, policy, worst, model.name, call_id, pending)
                if reservation is None:
                    return None
                pending = []
            try:
                with anyio.fail_after(agent.model_timeout):
                    reply = await model.complete(request)
            except TimeoutError:
                error = ModelTimeoutError(model.name, f"no reply within {agent.model_timeout}s")
            except ModelError as exc:
                error = exc
            else:
                ended = driver.clock.now()
                cost = price.cost(reply.usage)
                outcome = CallOutcome(reply, pending)
                outcome.events.append(
                    ModelCallResponded(
                        **driver.in_span(call_id, parent_span, ended),
                        call_id=call_id,
                        model=reply.model or model.name,
                        purpose=purpose,
                        text=reply.text,
                        tool_calls=reply.tool_calls,
                        finish_reason=reply.finish_reason,
                        usage=reply.usage,
                        cost_usd=cost,
                        duration_ms=elapsed_ms(started, ended),
                    )
                )
                if reservation is not None:
                    settled = BudgetSettled(
                        **driver.in_span(call_id, parent_span, ended),
                        reservation_id=reservation.reservation_id,
                        user_id=reservation.user_id,
                        day=reservation.day,
                        reserved_usd=reservation.amount_usd,
                        actual_usd=cost,
                    )
                    outcome.events.append(settled)
                    outcome.ledger.append(ledger_append(driver, reservation, settled))
                return outcome
            ended = driver.clock.now()
            retry_after = error.retry_after if isinstance(error, ModelRateLimitedError) else None
            failure: list[Event] = [
                ModelCallFailed(
                    **driver.in_span(call_id, parent_span, ended),
                    call_id=call_id,
                    model=model.name,
                    attempt=attempt,
                    error_type=type(error).__name__,
                    message=str(error),
                    status_code=error.status_code,
                    retry_after_s=retry_after,
                    duration_ms=elapsed_ms(started, ended),
                )
            ]
            ledger: list[StreamAppend] = []
            if reservation is not None:
                released = release(driver, reservation, "the model call failed", parent_span)
                failure.append(released)
                ledger.append(ledger_append(driver, reservation, released))
            pending.extend(failure)
            delay = agent.retry.delay(attempt, retry_after) if error.retryable else None
            if delay is None:
                if ledger:
                    await driver.append(pending, *ledger)
                    pending = []
                break
            pending.append(
                ModelCallRetried(
                    **driver.in_span(call_id, parent_span),
                    call_id=call_id,
                    model=model.name,
                    attempt=attempt + 1,
                    delay_s=delay,
                )
            )
            # Failures are written as they happen, so a watcher sees a slow retry live.
            await driver.append(pending, *ledger)
            pending = []
            await driver.clock.sleep(delay)
        if index + 1 < len(models):
            pending.append(
                ModelFellBack(
                    **driver.in_span(parent_span, run_id),
                    call_id=call_id,
                    from_model=model.name,
                    to_model=models[index + 1].name,
                    reason=type(error).__name__,
                )
            )
    if fail_run:
        pending.append(
            RunFailed(
                **driver.in_span(run_id, None),
                error_type="models_unavailable",
                message=f"every model failed; last error: {error}",
            )
        )
    if pending:
        await driver.append(pending)
    return None


async def _reserve(
    driver: RunDriver,
    policy: BudgetPolicy,
    amount: Decimal,
    model: str,
    call_id: str,
    pending: list[Event],
) -> BudgetReserved | None:
    """Reserve ``amount`` (appending ``pending`` with it), or record ``BudgetExceeded``."""
    state = driver.state
    assert state.started is not None
    user_id = state.started.user_id
    for _ in range(_LEDGER_RACE_ATTEMPTS):
        now = driver.clock.now()
        day = driver.budgets_day(now)
        stream = day_stream(user_id, day)
        ledger = await driver.ledgers.current(driver, stream)
        exceeded = check_reservation(
            amount=amount,
            run_committed=driver.state.committed_usd,
            day_committed=ledger.committed,
            policy=policy,
        )
        if exceeded is not None:
            await driver.append(
                [
                    *pending,
                    BudgetExceeded(
                        **driver.in_span(call_id, None, now),
                        scope=exceeded.scope,
                        cap_usd=exceeded.cap,
                        committed_usd=exceeded.committed,
                        requested_usd=exceeded.requested,
                    ),
                ]
            )
            return None
        reserved = BudgetReserved(
            **driver.in_span(call_id, None, now),
            reservation_id=driver.ids.new_id(),
            user_id=user_id,
            day=day,
            surface=state.started.surface,
            model=model,
            amount_usd=amount,
        )
        try:
            await driver.append(
                [*pending, reserved],
                StreamAppend(
                    stream,
                    [NewEvent(reserved, driver.ids.new_id())],
                    expected_version=ledger.version,
                ),
            )
        except ConcurrencyError as exc:
            if exc.stream_id != stream:
                raise
            driver.ledgers.forget(stream)  # another run reserved first: read again and retry
            continue
        return reserved
    raise EngineError(f"could not reserve budget for user {user_id!r}: the ledger kept moving")


def release(
    driver: RunDriver, reservation: BudgetReserved, reason: str, parent_span: str | None
) -> BudgetReleased:
    """The event that gives ``reservation`` back unspent."""
    return BudgetReleased(
        **driver.in_span(reservation.span_id, parent_span),
        reservation_id=reservation.reservation_id,
        user_id=reservation.user_id,
        day=reservation.day,
        amount_usd=reservation.amount_usd,
        reason=reason,
    )


def ledger_append(
    driver: RunDriver, reservation: BudgetReserved, event: BudgetSettled | BudgetReleased
) -> StreamAppend:
    """The append that records ``event`` in the day ledger its reservation was made in."""
    return StreamAppend(
        day_stream(reservation.user_id, reservation.day), [NewEvent(event, driver.ids.new_id())]
    )


def request_digest(request: ModelRequest) -> str:
    """A fingerprint of what a model is sent, so replay can tell when a request changed."""
    return _digest(_MESSAGES.dump_json(list(request.messages)), request)


def _digest(body: bytes, request: ModelRequest) -> str:
    tools = ",".join(sorted(t.name for t in request.tools)).encode()
    limit = str(request.max_tokens).encode()
    return hashlib.sha256(body + b"\0" + tools + b"\0" + limit).hexdigest()[:32]
