"""The live ports: real models, real tools, the store's tool health, budget and key ledgers.

The only place a model's or a tool's exception is caught: each becomes the event that records
it (a failed attempt, a failed tier, a hook that could not tell), so nothing a replay raises
through its own ports can ever be mistaken for one.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

import anyio

from agentledger.engine._errors import (
    ModelError,
    ModelRateLimitedError,
    ModelResponseError,
    ModelTimeoutError,
)
from agentledger.engine.models._http import HttpModel, engine_attempt
from agentledger.engine.models._model import DeltaSink, Model, ModelReply, ModelRequest
from agentledger.engine.models._pricing import Price
from agentledger.engine.policies._sizes import SizePolicy
from agentledger.engine.tools._isolation import IsolatedToolError
from agentledger.engine.tools._tools import Tool, ToolContext
from agentledger.events import (
    EventStore,
    EventStoreError,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    ToolCallIntended,
    ToolCallReconciled,
    ToolCallSucceeded,
    ToolTierFailed,
    ToolTierSkipped,
)
from agentledger.projections._keys import KeyRecord, fold_key
from agentledger.projections._spend import LedgerState, fold_ledger
from agentledger.projections._stream_folds import StreamFolds
from agentledger.projections._streams import key_stream
from agentledger.projections._tool_health import ToolHealthView, circuit_open_until

from ._deltas import DeltaRoute
from ._ports import Clock, elapsed_ms
from ._replies import checked_reply
from ._tool_tasks import ToolTasks

_MAX_ERROR_TEXT = 2000


class LiveModels:
    """Sends requests to the agent's models (by name), each attempt within ``timeout`` seconds
    (``Agent.model_timeout``, the one bound of an attempt; see ``engine_attempt``), checks the
    replies (``checked_reply``) and prices them with ``price_of``.

    Whatever a model's ``complete`` raises, except cancellation, is a failed attempt: a
    ``ModelError`` as it is, anything else (a client's bug, a value nothing can price or record)
    as a ``ModelResponseError`` naming it. No reply makes a run raise.

    ``deltas`` says, per requested call, whether to stream it and where its pieces go: a call
    with a sink is sent with the model's ``stream`` when it has one (a ``StreamingModel``), so
    its output is also cut at ``max_tokens`` by the client; the reply is recorded the same way.
    """

    def __init__(
        self,
        models: Mapping[str, Model],
        clock: Clock,
        timeout: float,
        price_of: Callable[[Model], Price],
        sizes: SizePolicy,
        deltas: DeltaRoute | None = None,
    ) -> None:
        self._models = models
        self._clock = clock
        self._timeout = timeout
        self._price_of = price_of
        self._sizes = sizes
        self._deltas = deltas

    async def attempt(
        self, requested: ModelCallRequested, request: Any
    ) -> ModelCallResponded | ModelCallFailed:
        assert isinstance(request, ModelRequest)
        model = self._models[requested.model]
        started = self._clock.now()
        error: ModelError
        try:
            sink = self._deltas(requested) if self._deltas is not None else None
            # The engine's timeout is the one that bounds an attempt: within engine_attempt()
            # an HTTP client's own timeout bounds only connecting.
            with anyio.fail_after(self._timeout), engine_attempt():
                reply = await _send(model, request, sink)
            reply = checked_reply(reply, model.name, self._sizes)
            cost = self._price_of(model).cost(reply.usage)
        except TimeoutError:
            url = model.url if isinstance(model, HttpModel) else None
            error = ModelTimeoutError(
                model.name, f"no reply within {self._timeout:g}s (Agent.model_timeout)", url=url
            )
        except ModelError as exc:
            error = exc
        except Exception as exc:  # a client's bug, or a value nothing can price: see above
            error = ModelResponseError(model.name, f"unusable reply: {type(exc).__name__}: {exc}")
        else:
            ended = self._clock.now()
            return ModelCallResponded(
                **_envelope(requested, ended),
                call_id=requested.call_id,
                model=reply.model or model.name,
                purpose=requested.purpose,
                text=reply.text,
                tool_calls=reply.tool_calls,
                finish_reason=reply.finish_reason,
                usage=reply.usage,
                cost_usd=cost,
                duration_ms=elapsed_ms(started, ended),
            )
        ended = self._clock.now()
        return ModelCallFailed(
            **_envelope(requested, ended),
            call_id=requested.call_id,
            model=model.name,
            attempt=requested.attempt,
            error_type=type(error).__name__,
            message=str(error),
            status_code=error.status_code,
            retry_after_s=error.retry_after if isinstance(error, ModelRateLimitedError) else None,
            duration_ms=elapsed_ms(started, ended),
            retryable=error.retryable,
        )


async def _send(model: Model, request: ModelRequest, sink: DeltaSink | None) -> ModelReply:
    """The model's reply, streamed to ``sink`` when there is one and the model can stream."""
    stream = getattr(model, "stream", None) if sink is not None else None
    if sink is None or not callable(stream):
        return await model.complete(request)
    reply = await stream(request, sink)
    if not isinstance(reply, ModelReply):
        raise TypeError(f"stream() returned {type(reply).__name__}, not a ModelReply")
    return reply


class LiveTools:
    """Runs the agent's tools (by name), each tier within its tool's or the default timeout.

    Each call runs in a task of ``tasks`` (``ToolTasks``), so the timeout holds even for a tool
    that ignores or shields cancellation: the tier is recorded as failed at its deadline, and
    never as a success after it. A result over the size policy's ``max_tool_result`` is cut
    here, before an event is built around it.
    """

    def __init__(
        self,
        tools: Mapping[str, Tool[Any]],
        clock: Clock,
        timeout: float,
        sizes: SizePolicy | None = None,
        tasks: ToolTasks | None = None,
    ) -> None:
        self._tools = tools
        self._clock = clock
        self._timeout = timeout
        self._sizes = sizes if sizes is not None else SizePolicy()
        self._tasks = tasks if tasks is not None else ToolTasks()

    async def run_tier(
        self, intended: ToolCallIntended, tier: str, args: Any, user_id: str, tier_span: str
    ) -> ToolCallSucceeded | ToolTierFailed:
        tool = self._tools[intended.tool_name]
        started = self._clock.now()
        context = _context(intended, tier, user_id)
        try:
            result = await self._tasks.call(
                lambda: tool.invoke(tier, args, context),
                seconds=tool.timeout or self._timeout,
                label=_label(intended, tier),
            )
            result = self._sizes.cut_result(result)
        except Exception as exc:  # any failure of a tier is recorded; cancellation is not one
            ended = self._clock.now()
            return ToolTierFailed(
                run_id=intended.run_id,
                span_id=tier_span,
                parent_span_id=intended.span_id,
                at=ended,
                call_id=intended.call_id,
                tool_name=tool.name,
                tier=tier,
                error_type=exc.error_type
                if isinstance(exc, IsolatedToolError)
                else type(exc).__name__,
                message=str(exc)[:_MAX_ERROR_TEXT] or type(exc).__name__,
                duration_ms=elapsed_ms(started, ended),
            )
        ended = self._clock.now()
        return ToolCallSucceeded(
            **_envelope(intended, ended),
            call_id=intended.call_id,
            tool_name=tool.name,
            tier=tier,
            result=result,
            idempotency_key=intended.idempotency_key,
            duration_ms=elapsed_ms(started, ended),
        )

    async def reconcile(
        self, intended: ToolCallIntended, args: Any, user_id: str
    ) -> ToolCallReconciled:
        tool = self._tools[intended.tool_name]
        fields = {
            **_envelope(intended, self._clock.now()),
            "call_id": intended.call_id,
            "tool_name": tool.name,
            "idempotency_key": intended.idempotency_key,
        }
        context = _context(intended, "reconcile", user_id)
        try:
            found = await self._tasks.call(
                lambda: tool.reconcile(args, context),
                seconds=tool.timeout or self._timeout,
                label=_label(intended, "reconcile"),
            )
        except Exception as exc:  # a broken hook must not lose the run
            message = f"the reconcile hook failed: {type(exc).__name__}: {exc}"
            return ToolCallReconciled(**fields, found="unknown", message=message[:_MAX_ERROR_TEXT])
        result = self._sizes.cut_result(found.result)
        return ToolCallReconciled(**fields, found=found.status, result=result)


class LiveHealth:
    """The circuit breakers over the store's tool health (shared by every engine on it).

    The view is read once, on first use; after that, what other processes recorded is read in
    the background (``spawn`` starts it), so no tool call waits for it: a run that stopped to
    read would fall out of step with the others, which costs group commit its batches.
    """

    def __init__(
        self,
        view: ToolHealthView,
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], bool],
    ) -> None:
        self._view = view
        self._spawn = spawn

    async def _refresh(self) -> None:
        # In the background, a store that cannot be read now leaves the view as it is; the
        # next refresh tries again (a run's own reads report such errors).
        with suppress(EventStoreError):
            await self._view.refresh()

    async def skip(
        self,
        call_id: str,
        tool: str,
        tier: str,
        *,
        threshold: int,
        cooldown: timedelta,
        now: datetime,
    ) -> ToolTierSkipped | None:
        view = self._view
        if view.take_refresh() and (not view.loaded or not self._spawn(self._refresh)):
            await view.refresh()
        health = view.state
        until = circuit_open_until(health, tool, tier, threshold=threshold, cooldown=cooldown)
        if until is None or now >= until:
            return None
        seen = health.get(tool, tier)
        return ToolTierSkipped(
            run_id="",
            span_id="",
            at=now,
            call_id=call_id,
            tool_name=tool,
            tier=tier,
            until=until,
            failures_in_a_row=seen.consecutive_failures,
            last_failure_at=seen.last_failure_at,
        )


class LiveLedgers:
    """Day ledgers read from the store, folding only what is new since the last read."""

    def __init__(self, folds: StreamFolds[LedgerState]) -> None:
        self._folds = folds

    async def day_ledger(self, stream: str) -> LedgerState:
        return await self._folds.current(stream)

    def forget(self, stream: str) -> None:
        self._folds.forget(stream)


class LiveKeys:
    """Key ledgers read from the store, folding only what is new since the last read."""

    def __init__(self, folds: StreamFolds[KeyRecord]) -> None:
        self._folds = folds

    async def key_record(self, key: str, call_id: str) -> KeyRecord:
        return await self._folds.current(key_stream(key))

    def forget(self, key: str) -> None:
        self._folds.forget(key_stream(key))


def ledger_folds(store: EventStore) -> tuple[StreamFolds[LedgerState], StreamFolds[KeyRecord]]:
    """The stream folds an engine keeps for day ledgers and key ledgers."""
    return StreamFolds(store, fold_ledger), StreamFolds(store, fold_key)


def _envelope(event: ToolCallIntended | ModelCallRequested, at: datetime) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id,
        "at": at,
    }


def _label(intended: ToolCallIntended, tier: str) -> str:
    return (
        f"tool {intended.tool_name!r} (run {intended.run_id!r}, call {intended.call_id!r}, "
        f"tier {tier!r})"
    )


def _context(intended: ToolCallIntended, tier: str, user_id: str) -> ToolContext:
    return ToolContext(
        run_id=intended.run_id,
        call_id=intended.call_id,
        user_id=user_id,
        tier=tier,
        idempotency_key=intended.idempotency_key,
    )
