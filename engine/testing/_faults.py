"""``FaultyStore``: any ``EventStore`` with faults injected at chosen operations.

A fault names a kind of operation (``append``, ``read``, ``checkpoint`` or ``any``), the Nth such
operation over the wrapper's life, how many times it fails from there (once, a few times, or for
good) and what it raises: one of the store's own typed errors (``StoreUnavailableError`` by
default, ``StorageFullError`` for a full disk), or ``SimulatedCrash``, a ``BaseException`` that
nothing in the engine catches, as if the process died there. An append may also fail *after* it
committed (``after_commit=True``): the caller sees an error for events that are in the store,
which is what a connection lost during ``COMMIT`` looks like.

The wrapper counts every operation by kind and keeps what it injected and every event whose
append it acknowledged, so a test can check that nothing acknowledged was lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Self

from agentledger.events import (
    Checkpoint,
    EventStore,
    RecordedEvent,
    StoreUnavailableError,
    StreamAppend,
)
from agentledger.events._store import StoreBase

OperationKind = Literal["append", "read", "checkpoint"]
"""What a store operation does: append events, read (events, versions, positions or a saved
checkpoint), or save a projection's checkpoint."""

FaultTarget = Literal["append", "read", "checkpoint", "any"]
"""Which operations a fault counts: one kind, or all of them."""

ErrorSource = BaseException | type[BaseException] | Callable[[], BaseException]
"""What a fault raises: an exception (raised as is), or a class or factory called per fault."""


class SimulatedCrash(BaseException):
    """Raised when a ``FaultyStore`` simulates the process dying at a store operation.

    A ``BaseException``, like the ``KeyboardInterrupt`` or ``SystemExit`` of a dying process:
    the engine records model and tool failures from ``Exception`` only, so nothing between the
    store and the test catches it, and whatever was staged and not written is lost.
    """


@dataclass(frozen=True, slots=True)
class Fault:
    """Fail the ``at``-th operation of kind ``on`` (1-based, counted over the wrapper's life).

    ``times`` is how many operations of that kind fail from there on (``None``: every one, for
    good). ``error`` is what they raise (default: ``StoreUnavailableError``). With
    ``after_commit=True`` a failing append is made first and the error raised after it
    committed; reads and checkpoints always fail before they reach the store.
    """

    on: FaultTarget
    at: int
    times: int | None = 1
    error: ErrorSource | None = None
    after_commit: bool = False

    def __post_init__(self) -> None:
        if self.on not in ("append", "read", "checkpoint", "any"):
            raise ValueError(
                f"a fault is on 'append', 'read', 'checkpoint' or 'any', not {self.on!r}"
            )
        if self.at < 1:
            raise ValueError(f"operations are counted from 1; a fault at {self.at} never fires")
        if self.times is not None and self.times < 1:
            raise ValueError("a fault fails at least one operation (times=None: for good)")

    def fires(self, nth: int) -> bool:
        """Whether the ``nth`` operation this fault counts fails."""
        return nth >= self.at and (self.times is None or nth < self.at + self.times)

    def make_error(self, description: str) -> BaseException:
        """The exception for one failing operation (``description`` names it)."""
        source = self.error
        if source is None:
            return StoreUnavailableError(f"injected fault: {description} failed")
        if isinstance(source, BaseException):
            return source
        if isinstance(source, type):
            made: BaseException = source(f"injected fault: {description}")
            return made
        return source()


@dataclass(frozen=True, slots=True)
class Injected:
    """One fault the wrapper injected: which operation (method, kind and its count, and its
    count among all operations), what it raised, and whether the append had committed."""

    method: str
    kind: OperationKind
    nth: int
    overall: int
    error: BaseException
    committed: bool = False


class FaultyStore(StoreBase):
    """An ``EventStore`` that passes everything to ``store`` except the operations ``fail`` names.

    ``FaultyStore(store, fail=Fault("append", at=3))`` makes the third append raise
    ``StoreUnavailableError`` once; ``Fault("read", at=5, times=None)`` fails every read from the
    fifth on; ``Fault("any", at=7, error=SimulatedCrash)`` dies at the seventh operation of any
    kind. Reads are ``read_stream``, ``read_all``, ``get_event``, ``stream_version``,
    ``head_position`` and ``load_checkpoint``; ``subscribe`` reads through this wrapper too.
    ``aclose`` and ``async with`` pass through (closing the wrapper closes ``store``).

    ``counts`` has how many operations of each kind were asked for (failed ones included),
    ``injected`` each fault raised, in order, and ``acknowledged`` every event of every append
    that returned to its caller. ``healthy = True`` turns every fault off.
    """

    def __init__(self, store: EventStore, fail: Fault | Sequence[Fault] = ()) -> None:
        self.inner = store
        """The wrapped store."""
        self.faults: tuple[Fault, ...] = (fail,) if isinstance(fail, Fault) else tuple(fail)
        self.counts: Counter[str] = Counter()
        """Operations asked for, by kind (``append``, ``read``, ``checkpoint``) and ``any``."""
        self.injected: list[Injected] = []
        self.acknowledged: list[RecordedEvent] = []
        self.healthy = False
        """Set to stop injecting faults (the counts go on)."""

    # -- the fault machinery ---------------------------------------------------------------------

    def _fault(self, kind: OperationKind) -> tuple[Fault | None, int, int]:
        """Count one operation of ``kind``; the fault that fires on it, if any, and the counts."""
        self.counts[kind] += 1
        self.counts["any"] += 1
        nth, overall = self.counts[kind], self.counts["any"]
        if self.healthy:
            return None, nth, overall
        for fault in self.faults:
            counted = overall if fault.on == "any" else nth if fault.on == kind else 0
            if counted and fault.fires(counted):
                return fault, nth, overall
        return None, nth, overall

    def _raise(
        self,
        fault: Fault,
        method: str,
        kind: OperationKind,
        nth: int,
        overall: int,
        *,
        committed: bool = False,
    ) -> None:
        error = fault.make_error(f"{method} (the {_ordinal(nth)} {kind})")
        self.injected.append(Injected(method, kind, nth, overall, error, committed))
        raise error

    def _before(self, method: str, kind: OperationKind) -> None:
        fault, nth, overall = self._fault(kind)
        if fault is not None:
            self._raise(fault, method, kind, nth, overall)

    # -- EventStore ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def aclose(self) -> None:
        await self.inner.aclose()
        self._wake_tails()

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        fault, nth, overall = self._fault("append")
        if fault is not None and not fault.after_commit:
            self._raise(fault, "append", "append", nth, overall)
        recorded = await self.inner.append(*appends)
        self._wake_tails()
        if fault is not None:
            self._raise(fault, "append", "append", nth, overall, committed=True)
        self.acknowledged.extend(recorded)
        return recorded

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        self._before("read_stream", "read")
        return await self.inner.read_stream(stream_id, after=after, limit=limit)

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self._before("read_all", "read")
        return await self.inner.read_all(after=after, limit=limit)

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        self._before("get_event", "read")
        return await self.inner.get_event(event_id)

    async def stream_version(self, stream_id: str) -> int:
        self._before("stream_version", "read")
        return await self.inner.stream_version(stream_id)

    async def head_position(self) -> int:
        self._before("head_position", "read")
        return await self.inner.head_position()

    async def load_checkpoint(self, name: str) -> Checkpoint:
        self._before("load_checkpoint", "read")
        return await self.inner.load_checkpoint(name)

    async def save_checkpoint(
        self,
        name: str,
        *,
        expected_position: int,
        position: int,
        rows: Mapping[str, bytes | None],
        reset: bool = False,
    ) -> None:
        self._before("save_checkpoint", "checkpoint")
        await self.inner.save_checkpoint(
            name, expected_position=expected_position, position=position, rows=rows, reset=reset
        )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _is_an_event_store(store: FaultyStore) -> EventStore:
    # mypy checks here that the wrapper has every method of the protocol it stands in for.
    return store
