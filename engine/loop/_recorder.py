"""The recorder: the only writer of a run's stream.

Steps stage their events here; the recorder passes each through its filter (``admit``: size
limits, redaction), folds them at once (``state`` is always the state of
everything staged) and writes them in as few commits as the run's safety allows, each with the
run's expected version, so two processes driving one run cannot both write. What may wait for a
later write, and what may not, is one rule (``must_flush``):

- the answers of ports (a model's reply or error, a tool's result, a reconcile hook's finding,
  budget settlements, a back-off's deadline) are durable before any port is asked anything
  else: a crash never loses an answer that a later step built on;
- a side effect's intent, a claim on one in doubt, and every verdict read from a key's ledger
  are durable before any tool runs;
- everything else (announcements such as a turn's start or a model request, tier failures,
  decisions a fold would make again the same way) rides along with the next write.

A write whose outcome is unknown (cut off by a cancellation) is settled by looking its first
event up, never by writing it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from agentledger.engine._errors import RunConflictError, RunExistsError
from agentledger.events import (
    ConcurrencyError,
    Event,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    ToolArgumentsRejected,
    ToolCallIntended,
    ToolOutcomeUnknown,
    ToolResultReused,
)
from agentledger.projections._run_state import RunState, evolve_run, fold_run
from agentledger.projections._streams import run_stream

from ._ports import IdSource

_ANSWERS = frozenset(
    {
        "model_call_responded",
        "model_call_failed",
        "model_call_retried",
        "tool_call_succeeded",
        "tool_call_reconciled",
        "budget_settled",
        "budget_released",
        "sub_agent_ended",
    }
)
"""Events that record what a port answered, money that moved, or a back-off's deadline: durable
before the next I/O (a crash during a back-off resumes with the time left, not a new wait)."""


def _claims(event: Event) -> bool:
    """Whether ``event`` claims a side effect or records what a key's ledger said: durable
    before any tool runs (so no later write can leave a key's verdict behind, and a replay that
    stops where a crash did never reads a ledger the recording read again)."""
    if isinstance(event, ToolCallIntended | ToolResultReused | ToolOutcomeUnknown):
        return event.idempotency_key is not None
    if isinstance(event, ToolArgumentsRejected):
        return event.error_type == "idempotency_conflict"
    # A sub-agent's start names the child run it owns: durable before the child writes.
    return event.type in ("tool_call_claimed", "sub_agent_started")


EventFilter = Callable[[Event], Event]
"""Applied to every event before it is folded and written (size limits, redaction): the log and
the state hold what it returns. It must give back an event unchanged when it has nothing to do,
and the same event when given its own result."""


class _Staged(NamedTuple):
    """What one step staged, and the run's state after it."""

    events: list[NewEvent]
    others: tuple[StreamAppend, ...]
    state: RunState


class Recorder:
    """Stages, folds and appends the events of one run's session."""

    def __init__(
        self,
        store: EventStore,
        ids: IdSource,
        state: RunState,
        publish: Callable[[Sequence[RecordedEvent]], None],
        admit: EventFilter | None = None,
    ) -> None:
        self._store = store
        self._ids = ids
        self._publish = publish
        self._admit = admit
        self.state = state
        """The run as of everything staged (what ``decide`` looks at)."""
        self.committed = state.version
        """The run's version in the store: the expected version of the next write."""
        self._committed_state = state
        self._staged: list[_Staged] = []
        # How many staged steps must be written before any I/O, and before a tool runs.
        self._before_io = 0
        self._before_tools = 0
        self._in_flight: str | None = None

    @property
    def stream(self) -> str:
        """The run's stream."""
        return run_stream(self.state.run_id)

    def stage(self, events: Sequence[Event], *others: StreamAppend) -> None:
        """Add events (and appends to other streams, written atomically with them) to a later
        write, and fold them in."""
        state = self.state
        staged: list[NewEvent] = []
        answers = claims = False
        admitted = self._admitted(events)
        for event in admitted:
            state = evolve_run(state, event, state.version + 1)
            staged.append(NewEvent(event, self._ids.new_id()))
            if event.type in _ANSWERS:
                answers = True
            elif _claims(event):
                claims = True
        self.state = state
        self._staged.append(_Staged(staged, self._admit_others(others, events, admitted), state))
        if answers:
            self._before_io = self._before_tools = len(self._staged)
        elif claims:
            self._before_tools = len(self._staged)

    def must_flush(self, *, executes: bool | None) -> bool:
        """Whether some staged events must be durable before an I/O (``executes``: a tool or a
        reconcile hook runs), or (``None``) whether anything is staged at all."""
        return self._needed(executes) > 0

    def _needed(self, executes: bool | None) -> int:
        """How many staged steps must be written before that I/O (what follows may wait)."""
        if executes is None:
            return len(self._staged)
        return self._before_tools if executes else self._before_io

    async def flush(self, *, executes: bool | None = None) -> None:
        """Write staged events in one atomic append: all of them, or (``executes`` given) those
        that must be durable before that I/O (nothing to write: no I/O)."""
        count = self._needed(executes)
        if count:
            await self._write(count, [], ())

    async def commit(self, events: Sequence[Event], *others: StreamAppend) -> None:
        """Write everything staged plus ``events`` (and ``others``) in one atomic append.

        If the append fails, nothing of ``events`` is kept and the staged events stay staged
        (a ``ConcurrencyError`` on another stream is the caller's to handle, e.g. by reading
        that ledger again).
        """
        await self._write(len(self._staged), events, others)

    async def _write(
        self, count: int, events: Sequence[Event], others: Sequence[StreamAppend]
    ) -> None:
        written = self._staged[:count]
        new = [event for staged in written for event in staged.events]
        appends = [append for staged in written for append in staged.others]
        state = written[-1].state if written else self._committed_state
        admitted = self._admitted(events)
        for event in admitted:
            state = evolve_run(state, event, state.version + 1)
            new.append(NewEvent(event, self._ids.new_id()))
        others = self._admit_others(others, events, admitted)
        run = StreamAppend(self.stream, new, expected_version=self.committed)
        self._in_flight = new[0].event_id
        try:
            recorded = await self._store.append(run, *_merged([*appends, *others]))
        except ConcurrencyError as exc:
            self._in_flight = None
            if exc.stream_id != run.stream_id:
                raise
            if self.committed == 0:
                message = f"run {self.state.run_id!r} already exists; use resume()"
                raise RunExistsError(message) from None
            raise RunConflictError(
                f"run {self.state.run_id!r} changed meanwhile (is another engine driving it?); "
                "load it and try again"
            ) from exc
        self._in_flight = None
        del self._staged[:count]
        self._before_io = max(self._before_io - count, 0)
        self._before_tools = max(self._before_tools - count, 0)
        self._committed_state = state
        self.committed = state.version
        if not self._staged:
            self.state = state
        self._publish(recorded)

    def _admitted(self, events: Sequence[Event]) -> Sequence[Event]:
        """``events`` through the filter."""
        admit = self._admit
        return events if admit is None else [admit(event) for event in events]

    def _admit_others(
        self, others: Sequence[StreamAppend], events: Sequence[Event], admitted: Sequence[Event]
    ) -> tuple[StreamAppend, ...]:
        """The appends to other streams (a key's ledger holds a call's arguments and result)
        with their events through the filter too: the very event of the run's stream when it
        is one of ``events``, so a ledger and the run never disagree."""
        admit = self._admit
        if admit is None or not others:
            return tuple(others)
        known = {id(event): done for event, done in zip(events, admitted, strict=True)}
        return tuple(
            StreamAppend(
                append.stream_id,
                [
                    NewEvent(known.get(id(new.event)) or admit(new.event), new.event_id)
                    for new in append.events
                ],
                append.expected_version,
            )
            for append in others
        )

    async def settle(self) -> None:
        """After a write was cut off (cancelled), learn whether it committed; if it did, the
        run is read back (and what was staged after that write is dropped)."""
        event_id, self._in_flight = self._in_flight, None
        if event_id is None or await self._store.get_event(event_id) is None:
            return
        state = fold_run(await self._store.read_stream(self.stream))
        self._staged = []
        self._before_io = self._before_tools = 0
        self.state = self._committed_state = state
        self.committed = state.version

    def discard(self) -> None:
        """Drop what is staged: the run goes back to its last write."""
        self._staged = []
        self._before_io = self._before_tools = 0
        self.state = self._committed_state


def _merged(appends: Sequence[StreamAppend]) -> list[StreamAppend]:
    """One append per stream: several outcomes may go to one ledger stream in one write."""
    if len(appends) < 2:
        return list(appends)
    by_stream: dict[str, StreamAppend] = {}
    for append in appends:
        known = by_stream.get(append.stream_id)
        if known is None:
            by_stream[append.stream_id] = append
        else:
            by_stream[append.stream_id] = StreamAppend(
                append.stream_id,
                [*known.events, *append.events],
                known.expected_version
                if known.expected_version is not None
                else append.expected_version,
            )
    return list(by_stream.values())
