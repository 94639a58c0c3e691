"""The run driver: folds a run, asks ``decide`` for the next step and performs it.

``perform`` is the only place with I/O. Each step's outcome is appended as events with the run's
expected version, so two processes driving one run cannot both write: the second gets a
``ConcurrencyError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

import anyio
from pydantic import TypeAdapter

from agentledger.events import (
    Event,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    ModelCallRetried,
    ModelFellBack,
    NewEvent,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    StreamAppend,
    ToolOutcomeUnknown,
    TurnStarted,
)
from agentledger.projections._messages import Message
from agentledger.projections._run_state import RunState, RunStateProjection

from ._agent import Agent
from ._decide import CallModel, Complete, Fail, Pause, RunTools, Stop, decide
from ._errors import ModelError, ModelRateLimitedError, ModelTimeoutError
from ._model import ModelReply, ModelRequest
from ._ports import Clock, IdSource
from ._tool_runner import ToolRunner, ledger_append

if TYPE_CHECKING:
    from agentledger.events import EventStore

_MESSAGES = TypeAdapter(list[Message])


class _Meta(TypedDict):
    run_id: str
    span_id: str
    at: datetime


_PROJECTION = RunStateProjection()


def run_stream(run_id: str) -> str:
    """The stream id of a run."""
    return f"run-{run_id}"


class RunDriver:
    """Drives one run to its end or its next pause. Not shared between tasks."""

    def __init__(
        self,
        *,
        store: EventStore,
        agent: Agent | None,
        state: RunState,
        clock: Clock,
        ids: IdSource,
        tools: ToolRunner,
        publish: Callable[[Sequence[RecordedEvent]], None],
    ) -> None:
        self.store = store
        self._agent = agent
        self.state = state
        self.clock = clock
        self.ids = ids
        self.tools = tools
        self._publish = publish

    @property
    def agent(self) -> Agent:
        """The agent of the run; a driver made only to record (cancel, approve) has none."""
        if self._agent is None:
            raise RuntimeError("this run driver only records events; it has no agent")
        return self._agent

    async def append(self, events: Sequence[Event], *others: StreamAppend) -> None:
        """Append events to the run (and other streams, atomically) and fold them in."""
        run = StreamAppend(
            run_stream(self.state.run_id),
            [NewEvent(e, self.ids.new_id()) for e in events],
            expected_version=self.state.version,
        )
        recorded = await self.store.append(run, *others)
        state = self.state
        for r in recorded:
            if r.stream_id == run.stream_id:
                state = _PROJECTION.evolve(state, r)
        self.state = state
        self._publish(recorded)

    async def drive(self) -> RunState:
        """Perform steps until ``decide`` says stop; return the final state."""
        while True:
            command = decide(self.state, self.agent)
            match command:
                case Stop():
                    return self.state
                case CallModel(turn=turn):
                    await self._call_model(turn)
                case RunTools(calls=calls):
                    await self.tools.run(self, calls)
                case Pause(call_ids=call_ids):
                    paused = RunPaused(
                        **self._meta(), reason="awaiting confirmation", call_ids=call_ids
                    )
                    await self.append([paused])
                case Complete(output=output):
                    completed = RunCompleted(
                        **self._meta(),
                        output=output,
                        turns=self.state.turn,
                        usage=self.state.usage,
                        cost_usd=self.state.cost_usd,
                    )
                    await self.append([completed])
                case Fail(error_type=error_type, message=message):
                    failed = RunFailed(**self._meta(), error_type=error_type, message=message)
                    await self.append([failed])

    async def cancel(self, reason: str) -> None:
        """Record the cancellation; side effects left in flight are marked outcome-unknown."""
        events: list[Event] = []
        ledger: list[StreamAppend] = []
        for call_id, call in self.state.calls.items():
            if call.status != "intended":
                continue
            key = call.intent.idempotency_key if call.intent else None
            unknown = ToolOutcomeUnknown(
                run_id=self.state.run_id,
                span_id=call.span_id or self.ids.new_id(),
                parent_span_id=self.state.turn_span_id,
                at=self.clock.now(),
                call_id=call_id,
                tool_name=call.call.name,
                idempotency_key=key,
                message="The run was cancelled while this call was in flight.",
            )
            events.append(unknown)
            if key is not None:
                ledger.append(ledger_append(self, key, unknown))
        events.append(RunCancelled(**self._meta(), reason=reason))
        await self.append(events, *ledger)

    def _meta(self) -> _Meta:
        """The envelope fields of a run-level event (its span is the run's)."""
        return {"run_id": self.state.run_id, "span_id": self.state.run_id, "at": self.clock.now()}

    async def _call_model(self, turn: int) -> None:
        agent = self.agent
        run_id = self.state.run_id
        turn_span = self.ids.new_id()
        pending: list[Event] = [
            TurnStarted(
                run_id=run_id,
                span_id=turn_span,
                parent_span_id=run_id,
                at=self.clock.now(),
                turn=turn,
            )
        ]
        request = ModelRequest(
            messages=self.state.messages,
            tools=agent.tool_specs,
            max_tokens=agent.max_tokens,
        )
        digest = _request_digest(request)
        models = agent.models
        for index, model in enumerate(models):
            attempt = 0
            while True:
                attempt += 1
                call_id = self.ids.new_id()
                started = self.clock.now()
                pending.append(
                    ModelCallRequested(
                        run_id=run_id,
                        span_id=call_id,
                        parent_span_id=turn_span,
                        at=started,
                        call_id=call_id,
                        model=model.name,
                        attempt=attempt,
                        max_tokens=agent.max_tokens,
                        message_count=len(request.messages),
                        request_digest=digest,
                    )
                )
                try:
                    with anyio.fail_after(agent.model_timeout):
                        reply = await model.complete(request)
                except TimeoutError:
                    error: ModelError = ModelTimeoutError(
                        model.name, f"no reply within {agent.model_timeout}s"
                    )
                except ModelError as exc:
                    error = exc
                else:
                    pending.append(self._responded(reply, model.name, call_id, turn_span, started))
                    await self.append(pending)
                    return
                retry_after = (
                    error.retry_after if isinstance(error, ModelRateLimitedError) else None
                )
                ended = self.clock.now()
                pending.append(
                    ModelCallFailed(
                        run_id=run_id,
                        span_id=call_id,
                        parent_span_id=turn_span,
                        at=ended,
                        call_id=call_id,
                        model=model.name,
                        attempt=attempt,
                        error_type=type(error).__name__,
                        message=str(error),
                        status_code=error.status_code,
                        retry_after_s=retry_after,
                        duration_ms=(ended - started).total_seconds() * 1000,
                    )
                )
                delay = agent.retry.delay(attempt, retry_after) if error.retryable else None
                if delay is None:
                    break
                pending.append(
                    ModelCallRetried(
                        run_id=run_id,
                        span_id=call_id,
                        parent_span_id=turn_span,
                        at=self.clock.now(),
                        call_id=call_id,
                        model=model.name,
                        attempt=attempt + 1,
                        delay_s=delay,
                    )
                )
                # Failures are written as they happen, so a watcher sees a slow retry live.
                await self.append(pending)
                pending = []
                await self.clock.sleep(delay)
            if index + 1 < len(models):
                pending.append(
                    ModelFellBack(
                        run_id=run_id,
                        span_id=turn_span,
                        parent_span_id=run_id,
                        at=self.clock.now(),
                        call_id=call_id,
                        from_model=model.name,
                        to_model=models[index + 1].name,
                        reason=type(error).__name__,
                    )
                )
        pending.append(
            RunFailed(
                **self._meta(),
                error_type="models_unavailable",
                message=f"every model failed; last error: {error}",
            )
        )
        await self.append(pending)

    def _responded(
        self, reply: ModelReply, model: str, call_id: str, turn_span: str, started: datetime
    ) -> ModelCallResponded:
        now = self.clock.now()
        return ModelCallResponded(
            run_id=self.state.run_id,
            span_id=call_id,
            parent_span_id=turn_span,
            at=now,
            call_id=call_id,
            model=reply.model or model,
            text=reply.text,
            tool_calls=reply.tool_calls,
            finish_reason=reply.finish_reason,
            usage=reply.usage,
            duration_ms=(now - started).total_seconds() * 1000,
        )


def _request_digest(request: ModelRequest) -> str:
    """A fingerprint of what a model is sent, so replay can tell when a request changed."""
    body = _MESSAGES.dump_json(list(request.messages))
    tools = ",".join(sorted(t.name for t in request.tools)).encode()
    limit = str(request.max_tokens).encode()
    return hashlib.sha256(body + b"\0" + tools + b"\0" + limit).hexdigest()[:32]
