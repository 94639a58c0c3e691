"""``Engine.replay``: run a recorded run again, answered from its own log, and compare.

The agent's models and tools are swapped for doubles that answer from the recording (a
``Tape``); the loop, the prompts, the validation, the budget and the memory policy are the real
ones. A scratch in-memory store takes the replayed events, seeded with what the run saw of other
streams (the user's day ledger, idempotency keys) when it was recorded. No model is called and
no tool runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from agentledger.engine.models._model import ModelReply, ModelRequest
from agentledger.engine.models._pricing import Price
from agentledger.engine.policies._budget import Budgets, day_stream
from agentledger.engine.tools._idempotency import key_stream
from agentledger.engine.tools._tools import Tool, ToolContext
from agentledger.events import (
    EventStore,
    MemoryEventStore,
    NewEvent,
    RecordedEvent,
    RunStarted,
    StreamAppend,
    ToolCallSucceeded,
)
from agentledger.projections._spend import fold_ledger
from agentledger.replay import Divergence, NondeterminismError, Tape, first_divergence

from ._agent import Agent
from ._errors import EngineError, model_error_class
from ._model_call import request_digest
from ._run import run_stream
from .testing import FakeClock, SequentialIds


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of a replay: both event sequences, the first divergence, the spend."""

    run_id: str
    recorded: list[RecordedEvent]
    replayed: list[RecordedEvent]
    divergence: Divergence | None
    recorded_spend_usd: Decimal
    replayed_spend_usd: Decimal

    @property
    def matches(self) -> bool:
        """Whether the replay reproduced the recording."""
        return self.divergence is None


class _TapeModel:
    """A model that answers from the tape, under the recorded model's name and price."""

    def __init__(self, name: str, price: Price, tape: Tape) -> None:
        self._name = name
        self.price = price
        self._tape = tape

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelReply:
        attempt = self._tape.next_attempt(self._name, request_digest(request))
        outcome = attempt.outcome
        if outcome.type == "model_call_failed":
            error = model_error_class(outcome.error_type)
            raise _recorded_model_error(error, self._name, outcome)
        return ModelReply(
            text=outcome.text,
            tool_calls=outcome.tool_calls,
            usage=outcome.usage,
            finish_reason=outcome.finish_reason,
            model=outcome.model,
        )


def _recorded_model_error(error: type[Exception], model: str, outcome: Any) -> Exception:
    exc = error.__new__(error)
    Exception.__init__(exc, outcome.message)
    exc.model = model  # type: ignore[attr-defined]
    exc.status_code = outcome.status_code  # type: ignore[attr-defined]
    exc.retry_after = outcome.retry_after_s  # type: ignore[attr-defined]
    return exc


def _taped_tool(tool: Tool[Any], tape: Tape) -> Tool[Any]:
    def tier(name: str) -> Any:
        async def answer(args: Any, ctx: ToolContext) -> object:
            outcome = tape.tier_outcome(ctx.call_id, name)
            if isinstance(outcome, ToolCallSucceeded):
                return outcome.result
            # The same class name and message as recorded, so the event matches.
            raise type(outcome.error_type, (Exception,), {})(outcome.message)

        return answer

    return tool.with_implementations([(name, tier(name)) for name, _ in tool.tiers])


def _taped_agent(agent: Agent, tape: Tape) -> Agent:
    def taped(model: Any) -> _TapeModel:
        return _TapeModel(model.name, agent.price_of(model), tape)

    critic = agent.critic
    if critic is not None and critic.judge is not None:
        critic = replace(critic, judge=replace(critic.judge, model=taped(critic.judge.model)))

    return Agent(
        name=agent.name,
        model=taped(agent.model),
        fallback_models=[taped(m) for m in agent.fallback_models],
        system_prompt=agent.system_prompt,
        tools=[_taped_tool(t, tape) for t in agent.tools],
        max_turns=agent.max_turns,
        max_tokens=agent.max_tokens,
        model_timeout=agent.model_timeout,
        tool_timeout=agent.tool_timeout,
        retry=agent.retry,
        breaker=agent.breaker,
        memory=agent.memory,
        summary_model=taped(agent.summary_model) if agent.summary_model else None,
        critic=critic,
    )


async def _seed(
    store: EventStore, scratch: MemoryEventStore, run_id: str, streams: Sequence[str], before: int
) -> None:
    """Copy what other runs had written to ``streams`` before position ``before``."""
    for stream in streams:
        events = [
            NewEvent(r.event, r.event_id)
            for r in await store.read_stream(stream)
            if r.position < before and r.event.run_id != run_id
        ]
        if events:
            await scratch.append(StreamAppend(stream, events))


async def replay_run(
    store: EventStore, run_id: str, agent: Agent, budgets: Budgets | None
) -> ReplayReport:
    """Replay ``run_id`` of ``store`` with ``agent``; see the module docstring."""
    from ._engine import Engine  # the façade imports this module

    recorded = await store.read_stream(run_stream(run_id))
    if not recorded or not isinstance(recorded[0].event, RunStarted):
        raise EngineError(f"no run {run_id!r} in the store")
    started = recorded[0].event
    tape = Tape.from_events(recorded)
    streams = sorted(
        {key_stream(k) for r in recorded if (k := getattr(r.event, "idempotency_key", None))}
    )
    if budgets is not None:
        streams.append(day_stream(started.user_id, budgets.day(started.at)))
    divergence: Divergence | None = None
    async with MemoryEventStore() as scratch:
        await _seed(store, scratch, run_id, streams, recorded[0].position)
        engine = Engine(
            scratch, clock=FakeClock(started.at), ids=SequentialIds("replay"), budgets=budgets
        )
        async with engine:
            try:
                await engine.run(
                    _taped_agent(agent, tape),
                    started.task,
                    user_id=started.user_id,
                    surface=started.surface,
                    run_id=run_id,
                )
            except NondeterminismError as exc:
                divergence = exc.divergence
        replayed = await scratch.read_stream(run_stream(run_id))
    compared = first_divergence(recorded, replayed)
    if compared is not None and compared.expected is not None and compared.actual is not None:
        divergence = compared  # an event already differs: that is where the run first parted
    elif divergence is None:
        divergence = compared
    return ReplayReport(
        run_id=run_id,
        recorded=recorded,
        replayed=replayed,
        divergence=divergence,
        recorded_spend_usd=fold_ledger(recorded).settled,
        replayed_spend_usd=fold_ledger(replayed).settled,
    )
