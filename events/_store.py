"""The ``EventStore`` protocol every backend implements, and what the backends share."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import anyio

from ._envelope import RecordedEvent, StreamAppend


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A persistent projection's saved state: the global position it has folded up to, and its
    rows (key to encoded row), stored in the same database as the events."""

    position: int = 0
    rows: dict[str, bytes] = field(default_factory=dict)


class EventStore(Protocol):
    """An append-only log of typed events in streams, with a global, gapless order.

    Use as ``async with store:``. All methods raise ``StoreClosedError`` outside that block.
    """

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        """Append to one or more streams in one atomic transaction; all or nothing.

        Raises ``ConcurrencyError`` when a stream is not at its ``expected_version`` and
        ``DuplicateEventError`` when an event id is already recorded. Returns the recorded
        events in the order given.
        """
        ...

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The stream's events with version greater than ``after``, oldest first."""
        ...

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of all streams with position greater than ``after``, in order."""
        ...

    def subscribe(
        self, *, after: int = 0, poll_interval: float = 0.2
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after position ``after``, then each new one as it commits, forever.

        Appends made through this store object wake the tail at once; appends by other
        processes are seen within ``poll_interval`` seconds.
        """
        ...

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The event with this id, or ``None``: how to settle an append of unknown outcome."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 for a stream with no events)."""
        ...

    async def head_position(self) -> int:
        """The global position of the newest event (0 for an empty store)."""
        ...

    async def load_checkpoint(self, name: str) -> Checkpoint:
        """The saved state of the persistent projection ``name`` (empty if never saved)."""
        ...

    async def save_checkpoint(
        self,
        name: str,
        *,
        expected_position: int,
        position: int,
        rows: Mapping[str, bytes | None],
        reset: bool = False,
    ) -> None:
        """Save a projection's changed rows (``None`` deletes) and new position atomically.

        Raises ``ConcurrencyError`` if the saved position is not ``expected_position`` (another
        runner moved it). ``reset=True`` drops all saved rows first.
        """
        ...

    async def aclose(self) -> None:
        """Close the store; waits for appends in flight."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def checkpoint_stream(name: str) -> str:
    """The stream id a projection's checkpoint is reported under in ``ConcurrencyError``."""
    return f"$projection-{name}"


class StoreBase:
    """What every backend shares: ``async with`` closing through ``aclose``, and ``subscribe``
    for any store with ``read_all`` (page through, then wait for a wake-up).

    Backends call ``_wake_tails()`` after each commit so tails in this process see new events at
    once; the poll interval bounds how late they see other processes' commits.
    """

    _tail_event: anyio.Event | None = None

    def _wake_tails(self) -> None:
        if self._tail_event is not None:
            self._tail_event.set()
            self._tail_event = None

    def _commit_signal(self) -> anyio.Event:
        if self._tail_event is None:
            self._tail_event = anyio.Event()
        return self._tail_event

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def subscribe(
        self, *, after: int = 0, poll_interval: float = 0.2
    ) -> AsyncIterator[RecordedEvent]:
        position = after
        while True:
            # Take the signal before reading, so a commit between the read and the wait wakes us.
            signal = self._commit_signal()
            batch = await self.read_all(after=position, limit=1000)
            for recorded in batch:
                yield recorded
            if batch:
                position = batch[-1].position
                continue
            with anyio.move_on_after(poll_interval if poll_interval > 0 else math.inf):
                await signal.wait()
