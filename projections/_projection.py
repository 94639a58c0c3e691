"""The projection contract: a pure fold of recorded events, plain or keyed into rows.

A ``Projection[S]`` is ``initial()`` and ``evolve(state, recorded)``; ``fold`` runs it over
events. A ``KeyedProjection[R]`` is the shape persistent projections take: its state is a dict of
rows (one per key, e.g. one per run), and it knows how to turn a row into bytes and back, so a
``ProjectionRunner`` can save only the rows an event touched.

Folding a keyed projection one event at a time through an immutable row means building a new row
per event, which costs as much as decoding the event. A keyed projection may therefore also offer
the ``AccumulatingProjection`` fast path: ``thaw`` a row into a private mutable accumulator,
``accumulate`` events into it in place, ``freeze`` it back into a row once per batch
(``RowFolder``; a runner's batch spans up to ``save_every`` events). The accumulator never
escapes the folder, so ``fold`` and ``evolve`` stay pure for their callers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar, overload, runtime_checkable

from agentledger.events import RecordedEvent

S = TypeVar("S")
R = TypeVar("R")
A = TypeVar("A")


class ProjectionError(Exception):
    """Raised for any failure of a projection or its runner (the root of this package's tree)."""


class RowDecodeError(ProjectionError):
    """Raised when a saved row of a persistent projection cannot be decoded (rebuild it)."""

    def __init__(self, projection: str, key: str, reason: str) -> None:
        self.projection = projection
        self.key = key
        super().__init__(f"cannot decode row {key!r} of projection {projection!r}: {reason}")


class RunnerClosedError(ProjectionError):
    """Raised when a projection runner is used outside its ``async with`` block."""


@runtime_checkable
class Projection(Protocol[S]):
    """A pure fold: ``state = evolve(state, recorded)`` from ``initial()``.

    ``evolve`` does no I/O, reads no clock and never mutates the state it is given: it returns a
    new state, or the same object when the event changes nothing.
    """

    def initial(self) -> S:
        """The state before any event."""
        ...

    def evolve(self, state: S, recorded: RecordedEvent) -> S:
        """The state after ``recorded``; ``state`` is left as it was."""
        ...


@runtime_checkable
class BatchProjection(Projection[S], Protocol[S]):
    """A projection that can fold many events at once faster than one ``evolve`` at a time.

    ``evolve_all(state, events)`` must equal folding ``evolve`` over ``events``; ``fold`` uses it
    when present.
    """

    def evolve_all(self, state: S, events: Iterable[RecordedEvent]) -> S:
        """The state after all of ``events``; ``state`` is left as it was."""
        ...


@runtime_checkable
class KeyedProjection(Protocol[R]):
    """A projection kept as rows, one per key; the shape of every persistent projection.

    ``key`` names the row an event touches (``None``: the event does not concern this
    projection). ``evolve_row`` is pure like ``Projection.evolve``; it gets ``None`` for a row
    that does not exist and returns ``None`` to delete it. Rows are saved as ``encode_row`` bytes
    under ``name``.
    """

    @property
    def name(self) -> str:
        """The name its checkpoint is saved under; unique per store."""
        ...

    def key(self, recorded: RecordedEvent) -> str | None:
        """The key of the row ``recorded`` touches, or ``None`` to ignore it."""
        ...

    def evolve_row(self, row: R | None, recorded: RecordedEvent) -> R | None:
        """The row after ``recorded`` (``None``: no such row); ``row`` is left as it was."""
        ...

    def encode_row(self, row: R) -> bytes:
        """The row as saved."""
        ...

    def decode_row(self, data: bytes) -> R:
        """A row back from ``encode_row`` bytes."""
        ...


@runtime_checkable
class AccumulatingProjection(KeyedProjection[R], Protocol[R, A]):
    """A keyed projection with a mutable fast path for folding batches.

    ``accumulate(thaw(row), recorded)`` followed by ``freeze`` must equal ``evolve_row(row,
    recorded)``. ``thaw`` copies, so the frozen row is never touched; ``accumulate`` may change
    the accumulator in place and returns it (or a new one, or ``None`` to delete the row).
    """

    def thaw(self, row: R) -> A:
        """A private, mutable copy of ``row``."""
        ...

    def accumulate(self, acc: A | None, recorded: RecordedEvent) -> A | None:
        """Fold ``recorded`` into ``acc`` (``None``: no row yet), in place where it can."""
        ...

    def freeze(self, acc: A) -> R:
        """The immutable row for an accumulator."""
        ...


_MISSING: Any = object()


def _identity(value: Any) -> Any:
    return value


class RowFolder(Generic[R]):
    """Folds batches of events into a dict of rows, keeping the rows it touches thawed.

    ``fold`` may be called many times; the rows dict is brought up to date only by ``flush``,
    which freezes every touched row once and returns the keys whose row changed. So a run with
    events on every page costs one thaw and one freeze per flush, not one per page or per
    event. Rows are never mutated, only replaced in the dict. Projections without the
    accumulator fast path fold through ``evolve_row`` (thaw and freeze are then the identity).
    """

    def __init__(self, projection: KeyedProjection[R], rows: dict[str, R]) -> None:
        self.rows = rows
        self._key = projection.key
        self._thaw: Callable[[R], Any]
        self._accumulate: Callable[[Any, RecordedEvent], Any]
        self._freeze: Callable[[Any], R]
        if isinstance(projection, AccumulatingProjection):
            self._thaw = projection.thaw
            self._accumulate = projection.accumulate
            self._freeze = projection.freeze
            self._in_place = True
        else:
            self._thaw = self._freeze = _identity
            self._accumulate = projection.evolve_row
            self._in_place = False
        self._hot: dict[str, Any] = {}

    def fold(self, events: Iterable[RecordedEvent]) -> None:
        """Fold ``events`` into the thawed rows (``rows`` changes at the next ``flush``)."""
        # The hot loop of every persistent projection: a key lookup and an in-place update.
        key_of = self._key
        accumulate = self._accumulate
        hot = self._hot
        rows = self.rows
        for recorded in events:
            key = key_of(recorded)
            if key is None:
                continue
            acc = hot.get(key, _MISSING)
            if acc is _MISSING:
                row = rows.get(key)
                acc = None if row is None else self._thaw(row)
            hot[key] = accumulate(acc, recorded)

    def flush(self) -> set[str]:
        """Freeze the touched rows into ``rows``; the keys whose row changed (or was deleted)."""
        changed: set[str] = set()
        rows = self.rows
        freeze = self._freeze
        for key, acc in self._hot.items():
            if acc is None:
                if rows.pop(key, None) is not None:
                    changed.add(key)
            elif self._in_place or acc is not rows.get(key):
                rows[key] = freeze(acc)
                changed.add(key)
        self._hot.clear()
        return changed

    def discard(self) -> None:
        """Forget what was folded since the last ``flush``."""
        self._hot.clear()


def fold_rows(
    projection: KeyedProjection[R], rows: dict[str, R], events: Iterable[RecordedEvent]
) -> set[str]:
    """Fold ``events`` into ``rows`` in place and return the keys whose row changed.

    The rows themselves are never mutated, only replaced in the dict. Callers that must stay
    pure pass a copy of their dict.
    """
    folder = RowFolder(projection, rows)
    folder.fold(events)
    return folder.flush()


class KeyedFold(BatchProjection[dict[str, R]]):
    """A ``KeyedProjection`` seen as a ``Projection`` over its whole state, ``{key: row}``.

    ``evolve`` copies the dict only when the event changes a row (copy-on-write), which costs a
    dict copy per such event; ``evolve_all`` copies it once per batch, so ``fold`` uses that.
    """

    def __init__(self, projection: KeyedProjection[R]) -> None:
        self.projection = projection

    def initial(self) -> dict[str, R]:
        """No rows."""
        return {}

    def evolve(self, state: dict[str, R], recorded: RecordedEvent) -> dict[str, R]:
        """The rows after ``recorded``: ``state`` itself if unchanged, else a new dict."""
        key = self.projection.key(recorded)
        if key is None:
            return state
        old = state.get(key)
        new = self.projection.evolve_row(old, recorded)
        if new is old:
            return state
        after = dict(state)
        if new is None:
            after.pop(key, None)
        else:
            after[key] = new
        return after

    def evolve_all(self, state: dict[str, R], events: Iterable[RecordedEvent]) -> dict[str, R]:
        """The rows after all of ``events``, in a new dict."""
        after = dict(state)
        fold_rows(self.projection, after, events)
        return after


@overload
def fold(
    projection: KeyedProjection[R],
    events: Iterable[RecordedEvent],
    state: Mapping[str, R] | None = None,
) -> dict[str, R]: ...


@overload
def fold(
    projection: Projection[S], events: Iterable[RecordedEvent], state: S | None = None
) -> S: ...


def fold(projection: Any, events: Iterable[RecordedEvent], state: Any = None) -> Any:
    """Fold ``events`` into ``state`` (default ``projection.initial()``) and return the result.

    A ``KeyedProjection`` is folded as its ``KeyedFold``: the state is ``{key: row}``. The given
    state is never mutated, so ``fold(p, ys, fold(p, xs)) == fold(p, xs + ys)`` and ``fold(p, xs)``
    can be kept while folding on.
    """
    if isinstance(projection, KeyedProjection):
        rows: dict[str, Any] = {} if state is None else dict(state)
        fold_rows(projection, rows, events)
        return rows
    if state is None:
        state = projection.initial()
    if isinstance(projection, BatchProjection):
        return projection.evolve_all(state, events)
    evolve = projection.evolve
    for recorded in events:
        state = evolve(state, recorded)
    return state
