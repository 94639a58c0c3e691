"""``Engine``: the façade a service embeds. It runs, streams, resumes, cancels and replays runs."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from agentledger.events import (
    BudgetOvershot,
    ConcurrencyError,
    ConfirmationApproved,
    ConfirmationDenied,
    ConversationContinued,
    CorruptEventError,
    Event,
    EventStore,
    ModelCallRequested,
    RecordedEvent,
    RunStarted,
)
from agentledger.projections._conversation import Conversation
from agentledger.projections._run_filter import RunFilter, find_runs
from agentledger.projections._run_state import RunState, fold_run
from agentledger.projections._spend import LedgerState, fold_ledger
from agentledger.projections._streams import (
    conversation_stream,
    day_stream,
    is_run_stream,
    run_stream,
)
from agentledger.projections._tool_health import ToolHealthView
from agentledger.replay import (
    ReplayBatch,
    Replayer,
    ReplayProgress,
    ReplayReport,
    UnknownAgentError,
    WhatIfError,
    WhatIfProgress,
    WhatIfReport,
    fork_state,
    forked_events,
    lineage,
    run_whatif,
)

from ._agent import Agent
from ._conversations import Continuation, continuation, conversation_view
from ._errors import (
    ConversationConflictError,
    ConversationNotFoundError,
    EngineError,
    InvalidInputError,
    RunActiveError,
    RunBusyError,
    RunExistsError,
    RunParkedError,
)
from ._inputs import check_id, check_text
from ._replaying import ReplayDriver
from ._result import RunResult
from .loop._deltas import Delta
from .loop._driver import cancel_run, drive
from .loop._live import LiveHealth, LiveKeys, LiveLedgers, LiveModels, LiveTools, ledger_folds
from .loop._perform_run import in_flight_until, run_resumed, run_started
from .loop._ports import Clock, IdSource, OpenGate, Ports, RandomIds, SystemClock
from .loop._recorder import EventFilter, Recorder
from .loop._subagents import ChildRun, LiveChildren, child_agent_of, sub_agents_started
from .loop._tool_tasks import ToolTasks
from .loop._watchdog import watch_loop
from .models._model import DeltaSink, ModelDelta
from .policies._budget import Budgets
from .policies._redaction import Redactor
from .policies._sizes import SizePolicy

_PORTS_KEPT = 256
_TOOL_CLOSE_GRACE = 2.0
"""Seconds a closing engine waits for tool calls that ignore their cancellation."""

_DEFAULT_REDACTION = Redactor()

logger = logging.getLogger("agentledger.engine.budget")

Sink = Callable[[RecordedEvent], None]
"""Called with every event the engine appends, after it commits (e.g. ``JsonLinesSink``)."""

T = TypeVar("T")


def _warn_overshoots(overshoots: Sequence[BudgetOvershot]) -> None:
    """Log the overshoots this session recorded (a resumed run does not repeat older ones)."""
    for event in overshoots:
        logger.warning(
            "run %s: model %s cost %s USD, %s more than the %s reserved (the server ignored the "
            "output limit?); the run and user %s's day %s are closed to capped model calls",
            event.run_id,
            event.model,
            event.actual_usd,
            event.over_usd,
            event.reserved_usd,
            event.user_id,
            event.day.isoformat(),
        )


class RunNotFoundError(EngineError):
    """Raised when a run id names no run in the store."""


@dataclass
class _Active:
    """A run this engine is driving."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    recorder: Recorder | None = None
    cancel_reason: str | None = None


class Engine:
    """Runs agents against an event store. Use as ``async with Engine(store) as engine:``.

    ``agents`` are the agents this engine can resume by name (``run`` registers its agent too).
    ``clock`` and ``ids`` are the ports for time and identity; ``sink`` sees every appended
    event; ``budgets`` sets the spending caps per surface (pattern 5; without it nothing is
    capped, though every call's cost is still recorded). Many runs may go on at once in one
    engine, from many tasks; one run is driven by one engine at a time.

    Tool health (the circuit breakers) is folded from the store, so every engine on one store
    shares it; ``health_refresh`` is how many seconds the breakers may go without reading what
    other processes recorded (this engine's own outcomes count at once). ``sizes`` bounds what
    one event may carry (model text, tool results, error texts, a task); the defaults keep every
    event under 1 MiB.

    ``redaction`` (on by default: ``Redactor()``, every built-in detector) replaces secrets (API
    keys, ``Authorization`` tokens, passwords in URLs, private keys, the caller's patterns) by
    ``[REDACTED:<kind>]`` in every event before it is folded and written, so no secret reaches
    the store, the sink, the ledgers or the CLI. The state is folded from what was written: the
    model sees the marker on later turns (the task too, from the first request), a tool gets the
    marker where the model wrote a secret, and replay reproduces exactly that. ``None`` or
    ``Redactor.off()`` records texts as they are.

    ``loop_block_warning``: while the engine is open, a watchdog logs a warning (logger
    ``agentledger.engine.loop``) whenever the event loop was held this many seconds or more,
    naming the tool calls running then (``None``: no watchdog). Blocking code belongs in a
    tool with ``isolation="thread"`` or ``"process"``.

    ``stream_models``: stream every call to a model that can stream (a ``StreamingModel``), also
    when nobody listens to the deltas, so its client cuts the output at the request's
    ``max_tokens`` whatever the server does (a cap then holds against a server that ignores the
    limit). By default only the calls of runs streamed with ``stream(..., deltas=True)`` are.
    See ``docs/streaming.md``.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        agents: Sequence[Agent[Any]] = (),
        clock: Clock | None = None,
        ids: IdSource | None = None,
        sink: Sink | None = None,
        budgets: Budgets | None = None,
        health_refresh: float = 1.0,
        sizes: SizePolicy | None = None,
        redaction: Redactor | None = _DEFAULT_REDACTION,
        loop_block_warning: float | None = 0.5,
        stream_models: bool = False,
    ) -> None:
        if loop_block_warning is not None and not (
            isinstance(loop_block_warning, int | float) and 0 < loop_block_warning < math.inf
        ):
            raise InvalidInputError(
                f"loop_block_warning must be a positive number of seconds or None, "
                f"not {loop_block_warning!r}"
            )
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.ids: IdSource = ids or RandomIds()
        self.budgets = budgets
        self.sizes = sizes or SizePolicy()
        self._sink = sink
        self._agents: dict[str, Agent[Any]] = {a.name: a for a in agents}
        self._health = ToolHealthView(store, refresh_interval=health_refresh)
        day_folds, key_folds = ledger_folds(store)
        self._ledgers = LiveLedgers(day_folds)
        self._keys = LiveKeys(key_folds)
        self.redaction = redaction if redaction is not None else Redactor.off()
        self._admit: EventFilter | None = _admit(self.redaction, self.sizes)
        """What every event passes through before it is folded and written."""
        self._active: dict[str, _Active] = {}
        self._agent_ports: dict[int, tuple[Agent[Any], Ports]] = {}
        self._listeners: dict[str, list[MemoryObjectSendStream[RecordedEvent | Delta]]] = (
            defaultdict(list)
        )
        self._delta_listeners: dict[str, list[MemoryObjectSendStream[RecordedEvent | Delta]]] = (
            defaultdict(list)
        )
        self._stream_models = stream_models
        self._children: dict[str, set[str]] = defaultdict(set)
        """The sub-agent runs this engine drives, by the run that started them."""
        self._task_group: TaskGroup | None = None
        self._tool_tasks = ToolTasks()
        self._loop_block_warning = loop_block_warning

    async def __aenter__(self) -> Self:
        self._task_group = await anyio.create_task_group().__aenter__()
        if self._loop_block_warning is not None:
            self._task_group.start_soon(
                watch_loop, self._loop_block_warning, self._tool_tasks.running_between
            )
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
        # Tool calls abandoned at their deadline (they ignore cancellation) are not in the
        # task group, which would have waited for them: they get a bounded wait here.
        await self._tool_tasks.aclose(_TOOL_CLOSE_GRACE)

    def register(self, agent: Agent[Any]) -> None:
        """Make ``agent`` resumable by its name in this engine."""
        self._agents[agent.name] = agent

    async def run(
        self,
        agent: Agent[T],
        task: str,
        *,
        user_id: str = "anonymous",
        surface: str = "default",
        run_id: str | None = None,
        conversation_id: str | None = None,
        follows: str | None = None,
    ) -> RunResult[T]:
        """Start a run of ``agent`` on ``task`` and drive it until it ends or pauses.

        The result is typed by the agent: ``RunResult[M]`` for an ``Agent(output_type=M)``.

        The run's ``RunStarted`` is written with its first write (after its first model reply,
        with a budget reservation, or with a failure), so a run that dies before that leaves
        nothing to resume. Raises ``RunExistsError`` if ``run_id`` names a stored run and
        ``RunActiveError`` if this engine is driving that id right now.

        ``conversation_id`` and/or ``follows`` (a run id) make the run the next one of a
        conversation: it continues the conversation's last run (which must have ended) and is
        sent the earlier runs' tasks and answers before its task (see ``docs/conversations.md``).
        Raises ``ConversationBusyError`` while that run goes on, ``ConversationConflictError``
        if another run continued the conversation first (nothing of this run is recorded) or
        ``follows`` is not its last run, and ``ConversationNotFoundError`` if ``follows`` names
        no run.
        """
        given = run_id is not None
        run_id = check_id("run_id", run_id) if given else self.ids.new_id()
        check_id("user_id", user_id)
        check_id("surface", surface)
        check_text("task", task, self.sizes.max_input_text)
        check_text("the system prompt", agent.full_system_prompt(), self.sizes.max_input_text)
        active = self._take(run_id)
        try:
            self.register(agent)
            if self.budgets is not None:
                self.budgets.policy(surface)  # an unknown surface fails before the run exists
            # Checked before any model is called; a race with another process starting the same
            # id is still caught, by the expected version of the first write.
            if given and await self.store.stream_version(run_stream(run_id)) > 0:
                raise RunExistsError(f"run {run_id!r} already exists; use resume()")
            recorder = self._recorder(RunState(run_id=run_id))
            joining = await self._joining(conversation_id, follows, agent)
            at = self.clock.now()
            started = run_started(
                agent,
                run_id,
                task,
                user_id=user_id,
                surface=surface,
                at=at,
                conversation_id=joining.conversation_id if joining else None,
                follows=joining.follows_id if joining else None,
            )
            if joining is None:
                recorder.stage([started])
                return await self._drive(active, recorder, agent)
            continued = joining.continued(run_id, at)
            opening: list[Event] = [started] if continued is None else [started, continued]
            # The join rides on the run's first write: of two runs continuing one
            # conversation, the second's first write fails as a whole.
            recorder.stage(opening, joining.join(run_id, at, self.ids))
            try:
                return await self._drive(active, recorder, agent)
            except ConcurrencyError as exc:
                if exc.stream_id != conversation_stream(joining.conversation_id):
                    raise
                raise ConversationConflictError(
                    f"conversation {joining.conversation_id!r} was continued by another run "
                    f"meanwhile; run {run_id!r} was not recorded"
                ) from None
        finally:
            del self._active[run_id]

    @overload
    def stream(
        self,
        agent: Agent[Any],
        task: str,
        *,
        user_id: str = ...,
        surface: str = ...,
        run_id: str | None = ...,
        conversation_id: str | None = ...,
        follows: str | None = ...,
        deltas: Literal[False] = ...,
    ) -> AsyncIterator[RecordedEvent]: ...

    @overload
    def stream(
        self,
        agent: Agent[Any],
        task: str,
        *,
        user_id: str = ...,
        surface: str = ...,
        run_id: str | None = ...,
        conversation_id: str | None = ...,
        follows: str | None = ...,
        deltas: Literal[True],
    ) -> AsyncIterator[RecordedEvent | Delta]: ...

    @overload
    def stream(
        self,
        agent: Agent[Any],
        task: str,
        *,
        user_id: str = ...,
        surface: str = ...,
        run_id: str | None = ...,
        conversation_id: str | None = ...,
        follows: str | None = ...,
        deltas: bool,
    ) -> AsyncIterator[RecordedEvent | Delta]: ...

    async def stream(
        self,
        agent: Agent[Any],
        task: str,
        *,
        user_id: str = "anonymous",
        surface: str = "default",
        run_id: str | None = None,
        conversation_id: str | None = None,
        follows: str | None = None,
        deltas: bool = False,
    ) -> AsyncIterator[RecordedEvent | Delta]:
        """Start a run like ``run`` and yield its events as they are appended.

        The run goes on in the engine's task group; the iterator ends when the run ends or
        pauses, and raises what the run raised. Leaving the loop early does not stop the run:
        use ``cancel`` for that.

        ``deltas=True`` also yields a ``Delta`` for every piece of a model's reply as it
        arrives (the run's models that can stream are streamed), among the events. A call's
        deltas come before the ``ModelCallResponded`` that records its whole reply, or the
        ``ModelCallFailed`` that says its attempt failed (drop what it streamed: a retry
        streams again, under a new ``call_id``). A sub-agent's run started by this one is
        streamed with it: its events and deltas carry the child's ``run_id``. See
        ``docs/streaming.md``.
        """
        if self._task_group is None:
            raise EngineError("the engine is not open; use 'async with Engine(store) as engine:'")
        run_id = check_id("run_id", run_id) if run_id is not None else self.ids.new_id()
        send, receive = anyio.create_memory_object_stream[RecordedEvent | Delta](math.inf)
        self._listeners[run_id].append(send)
        if deltas:
            self._delta_listeners[run_id].append(send)
        failure: list[BaseException] = []

        async def run() -> None:
            with send:
                try:
                    await self.run(
                        agent,
                        task,
                        user_id=user_id,
                        surface=surface,
                        run_id=run_id,
                        conversation_id=conversation_id,
                        follows=follows,
                    )
                except Exception as exc:
                    failure.append(exc)
                finally:
                    for registry in (self._listeners, self._delta_listeners):
                        listeners = registry.get(run_id)
                        if listeners is not None and send in listeners:
                            listeners.remove(send)
                            if not listeners:
                                del registry[run_id]

        self._task_group.start_soon(run)
        with receive:
            async for recorded in receive:
                yield recorded
        if failure:
            raise failure[0]

    @overload
    async def resume(
        self, run_id: str, *, agent: None = None, takeover: bool = False
    ) -> RunResult[Any]: ...

    @overload
    async def resume(
        self, run_id: str, *, agent: Agent[T], takeover: bool = False
    ) -> RunResult[T]: ...

    async def resume(
        self, run_id: str, *, agent: Agent[Any] | None = None, takeover: bool = False
    ) -> RunResult[Any]:
        """Continue a run after a crash, a restart or an approval; a no-op for ended runs.

        A model request left without answer is made again; a side effect left in flight is
        claimed, then reconciled, re-run (``retry_safe``) or reported unknown to the model.
        Raises ``RunActiveError`` if this engine is driving the run, and ``RunBusyError`` while
        a side effect of the run may still be running in another session (until its time
        limit, ``retry_at``). ``takeover=True`` resumes at once all the same: use it only when
        the process that drove the run is known to be gone (a supervisor restarting the one
        worker that crashed), or the side effect may happen twice.
        """
        active = self._take(check_id("run_id", run_id))
        try:
            state = await self.load(run_id)
            assert state.started is not None
            if agent is None:
                agent = self._agents.get(state.started.agent)
                if agent is None:
                    raise EngineError(
                        f"run {run_id!r} belongs to agent {state.started.agent!r}, which this "
                        "engine does not know; pass it to Engine(agents=[...]) or resume(agent=...)"
                    )
            if state.is_terminal:
                return RunResult.of(state, agent)
            awaiting = any(c.status == "awaiting_confirmation" for c in state.calls.values())
            if state.status == "paused" and awaiting:
                return RunResult.of(state, agent)
            until = None if takeover else in_flight_until(state)
            if until is not None and self.clock.now() < until:
                raise RunBusyError(
                    f"run {run_id!r} has a side effect in flight in another session until "
                    f"{until.isoformat()}; resume it after that",
                    retry_at=until,
                )
            recorder = self._recorder(state)
            # Written at once, with the run's expected version: of two sessions resuming from
            # one state, the second stops here, before it asks anything of the world.
            await recorder.commit([run_resumed(state, self.clock)])
            return await self._drive(active, recorder, agent)
        finally:
            del self._active[run_id]

    async def approve(self, run_id: str, call_id: str, *, by: str | None = None) -> None:
        """Record a person's yes to a pending tool call; then ``resume`` the run."""
        state = await self._awaiting(run_id, call_id)
        event = ConfirmationApproved(
            run_id=run_id,
            span_id=self._call_span(state, call_id),
            parent_span_id=state.turn_span_id,
            at=self.clock.now(),
            call_id=call_id,
            by=by,
        )
        await self._recorder(state).commit([event])

    async def deny(
        self, run_id: str, call_id: str, *, by: str | None = None, reason: str = ""
    ) -> None:
        """Record a person's no to a pending tool call (the model is told); then ``resume``."""
        check_text("the denial reason", reason, self.sizes.max_error_text)
        state = await self._awaiting(run_id, call_id)
        event = ConfirmationDenied(
            run_id=run_id,
            span_id=self._call_span(state, call_id),
            parent_span_id=state.turn_span_id,
            at=self.clock.now(),
            call_id=call_id,
            by=by,
            reason=reason,
        )
        await self._recorder(state).commit([event])

    async def cancel(self, run_id: str, *, reason: str = "cancelled by the caller") -> None:
        """Cancel a run: stop it if it is running here, and record ``RunCancelled``."""
        active = self._active.get(check_id("run_id", run_id))
        check_text("the cancel reason", reason, self.sizes.max_error_text)
        if await self._cancel_children(run_id, active, reason):
            return
        if active is not None:
            active.cancel_reason = reason
            active.scope.cancel()
            return
        state = await self.load(run_id)
        if not state.is_terminal:
            await cancel_run(self._recorder(state), self.clock, self.ids, reason)

    async def load(self, run_id: str) -> RunState:
        """The run's current state, folded from its stream.

        Raises ``RunParkedError`` if an event of the run is damaged.
        """
        check_id("run_id", run_id)
        state = fold_run(await self._run_events(run_id))
        if state.started is None:
            raise RunNotFoundError(f"no run {run_id!r} in the store")
        return state

    async def spend_for_user(self, user_id: str, day: date) -> LedgerState:
        """The user's budget ledger for ``day``: settled spend and open reservations."""
        return fold_ledger(await self.store.read_stream(day_stream(user_id, day)))

    async def spend_for_run(self, run_id: str) -> LedgerState:
        """The run's budget ledger: settled spend and open reservations."""
        return fold_ledger(await self.store.read_stream(run_stream(run_id)))

    async def replay(self, run_id: str, *, agent: Agent[Any] | None = None) -> ReplayReport:
        """Run ``run_id`` again from its own log with ``agent`` (default: the registered agent of
        that name) and report the first divergence. No model is called, no tool runs, and
        nothing is written to this engine's store.

        Use it to check that a new prompt or code still reproduces old runs.
        """
        state = await self.load(run_id)
        assert state.started is not None
        agent = agent or self._agents.get(state.started.agent)
        if agent is None:
            raise EngineError(f"no agent named {state.started.agent!r} to replay run {run_id!r}")
        driver = ReplayDriver(agent, self.budgets, self._admit)
        report = await Replayer(self.store).replay(run_id, driver)
        children = []
        for started in sub_agents_started(report.recorded):
            if await self.store.stream_version(run_stream(started.child_run_id)) == 0:
                continue  # the recorded run stopped before its child wrote anything
            child_agent = child_agent_of(agent, started) or self._agents.get(started.agent)
            children.append(await self.replay(started.child_run_id, agent=child_agent))
        return dataclasses.replace(report, children=tuple(children)) if children else report

    async def replay_all(
        self,
        runs: RunFilter | Iterable[str] | None = None,
        *,
        agent: Agent[Any] | Mapping[str, Agent[Any]] | None = None,
        concurrency: int = 4,
        progress: Callable[[ReplayProgress], None] | None = None,
    ) -> ReplayBatch:
        """Replay many runs from their own logs and report which reproduce their recording.

        ``runs``: a ``RunFilter`` over the store's run index, or run ids (default: every run,
        or every run of ``agent``'s name when one agent is given). ``agent``: an agent that
        replaces the registered agent of its name (a changed prompt, model or tool set), or a
        mapping from recorded agent names to agents; runs of other agents use the registered
        ones. Up to ``concurrency`` runs replay at once; ``progress`` is called after each. A
        run that cannot be replayed (no such run, a damaged event, an unknown agent) is an
        entry of ``errors``, not an exception. Nothing is written to the store.
        """
        if isinstance(agent, Agent):
            overrides: Mapping[str, Agent[Any]] = {agent.name: agent}
            if runs is None:
                runs = RunFilter(agent=agent.name)
        else:
            overrides = agent or {}
        run_ids = await self._select(runs)

        def driver_for(started: RunStarted) -> ReplayDriver:
            chosen = overrides.get(started.agent) or self._agents.get(started.agent)
            if chosen is None:
                raise UnknownAgentError(
                    f"no agent named {started.agent!r} to replay run {started.run_id!r}"
                )
            return ReplayDriver(chosen, self.budgets, self._admit)

        replayer = Replayer(self.store)
        return await replayer.replay_all(
            run_ids, driver_for, concurrency=concurrency, progress=progress
        )

    async def fork(
        self,
        run_id: str,
        *,
        at_version: int | None = None,
        agent: Agent[Any] | None = None,
        new_run_id: str | None = None,
        user_id: str | None = None,
        surface: str | None = None,
    ) -> str:
        """Copy run ``run_id`` up to ``at_version`` (default 1: its start) into a new run and
        return the new run's id; ``resume(new_id, agent=...)`` continues it live.

        The fork's ``RunStarted`` records ``forked_from`` and ``forked_at_version`` and
        describes ``agent`` when one is given (its name, model and system prompt; the task
        stays the original's), so the copied conversation goes on under the new prompt. Its
        budget is charged to ``user_id``/``surface`` (default: the original's); the copied
        calls are never charged again (see ``agentledger.replay._fork``). ``agent`` is not
        registered with the engine: pass it to ``resume`` (or ``register`` it). Raises ``ForkError``
        for a version the run cannot go on from (past its end, after it ended, a model request
        or tool call in flight there), ``RunNotFoundError``, ``RunExistsError`` for a stored
        ``new_run_id``, and ``RunParkedError`` for a damaged event.

        A fork of a run of a conversation starts with the history that run was sent (its start
        is version 2 then), and names the conversation, but does not join it: the
        conversation goes on from its own last run.
        """
        check_id("run_id", run_id)
        new_id = check_id("new_run_id", new_run_id) if new_run_id else self.ids.new_id()
        recorded = await self._run_events(run_id)
        if not recorded or not isinstance(recorded[0].event, RunStarted):
            raise RunNotFoundError(f"no run {run_id!r} in the store")
        version = 1 if at_version is None else at_version
        if version == 1 and len(recorded) > 1:
            # A conversation's history is part of a run's start (written with it).
            version = 2 if isinstance(recorded[1].event, ConversationContinued) else 1
        fork_state(recorded, version)
        original = recorded[0].event
        user = check_id("user_id", user_id) if user_id is not None else original.user_id
        where = check_id("surface", surface) if surface is not None else original.surface
        if self.budgets is not None:
            self.budgets.policy(where)  # an unknown surface fails before the fork exists
        if agent is None:
            changes = {"run_id": new_id, "span_id": new_id, "at": self.clock.now()}
            opening = original.model_copy(update={**changes, "user_id": user, "surface": where})
        else:
            check_text("the system prompt", agent.full_system_prompt(), self.sizes.max_input_text)
            # Not registered: an experiment must not replace the agent its name resumes.
            opening = run_started(
                agent,
                new_id,
                original.task,
                user_id=user,
                surface=where,
                at=self.clock.now(),
                conversation_id=original.conversation_id,
                follows=original.follows,
            )
        opening = lineage(opening, forked_from=run_id, at_version=version)
        self._take(new_id)
        try:
            await self._recorder(RunState(run_id=new_id)).commit(
                forked_events(recorded, version, opening)
            )
        finally:
            del self._active[new_id]
        return new_id

    async def whatif(
        self,
        runs: RunFilter | Iterable[str],
        agent: Agent[Any],
        *,
        at_version: int | None = None,
        concurrency: int = 4,
        budget_usd: Decimal | None = None,
        allow_side_effects: bool = False,
        user_id: str | None = None,
        surface: str | None = None,
        progress: Callable[[WhatIfProgress], None] | None = None,
    ) -> WhatIfReport:
        """Fork each selected run (at its start, or ``at_version``) with ``agent``, run the
        forks live, and report old and new side by side (status, cost, turns, tool calls,
        critic verdicts, the output's change) per run and in total.

        Up to ``concurrency`` forks run at once. ``budget_usd`` bounds what the forks spend: a
        run is skipped once the spend so far plus what the runs in flight and it are expected
        to spend (their recordings' spend after the fork point) would pass it. The forks' new
        calls are charged to ``user_id``/``surface`` (default: each original's; a user of its
        own, e.g. ``"whatif"``, keeps experiments off real users' day budgets). An agent with
        side-effecting tools raises ``WhatIfError`` unless ``allow_side_effects=True``: the
        forks run live, so their side effects happen (under the forks' own keys for
        ``key_scope="run"`` tools). A run that cannot be forked or fails is a ``skipped``
        entry with its error, not an exception.
        """
        effects = sorted(t.name for t in agent.tools if t.side_effect)
        if effects and not allow_side_effects:
            raise WhatIfError(
                f"agent {agent.name!r} has side-effecting tools ({', '.join(effects)}): its forks "
                "would run them for real; pass allow_side_effects=True to do so"
            )
        run_ids = await self._select(runs)

        async def read(run_id: str) -> list[RecordedEvent]:
            return await self.store.read_stream(run_stream(run_id))

        async def fork(run_id: str) -> str:
            return await self.fork(
                run_id, at_version=at_version, agent=agent, user_id=user_id, surface=surface
            )

        async def go_on(fork_id: str) -> RunResult[Any]:
            return await self.resume(fork_id, agent=agent)

        return await run_whatif(
            run_ids,
            read=read,
            fork=fork,
            go_on=go_on,
            at_version=at_version,
            concurrency=concurrency,
            budget_usd=budget_usd,
            progress=progress,
        )

    async def conversation(self, conversation_id: str) -> Conversation:
        """The conversation's runs in order, each with its status, task and answer.

        Raises ``ConversationNotFoundError`` if no run joined ``conversation_id``.
        """
        convo = await conversation_view(self.store, check_id("conversation_id", conversation_id))
        if convo is None:
            raise ConversationNotFoundError(f"no conversation {conversation_id!r} in the store")
        return convo

    @overload
    async def result(self, run_id: str) -> RunResult[Any]: ...

    @overload
    async def result(self, run_id: str, *, agent: Agent[T]) -> RunResult[T]: ...

    async def result(self, run_id: str, *, agent: Agent[Any] | None = None) -> RunResult[Any]:
        """Where the run stands, from the store. Its ``value`` is typed by ``agent`` (default:
        the agent of the run's name this engine knows; none: ``value`` is ``None``), rebuilt
        from the recorded output: the same value the run returned."""
        state = await self.load(run_id)
        if agent is None and state.started is not None:
            agent = self._agents.get(state.started.agent)
        return RunResult.of(state, agent)

    # -- internals -------------------------------------------------------------------------

    async def _joining(
        self, conversation_id: str | None, follows: str | None, agent: Agent[Any]
    ) -> Continuation | None:
        """Where a new run goes in its conversation, if it names one (checked, not written)."""
        if conversation_id is None and follows is None:
            return None
        return await continuation(
            self.store,
            conversation_id=None
            if conversation_id is None
            else check_id("conversation_id", conversation_id),
            follows=None if follows is None else check_id("follows", follows),
            policy=agent.memory,
            # Without a memory policy the history still fits in one event.
            max_bytes=2 * self.sizes.max_model_text,
        )

    async def _run_events(self, run_id: str) -> list[RecordedEvent]:
        """The run's stream, every event decoded: ``RunParkedError`` for a damaged one (a
        stream is read undecoded, so damage shows only when an event is used)."""
        recorded = await self.store.read_stream(run_stream(run_id))
        try:
            for event in recorded:
                event.event  # noqa: B018 - decoding is the check
        except CorruptEventError as exc:
            raise _parked(run_id, exc) from None
        return recorded

    async def _select(self, runs: RunFilter | Iterable[str] | None) -> list[str]:
        """The run ids ``runs`` names: a filter's matches (in start order), or the ids given."""
        if runs is None or isinstance(runs, RunFilter):
            return [row.run_id for row in await find_runs(self.store, runs)]
        if isinstance(runs, str):
            return [runs]
        return list(runs)

    def _take(self, run_id: str) -> _Active:
        """Mark ``run_id`` as driven by this engine (before any await; the caller removes the
        mark when it is done)."""
        if run_id in self._active:
            raise RunActiveError(f"run {run_id!r} is already being driven by this engine")
        active = self._active[run_id] = _Active()
        return active

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``work`` in the engine's task group, if it is open (``False``: it is not)."""
        if self._task_group is None:
            return False
        self._task_group.start_soon(work)
        return True

    def _recorder(self, state: RunState) -> Recorder:
        return Recorder(self.store, self.ids, state, self._publish, self._admit)

    def _ports(self, agent: Agent[Any]) -> Ports:
        # An agent is immutable, so its ports are made once (the entry keeps the agent alive,
        # so its id cannot be reused by another while it is here).
        known = self._agent_ports.get(id(agent))
        if known is not None and known[0] is agent:
            return known[1]
        if len(self._agent_ports) >= _PORTS_KEPT:
            self._agent_ports.clear()
        ports = self._live_ports(agent)
        self._agent_ports[id(agent)] = (agent, ports)
        return ports

    def _live_ports(self, agent: Agent[Any]) -> Ports:
        models = {m.name: m for m in agent.models}
        if agent.summary_model is not None:
            models[agent.summary_model.name] = agent.summary_model
        if agent.critic is not None and agent.critic.judge is not None:
            models.setdefault(agent.critic.judge.model.name, agent.critic.judge.model)
        return Ports(
            clock=self.clock,
            ids=self.ids,
            models=LiveModels(
                models,
                self.clock,
                agent.model_timeout,
                agent.price_of,
                self.sizes,
                deltas=self._delta_sink,
            ),
            tools=LiveTools(
                agent.tools_by_name, self.clock, agent.tool_timeout, self.sizes, self._tool_tasks
            ),
            health=LiveHealth(self._health, self._spawn),
            ledgers=self._ledgers,
            keys=self._keys,
            gate=OpenGate(),
            children=LiveChildren(self._drive_child, self.clock),
        )

    async def _drive(
        self, active: _Active, recorder: Recorder, agent: Agent[Any]
    ) -> RunResult[Any]:
        active.recorder = recorder
        seen = len(recorder.state.overshoots)
        with active.scope:
            try:
                await drive(recorder, agent, self._ports(agent), self.budgets)
            except CorruptEventError as exc:
                # A stream the run reads (its user's budget ledger, a key's ledger) is damaged:
                # the run stops where it is, resumable once the row is repaired.
                raise _parked(recorder.state.run_id, exc) from None
        if active.cancel_reason is not None:
            # Our own cancel: record it even if this task is being cancelled too. A write the
            # cancel cut off may have committed: the recorder finds out first.
            with anyio.CancelScope(shield=True):
                await recorder.settle()
                await cancel_run(recorder, self.clock, self.ids, active.cancel_reason)
        _warn_overshoots(recorder.state.overshoots[seen:])
        return RunResult.of(recorder.state, agent)

    async def _drive_child(self, child: ChildRun) -> RunState:
        """Start a sub-agent's run (or resume it, when an earlier session of its parent started
        it) and drive it until it ends or pauses, in the parent's task."""
        parent_id = child.opening.parent_run_id or ""
        self._children[parent_id].add(child.run_id)
        try:
            # Whoever streams the parent sees the child's events and deltas too (each names
            # its run): a sub-agent's work is part of what the parent's caller waits for.
            self._forward_listeners(parent_id, child.run_id)
            if await self.store.stream_version(run_stream(child.run_id)) > 0:
                await self.resume(child.run_id, agent=child.agent)
                state = await self.load(child.run_id)
            else:
                state = await self._start_child(child, self._active.get(parent_id))
        finally:
            self._forget_listeners(parent_id, child.run_id)
            self._children[parent_id].discard(child.run_id)
            if not self._children[parent_id]:
                del self._children[parent_id]
            parent = self._active.get(parent_id)
            if parent is not None and parent.cancel_reason is not None:
                parent.scope.cancel()  # its cancellation waited for the child to stop
        await anyio.lowlevel.checkpoint()  # where that cancellation stops the parent
        return state

    async def _start_child(self, child: ChildRun, parent: _Active | None) -> RunState:
        active = self._take(child.run_id)
        try:
            if parent is not None and parent.cancel_reason is not None:
                # Cancelled while the child was about to start: it never starts.
                parent.scope.cancel()
                await anyio.lowlevel.checkpoint()
            self.register(child.agent)
            recorder = self._recorder(RunState(run_id=child.run_id))
            recorder.stage([child.opening])
            await self._drive(active, recorder, child.agent)
            return recorder.state
        finally:
            del self._active[child.run_id]

    async def _cancel_children(self, run_id: str, active: _Active | None, reason: str) -> bool:
        """Cancel the sub-agent runs ``run_id`` has in flight, first: a child stopped after its
        parent could still be answering it. For a run driven here, its own cancellation then
        comes when its child's run returns (``_drive_child``), so the parent records how the
        child ended; ``True`` says it was left to that."""
        if active is not None:
            children = sorted(self._children.get(run_id, ()))
            if not children:
                return False
            active.cancel_reason = reason
            for child in children:
                # (A child about to start has nothing to cancel: it will not start.)
                with suppress(RunNotFoundError):
                    await self.cancel(child, reason=f"its parent run {run_id} was cancelled")
            return True
        state = await self.load(run_id)
        for call in state.calls.values():
            if call.child is None:
                continue
            child_id = call.child.child_run_id
            # A parent stopped (or ended) while its child was in flight left it so.
            found = fold_run(await self._run_events(child_id))
            if found.started is not None and not found.is_terminal:
                await self.cancel(child_id, reason=f"its parent run {run_id} was cancelled")
        return False

    async def _awaiting(self, run_id: str, call_id: str) -> RunState:
        state = await self.load(run_id)
        call = state.calls.get(call_id)
        # An ended run takes no more events, even for a call it left waiting.
        if state.is_terminal or call is None or call.status != "awaiting_confirmation":
            raise EngineError(f"run {run_id!r} has no call {call_id!r} awaiting confirmation")
        return state

    @staticmethod
    def _call_span(state: RunState, call_id: str) -> str:
        return state.calls[call_id].span_id or state.run_id

    def _forward_listeners(self, from_run: str, to_run: str) -> None:
        """``from_run``'s listeners (events, and deltas where asked) also hear ``to_run``."""
        for registry in (self._listeners, self._delta_listeners):
            for send in registry.get(from_run, ()):
                registry[to_run].append(send)

    def _forget_listeners(self, from_run: str, to_run: str) -> None:
        """Undo ``_forward_listeners``."""
        for registry in (self._listeners, self._delta_listeners):
            forwarded = registry.get(to_run)
            if forwarded is None:
                continue
            for send in registry.get(from_run, ()):
                with suppress(ValueError):
                    forwarded.remove(send)
            if not forwarded:
                del registry[to_run]

    def _delta_sink(self, requested: ModelCallRequested) -> DeltaSink | None:
        """Where the pieces of ``requested``'s reply go: its run's delta listeners; ``None``
        (not streamed) when there are none, unless every call is streamed."""
        listeners = self._delta_listeners.get(requested.run_id)
        if not listeners:
            return _ignore_delta if self._stream_models else None
        targets = tuple(listeners)

        def sink(piece: ModelDelta) -> None:
            delta = Delta(
                requested.run_id,
                requested.call_id,
                requested.attempt,
                piece,
                purpose=requested.purpose,
            )
            for send in targets:
                with suppress(anyio.BrokenResourceError):
                    send.send_nowait(delta)

        return sink

    def _publish(self, recorded: Sequence[RecordedEvent]) -> None:
        self._health.observe(recorded)
        for event in recorded:
            if self._sink is not None:
                self._sink(event)
            listeners = self._listeners.get(event.event.run_id)
            if listeners and is_run_stream(event.stream_id):
                for send in listeners:
                    # A reader that left its loop early does not stop the run.
                    with suppress(anyio.BrokenResourceError):
                        send.send_nowait(event)


def _ignore_delta(piece: ModelDelta) -> None:
    """The sink of a call streamed only for its output cut-off."""


def _parked(run_id: str, error: CorruptEventError) -> RunParkedError:
    return RunParkedError(run_id, error.stream_id, error.version, error.position, error.reason)


def _admit(redaction: Redactor, sizes: SizePolicy) -> EventFilter:
    """Redaction, then the size limits: a secret is found whole, before a cut could leave a
    piece of it too short to recognise, and the limits hold for what is written (a marker may be
    longer than the secret it replaces)."""
    limit = sizes.event_filter()
    redact = redaction.event_filter()
    if redact is None:
        return limit
    return lambda event: limit(redact(event))
