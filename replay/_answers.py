"""The ports of a replayed run, answered from its tape.

They have the shape of the engine's ports (see ``agentledger.engine.loop``): a model port, a
tool port, the breakers, the day and key ledgers, a clock, ids and the gate consulted before
every I/O. Each answer is the recorded event of the original answer; the engine places it in the
replayed run's trace as it places a live one. Nothing here calls a model or runs a tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from agentledger.events import (
    EventStore,
    MemoryEventStore,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunStarted,
    StreamAppend,
    SubAgentEnded,
    SubAgentStarted,
    ToolCallIntended,
    ToolCallReconciled,
    ToolCallSucceeded,
    ToolTierFailed,
    ToolTierSkipped,
)
from agentledger.projections._keys import KeyRecord, fold_key
from agentledger.projections._spend import LedgerState, fold_ledger
from agentledger.projections._streams import key_stream, run_stream

from ._divergence import Divergence, stable_fields
from ._tape import Diverged, Interrupted, Interruption, Tape


class ScratchStore(MemoryEventStore):
    """The in-memory store a replay writes to; it knows the replayed run's version, and refuses
    to write past the point where the recorded run crashed (the replay stops there)."""

    def __init__(self, run_id: str, tape: Tape) -> None:
        super().__init__()
        self._stream = run_stream(run_id)
        self._tape = tape
        self.run_version = 0

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        for append in appends:
            if append.stream_id == self._stream and _stops_at(self._tape, self.run_version):
                self._tape.interruptions.popleft()
                raise Interrupted()
        recorded = await super().append(*appends)
        self.run_version = max(
            [r.version for r in recorded if r.stream_id == self._stream], default=self.run_version
        )
        return recorded


def _stops_at(tape: Tape, committed: int) -> bool:
    nxt = tape.interruptions[0] if tape.interruptions else None
    return nxt is not None and nxt.kind == "crash" and nxt.version == committed


class TapeClock:
    """The recorded time: the time of the next event the replayed run is to write."""

    def __init__(self, tape: Tape, scratch: ScratchStore) -> None:
        self._events = tape.events
        self._scratch = scratch

    def now(self) -> datetime:
        index = min(self._scratch.run_version, len(self._events) - 1)
        return self._events[index].event.at

    async def sleep(self, seconds: float) -> None:
        return None  # the recorded back-off already happened


class ReplayIds:
    """Ids ``replay-1``, ``replay-2``, ...: a replay's own ids are not compared."""

    def __init__(self) -> None:
        self._count = 0

    def new_id(self) -> str:
        self._count += 1
        return f"replay-{self._count}"


class TapeModels:
    """Model answers from the tape (the request must be the one recorded), placed in the
    replayed request's span."""

    def __init__(self, tape: Tape, clock: TapeClock) -> None:
        self._tape = tape
        self._clock = clock

    async def attempt(
        self, requested: ModelCallRequested, request: object
    ) -> ModelCallResponded | ModelCallFailed:
        outcome = self._tape.next_attempt(requested.model, requested.request_digest).outcome
        placed = {**_envelope(requested, self._clock), "call_id": requested.call_id}
        if isinstance(outcome, ModelCallFailed):
            placed.update(model=requested.model, attempt=requested.attempt)
        return outcome.model_copy(update=placed)


class TapeTools:
    """Tier outcomes and reconcile findings from the tape, placed in the replayed call's spans;
    no tool runs."""

    def __init__(self, tape: Tape, clock: TapeClock) -> None:
        self._tape = tape
        self._clock = clock

    async def run_tier(
        self, intended: ToolCallIntended, tier: str, args: object, user_id: str, tier_span: str
    ) -> ToolCallSucceeded | ToolTierFailed:
        outcome = self._tape.tier_outcome(intended.call_id, tier)
        placed = {**_envelope(intended, self._clock), "call_id": intended.call_id}
        if isinstance(outcome, ToolTierFailed):
            placed.update(span_id=tier_span, parent_span_id=intended.span_id)
        else:
            placed["idempotency_key"] = intended.idempotency_key
        return outcome.model_copy(update=placed)

    async def reconcile(
        self, intended: ToolCallIntended, args: object, user_id: str
    ) -> ToolCallReconciled:
        found = self._tape.reconciled(intended.call_id)
        placed = {**_envelope(intended, self._clock), "call_id": intended.call_id}
        return found.model_copy(update=placed)


class TapeChildren:
    """Sub-agent runs as they ended when recorded, placed in the replayed call's span; no child
    runs (``Engine.replay`` replays each child from its own log)."""

    def __init__(self, tape: Tape, clock: TapeClock) -> None:
        self._tape = tape
        self._clock = clock

    async def run_child(
        self, started: SubAgentStarted, agent: object, *, user_id: str, surface: str
    ) -> SubAgentEnded | None:
        ended = self._tape.child_outcome(started.call_id)
        if ended is None:
            return None
        placed = {**_envelope(started, self._clock), "call_id": started.call_id}
        return ended.model_copy(update=placed)


class TapeHealth:
    """The breakers as they decided when recorded: a tier is skipped where it was skipped."""

    def __init__(self, tape: Tape) -> None:
        self._tape = tape

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
        return self._tape.skip(call_id, tier)


class LedgerReads:
    """The ledger streams (days, keys) replays read, kept between the runs of a batch.

    A replay folds a ledger as it stood before a recorded position; the events before it never
    change, so a stream read once serves every later run, and only its tail is read again when
    a position past what was read is asked for. Without this, replaying every run of a user
    would read that user's whole day ledger once per model call. The least recently used
    streams are let go past ``max_streams``.
    """

    def __init__(self, store: EventStore, *, max_streams: int = 256) -> None:
        self._store = store
        self._max = max_streams
        self._streams: dict[str, list[RecordedEvent]] = {}

    async def before(self, stream: str, position: int) -> list[RecordedEvent]:
        """The events of ``stream`` with a global position below ``position``."""
        events = self._streams.pop(stream, None)
        if events is None:
            events = await self._store.read_stream(stream)
        elif not events or events[-1].position < position - 1:
            # Events between what was read and ``position`` may have committed since.
            events = events + await self._store.read_stream(
                stream, after=events[-1].version if events else 0
            )
        self._streams[stream] = events  # most recently used last
        if len(self._streams) > self._max:
            del self._streams[next(iter(self._streams))]
        return _before(events, position)


class TapeLedgers:
    """Day ledgers as the store held them when each recorded reservation was decided."""

    def __init__(self, tape: Tape, reads: LedgerReads, scratch: ScratchStore) -> None:
        self._tape = tape
        self._reads = reads
        self._scratch = scratch

    async def day_ledger(self, stream: str) -> LedgerState:
        before = self._tape.ledger_read()
        then = fold_ledger(await self._reads.before(stream, before))
        # Amounts (and an overshoot's closure) as they were; the version is the scratch
        # ledger's, which the replay appends to.
        return replace(then, version=await self._scratch.stream_version(stream))

    def forget(self, stream: str) -> None:
        return None


class TapeKeys:
    """Key ledgers as the store held them when each recorded side effect was decided."""

    def __init__(self, tape: Tape, reads: LedgerReads, scratch: ScratchStore) -> None:
        self._tape = tape
        self._reads = reads
        self._scratch = scratch

    async def key_record(self, key: str, call_id: str) -> KeyRecord:
        before = self._tape.key_read(call_id)
        stream = key_stream(key)
        then = fold_key(await self._reads.before(stream, before))
        return KeyRecord(await self._scratch.stream_version(stream), then.intent, then.outcome)

    def forget(self, key: str) -> None:
        return None


class TapeGate:
    """Stops the replayed run where the recorded one was interrupted: before the first I/O once
    the log stands where the recorded crash left it, or a cancellation at the version the
    recorded one struck."""

    def __init__(self, tape: Tape) -> None:
        self._tape = tape

    def before_io(self, committed: int, version: int) -> str | None:
        interruptions = self._tape.interruptions
        nxt = interruptions[0] if interruptions else None
        if nxt is None:
            return None
        if nxt.kind == "crash" and nxt.version == committed:
            interruptions.popleft()
            raise Interrupted()
        if nxt.kind == "cancel" and nxt.version == version:
            interruptions.popleft()
            return nxt.reason
        return None


@dataclass
class TapeAnswers:
    """Every port of a replayed run, answered from ``tape``."""

    run_id: str
    tape: Tape
    store: EventStore
    scratch: ScratchStore
    reads: LedgerReads | None = None
    """Ledger streams already read (shared by the runs of a batch); a new one by default."""
    clock: TapeClock = field(init=False)
    ids: ReplayIds = field(init=False)
    models: TapeModels = field(init=False)
    tools: TapeTools = field(init=False)
    health: TapeHealth = field(init=False)
    ledgers: TapeLedgers = field(init=False)
    keys: TapeKeys = field(init=False)
    gate: TapeGate = field(init=False)
    children: TapeChildren = field(init=False)

    def __post_init__(self) -> None:
        self.clock = TapeClock(self.tape, self.scratch)
        self.ids = ReplayIds()
        self.models = TapeModels(self.tape, self.clock)
        self.tools = TapeTools(self.tape, self.clock)
        self.health = TapeHealth(self.tape)
        if self.reads is None:
            self.reads = LedgerReads(self.store)
        self.ledgers = TapeLedgers(self.tape, self.reads, self.scratch)
        self.keys = TapeKeys(self.tape, self.reads, self.scratch)
        self.gate = TapeGate(self.tape)
        self.children = TapeChildren(self.tape, self.clock)

    def check_start(self, started: RunStarted) -> None:
        """Raise the divergence if the replayed run starts otherwise than recorded (another
        agent, model, prompt or task). A run writes nothing before its first model reply, so
        without this check a changed prompt would first show as a changed model request."""
        recorded = self.tape.events[0]
        want, got = stable_fields(recorded.event), stable_fields(started)
        if want != got:
            fields = ", ".join(
                sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            )
            raise Diverged(
                Divergence(recorded.version, want, got, f"run_started differs in {fields}")
            )

    def next_interruption(self) -> Interruption | None:
        """Where the recorded run was interrupted next, if anywhere."""
        return self.tape.interruptions[0] if self.tape.interruptions else None


def _envelope(
    event: ModelCallRequested | ToolCallIntended | SubAgentStarted, clock: TapeClock
) -> dict[str, Any]:
    """The envelope of an answer to ``event``, in its span, at the recorded time."""
    return {
        "run_id": event.run_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id,
        "at": clock.now(),
    }


def _before(events: Sequence[RecordedEvent], position: int) -> list[RecordedEvent]:
    return [r for r in events if r.position < position]
