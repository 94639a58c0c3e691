"""``Engine``: the façade a service embeds. It starts, streams, resumes and cancels runs."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from agentledger.engine.policies._budget import Budgets, day_stream
from agentledger.events import (
    ConfirmationApproved,
    ConfirmationDenied,
    EventStore,
    RecordedEvent,
    RunResumed,
    RunStarted,
    Usage,
)
from agentledger.projections._run_state import RunState, RunStatus, fold_run
from agentledger.projections._spend import LedgerState, fold_ledger

from ._agent import Agent
from ._errors import EngineError
from ._model_call import LedgerCache
from ._ports import Clock, IdSource, RandomIds, SystemClock
from ._replay import ReplayReport, replay_run
from ._run import EngineServices, RunDriver, run_stream
from ._tool_runner import ToolHealthBook, ToolRunner

Sink = Callable[[RecordedEvent], None]
"""Called with every event the engine appends, after it commits (e.g. ``JsonLinesSink``)."""


class RunNotFoundError(EngineError):
    """Raised when a run id names no run in the store."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """Where a run stands after ``run``/``resume`` returned: its status, answer and spend."""

    run_id: str
    status: RunStatus
    output: str | None
    cost_usd: Decimal
    usage: Usage
    turns: int
    flagged: bool = False
    error: str | None = None
    pending_confirmations: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, state: RunState) -> RunResult:
        """The result a run's state describes."""
        return cls(
            run_id=state.run_id,
            status=state.status,
            output=state.output,
            cost_usd=state.cost_usd,
            usage=state.usage,
            turns=state.turn,
            flagged=state.flagged,
            error=state.error,
            pending_confirmations=()
            if state.is_terminal
            else tuple(i for i, c in state.calls.items() if c.status == "awaiting_confirmation"),
        )


@dataclass
class _Active:
    scope: anyio.CancelScope
    driver: RunDriver
    cancel_reason: str | None = None


class Engine:
    """Runs agents against an event store. Use as ``async with Engine(store) as engine:``.

    ``agents`` are the agents this engine can resume by name (``run`` registers its agent too).
    ``clock`` and ``ids`` are the ports for time and identity; ``sink`` sees every appended
    event; ``budgets`` sets the spending caps per surface (pattern 5; without it nothing is
    capped, though every call's cost is still recorded). Many runs may go on at once in one
    engine, from many tasks.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        agents: Sequence[Agent] = (),
        clock: Clock | None = None,
        ids: IdSource | None = None,
        sink: Sink | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.ids: IdSource = ids or RandomIds()
        self.budgets = budgets
        self._sink = sink
        self._agents = {a.name: a for a in agents}
        self._tools = ToolRunner(ToolHealthBook())
        self._services = EngineServices(
            store=store,
            clock=self.clock,
            ids=self.ids,
            tools=self._tools,
            ledgers=LedgerCache(),
            budgets=budgets,
            publish=self._publish,
        )
        self._active: dict[str, _Active] = {}
        self._listeners: dict[str, list[MemoryObjectSendStream[RecordedEvent]]] = defaultdict(list)
        self._task_group: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._task_group = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        # Streamed runs still going are interrupted, not cancelled: they resume later.
        # The body's own exception is not the task group's to wrap: it propagates unchanged.
        self._task_group.cancel_scope.cancel()
        task_group, self._task_group = self._task_group, None
        await task_group.__aexit__(None, None, None)

    def register(self, agent: Agent) -> None:
        """Make ``agent`` resumable by its name in this engine."""
        self._agents[agent.name] = agent

    async def run(
        self,
        agent: Agent,
        task: str,
        *,
        user_id: str = "anonymous",
        surface: str = "default",
        run_id: str | None = None,
    ) -> RunResult:
        """Start a run of ``agent`` on ``task`` and drive it until it ends or pauses.

        The run's ``RunStarted`` is written with its first step (a model reply, a budget
        reservation or a failure), so a run that dies before that leaves nothing to resume.
        """
        driver = await self._start(agent, task, user_id=user_id, surface=surface, run_id=run_id)
        return await self._drive(driver)

    async def stream(
        self,
        agent: Agent,
        task: str,
        *,
        user_id: str = "anonymous",
        surface: str = "default",
        run_id: str | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Start a run like ``run`` and yield its events as they are appended.

        The run goes on in the engine's task group; the iterator ends when the run ends or
        pauses, and raises what the run raised. Leaving the loop early does not stop the run:
        use ``cancel`` for that.
        """
        if self._task_group is None:
            raise EngineError("the engine is not open; use 'async with Engine(store) as engine:'")
        run_id = run_id or self.ids.new_id()
        send, receive = anyio.create_memory_object_stream[RecordedEvent](math.inf)
        self._listeners[run_id].append(send)
        failure: list[BaseException] = []

        async def drive() -> None:
            with send:
                try:
                    await self.run(agent, task, user_id=user_id, surface=surface, run_id=run_id)
                except Exception as exc:
                    failure.append(exc)
                finally:
                    listeners = self._listeners[run_id]
                    listeners.remove(send)
                    if not listeners:
                        del self._listeners[run_id]

        self._task_group.start_soon(drive)
        with receive:
            async for recorded in receive:
                yield recorded
        if failure:
            raise failure[0]

    async def resume(self, run_id: str, *, agent: Agent | None = None) -> RunResult:
        """Continue a run after a crash, a restart or an approval; a no-op for ended runs."""
        state = await self.load(run_id)
        assert state.started is not None
        if agent is None:
            agent = self._agents.get(state.started.agent)
            if agent is None:
                raise EngineError(
                    f"run {run_id!r} belongs to agent {state.started.agent!r}, which this engine "
                    "does not know; pass it to Engine(agents=[...]) or resume(agent=...)"
                )
        if state.is_terminal:
            return RunResult.of(state)
        driver = self._driver(agent, state)
        awaiting = any(c.status == "awaiting_confirmation" for c in state.calls.values())
        if state.status == "paused" and awaiting:
            return RunResult.of(state)
        reason = "confirmed" if state.status == "paused" else "interrupted"
        released, ledger = driver.settle_leftovers("the run was interrupted before the reply")
        resumed = RunResumed(run_id=run_id, span_id=run_id, at=self.clock.now(), reason=reason)
        await driver.append([*released, resumed], *ledger)
        return await self._drive(driver)

    async def approve(self, run_id: str, call_id: str, *, by: str | None = None) -> None:
        """Record a person's yes to a pending tool call; then ``resume`` the run."""
        driver = await self._awaiting(run_id, call_id)
        event = ConfirmationApproved(
            run_id=run_id,
            span_id=self._call_span(driver, call_id),
            parent_span_id=driver.state.turn_span_id,
            at=self.clock.now(),
            call_id=call_id,
            by=by,
        )
        await driver.append([event])

    async def deny(
        self, run_id: str, call_id: str, *, by: str | None = None, reason: str = ""
    ) -> None:
        """Record a person's no to a pending tool call (the model is told); then ``resume``."""
        driver = await self._awaiting(run_id, call_id)
        event = ConfirmationDenied(
            run_id=run_id,
            span_id=self._call_span(driver, call_id),
            parent_span_id=driver.state.turn_span_id,
            at=self.clock.now(),
            call_id=call_id,
            by=by,
            reason=reason,
        )
        await driver.append([event])

    async def cancel(self, run_id: str, *, reason: str = "cancelled by the caller") -> None:
        """Cancel a run: stop it if it is running here, and record ``RunCancelled``."""
        active = self._active.get(run_id)
        if active is not None:
            active.cancel_reason = reason
            active.scope.cancel()
            return
        state = await self.load(run_id)
        if not state.is_terminal:
            await self._driver(None, state).cancel(reason)

    async def load(self, run_id: str) -> RunState:
        """The run's current state, folded from its stream."""
        state = fold_run(await self.store.read_stream(run_stream(run_id)))
        if state.started is None:
            raise RunNotFoundError(f"no run {run_id!r} in the store")
        return state

    async def spend_for_user(self, user_id: str, day: date) -> LedgerState:
        """The user's budget ledger for ``day``: settled spend and open reservations."""
        return fold_ledger(await self.store.read_stream(day_stream(user_id, day)))

    async def spend_for_run(self, run_id: str) -> LedgerState:
        """The run's budget ledger: settled spend and open reservations."""
        return fold_ledger(await self.store.read_stream(run_stream(run_id)))

    async def replay(self, run_id: str, *, agent: Agent | None = None) -> ReplayReport:
        """Run ``run_id`` again from its own log (no model is called, no tool runs) with
        ``agent`` (default: the registered agent of that name) and report the first divergence.

        Use it to check that a new prompt or code still reproduces old runs, and to re-derive a
        run's spend. Nothing is written to this engine's store.
        """
        state = await self.load(run_id)
        assert state.started is not None
        agent = agent or self._agents.get(state.started.agent)
        if agent is None:
            raise EngineError(f"no agent named {state.started.agent!r} to replay run {run_id!r}")
        return await replay_run(self.store, run_id, agent, self.budgets)

    async def result(self, run_id: str) -> RunResult:
        """Where the run stands, from the store."""
        return RunResult.of(await self.load(run_id))

    # -- internals -------------------------------------------------------------------------

    def _driver(self, agent: Agent | None, state: RunState) -> RunDriver:
        return RunDriver(self._services, agent, state)

    async def _start(
        self, agent: Agent, task: str, *, user_id: str, surface: str, run_id: str | None
    ) -> RunDriver:
        self.register(agent)
        if self.budgets is not None:
            self.budgets.policy(surface)  # an unknown surface fails before the run exists
        if run_id is None:
            run_id = self.ids.new_id()
        elif await self.store.stream_version(run_stream(run_id)) > 0:
            # Checked before any model is called; a race with another start of the same id is
            # still caught, by the expected version of the first write.
            raise EngineError(f"run {run_id!r} already exists; use resume()")
        driver = self._driver(agent, RunState(run_id=run_id))
        started = RunStarted(
            run_id=run_id,
            span_id=run_id,
            at=self.clock.now(),
            agent=agent.name,
            model=agent.model.name,
            task=task,
            user_id=user_id,
            surface=surface,
            system_prompt=agent.full_system_prompt(),
        )
        # Written with the run's first step (one commit fewer per run); until then the run is
        # not in the store, and a crash before it leaves nothing behind to resume.
        driver.open(started)
        return driver

    async def _drive(self, driver: RunDriver) -> RunResult:
        run_id = driver.state.run_id
        active = _Active(anyio.CancelScope(), driver)
        self._active[run_id] = active
        try:
            with active.scope:
                await driver.drive()
            if active.cancel_reason is not None:
                # Our own cancel: record it even if this task is being cancelled too.
                with anyio.CancelScope(shield=True):
                    await self._record_cancel(driver, active.cancel_reason)
        finally:
            del self._active[run_id]
        return RunResult.of(driver.state)

    async def _record_cancel(self, driver: RunDriver, reason: str) -> None:
        # An append cut short by the cancel may have committed: fold from the store first
        # (unless nothing is there yet, and the run's start is still to be written with it).
        recorded = await self.store.read_stream(run_stream(driver.state.run_id))
        if recorded:
            driver.state = fold_run(recorded)
            driver.opened()
        if not driver.state.is_terminal:
            await driver.cancel(reason)

    async def _awaiting(self, run_id: str, call_id: str) -> RunDriver:
        state = await self.load(run_id)
        call = state.calls.get(call_id)
        # An ended run takes no more events, even for a call it left waiting.
        if state.is_terminal or call is None or call.status != "awaiting_confirmation":
            raise EngineError(f"run {run_id!r} has no call {call_id!r} awaiting confirmation")
        return self._driver(None, state)

    @staticmethod
    def _call_span(driver: RunDriver, call_id: str) -> str:
        return driver.state.calls[call_id].span_id or driver.state.run_id

    def _publish(self, recorded: Sequence[RecordedEvent]) -> None:
        for event in recorded:
            self._tools.health.observe(event)
            if self._sink is not None:
                self._sink(event)
            listeners = self._listeners.get(event.event.run_id)
            if listeners and event.stream_id.startswith("run-"):
                for send in listeners:
                    # A reader that left its loop early does not stop the run.
                    with suppress(anyio.BrokenResourceError):
                        send.send_nowait(event)
