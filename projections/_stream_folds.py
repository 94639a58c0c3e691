"""``StreamFolds``: folds of single streams, kept up to date by reading only what is new.

The engine reads other streams than the run it drives: a user's day ledger before reserving
budget, a key's ledger before a side effect. Each read folds the events appended since the last
one onto the state it had, so a busy ledger costs a short read per decision, not a full one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from agentledger.events import EventStore, RecordedEvent


class Versioned(Protocol):
    """A stream fold's state: it knows the stream version it has folded."""

    @property
    def version(self) -> int: ...


S = TypeVar("S", bound=Versioned)


class StreamFolds(Generic[S]):
    """Folds of many streams with one fold function, read incrementally from ``store``.

    ``fold(events, state)`` folds a stream's events onto ``state`` (``None``: from empty), as
    ``fold_ledger`` and ``fold_key`` do. ``current(stream)`` is the fold as the store holds it
    now; ``forget(stream)`` notes a state proven behind (an append expecting its version failed).
    """

    def __init__(
        self,
        store: EventStore,
        fold: Callable[[Sequence[RecordedEvent], S | None], S],
        *,
        max_streams: int = 10_000,
    ) -> None:
        self._store = store
        self._fold = fold
        self._max_streams = max_streams
        self._states: dict[str, S] = {}

    async def current(self, stream: str) -> S:
        """The fold of ``stream`` as it is in the store now."""
        # Left in place while reading: a concurrent reader of the same stream (runs of one user
        # reserving at once) reads on from it instead of from the stream's start.
        known = self._states.get(stream)
        after = known.version if known is not None else 0
        fresh = await self._store.read_stream(stream, after=after)
        state = self._fold(fresh, known) if fresh or known is None else known
        latest = self._states.pop(stream, None)
        if latest is not None and latest.version > state.version:
            state = latest  # another reader went further meanwhile
        if len(self._states) >= self._max_streams:
            del self._states[next(iter(self._states))]  # the least recently read
        self._states[stream] = state
        return state

    def forget(self, stream: str) -> None:
        """Note that the state of ``stream`` is behind the store (an append expecting its
        version failed). The state is kept: it is the fold of the stream's first ``version``
        events, which never change, so the next ``current`` reads only what came after it. (A
        whole re-read here made every lost race of a busy ledger cost its whole length.)"""
        return None
