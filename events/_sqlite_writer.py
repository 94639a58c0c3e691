"""The SQLite store's write side: one plain ``sqlite3`` connection that commits whole batches.

Everything here runs in a worker thread (the store serialises calls with a ``CapacityLimiter(1)``),
so a batch costs one thread hop however many appends it carries: ``BEGIN IMMEDIATE``, one query
for the head position and every stream's version, one ``executemany`` and ``COMMIT``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from os import PathLike

import orjson

from ._envelope import StreamAppend
from ._errors import ConcurrencyError, DuplicateEventError, EventStoreError, StoreClosedError
from ._sqlite_sql import (
    CHECKPOINT_DELETE_ROW,
    CHECKPOINT_POSITION,
    CHECKPOINT_RESET,
    CHECKPOINT_SET_POSITION,
    CHECKPOINT_UPSERT_ROW,
    FIND_EVENT_IDS,
    INSERT_EVENTS,
    READ_HEADS,
    Synchronous,
    connection_pragmas,
    create_schema,
    rollback_quietly,
)
from ._store import checkpoint_stream

WAL_BACKSTOP_PAGES = 10_000

# (event_id, type, schema_version, encoded event), made by the caller before it queues.
PreparedEvent = tuple[str, str, int, bytes]
# (position, stream_id, version, event_id, type, schema_version, recorded_at, data)
EventRow = tuple[int, str, int, str, str, int, int, bytes]


class PendingAppend:
    """One ``append`` call as the writer sees it: prepared rows in, outcome out.

    The caller fills ``appends``, ``checks`` (stream, expected version, event count per
    ``StreamAppend``) and ``events``. The writer thread sets either ``error`` (this call alone
    failed: a version conflict or a duplicate id) or ``first_position`` and ``first_versions``.
    """

    __slots__ = (
        "appends",
        "cancelled",
        "checks",
        "error",
        "events",
        "first_position",
        "first_versions",
    )

    def __init__(
        self,
        appends: Sequence[StreamAppend],
        checks: list[tuple[str, int | None, int]],
        events: list[PreparedEvent],
    ) -> None:
        self.appends = appends
        self.checks = checks
        self.events = events
        self.cancelled = False
        self.error: EventStoreError | None = None
        self.first_position = 0
        self.first_versions: list[int] = []


class Planned:
    """The rows one pending append will insert and the stream heads it moves."""

    __slots__ = ("heads", "rows")

    def __init__(self, rows: list[EventRow], heads: dict[str, int]) -> None:
        self.rows = rows
        self.heads = heads


def plan(
    pending: PendingAppend, position: int, heads: dict[str, int | None], recorded_at: int
) -> Planned | None:
    """Number one append after ``position`` against ``heads``; ``None`` (and ``pending.error``
    set) when an expected version does not hold."""
    if len(pending.checks) == 1:
        return _plan_one_stream(pending, position, heads, recorded_at)
    moved: dict[str, int] = {}
    firsts: list[int] = []
    for stream_id, expected, count in pending.checks:
        current = moved.get(stream_id)
        if current is None:
            current = heads.get(stream_id) or 0
        if expected is not None and expected != current:
            pending.error = ConcurrencyError(stream_id, expected, current)
            return None
        firsts.append(current + 1)
        moved[stream_id] = current + count
    rows: list[EventRow] = []
    events = pending.events
    index = 0
    for (stream_id, _, count), first in zip(pending.checks, firsts, strict=True):
        for offset in range(count):
            event_id, event_type, schema_version, data = events[index]
            index += 1
            rows.append(
                (
                    position + index,
                    stream_id,
                    first + offset,
                    event_id,
                    event_type,
                    schema_version,
                    recorded_at,
                    data,
                )
            )
    pending.error = None
    pending.first_position = position + 1
    pending.first_versions = firsts
    return Planned(rows, moved)


def _plan_one_stream(
    pending: PendingAppend, position: int, heads: dict[str, int | None], recorded_at: int
) -> Planned | None:
    # The common case, kept lean: it runs for nearly every append of every batch.
    stream_id, expected, count = pending.checks[0]
    current = heads.get(stream_id) or 0
    if expected is not None and expected != current:
        pending.error = ConcurrencyError(stream_id, expected, current)
        return None
    pending.error = None
    pending.first_position = position + 1
    pending.first_versions = [current + 1]
    rows = [
        (position + i, stream_id, current + i, event_id, event_type, schema, recorded_at, data)
        for i, (event_id, event_type, schema, data) in enumerate(pending.events, 1)
    ]
    return Planned(rows, {stream_id: current + count})


class SqliteWriter:
    """The write connection. Not thread-safe: the store calls it from one thread at a time."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        busy_timeout: float,
        synchronous: Synchronous,
        max_page_count: int | None,
    ) -> None:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            for pragma in connection_pragmas(busy_timeout, synchronous):
                conn.execute(pragma)
            # The store checkpoints from another connection; this is only the backstop.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_BACKSTOP_PAGES * 4096}")
            if max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count = {int(max_page_count)}")
            create_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosedError("the SQLite store is closed")
        return self._conn

    def write_batch(self, batch: list[PendingAppend], recorded_at: int) -> int:
        """Commit every append of ``batch`` whose checks hold, in one transaction.

        Returns how many events were committed. An append that fails alone gets its ``error``;
        an ``sqlite3.Error`` escaping from here means nothing of the batch was committed.
        """
        conn = self._connection()
        streams = _streams_of(batch)
        conn.execute("BEGIN IMMEDIATE")
        try:
            position, heads = _read_heads(conn, streams)
            rows: list[EventRow] = []
            for pending in batch:
                planned = plan(pending, position, heads, recorded_at)
                if planned is not None:
                    rows += planned.rows
                    heads.update(planned.heads)
                    position += len(planned.rows)
            _prefer_duplicates(conn, batch)
            if rows:
                try:
                    conn.executemany(INSERT_EVENTS, rows)
                except sqlite3.IntegrityError:
                    # A duplicate event id, stored before or earlier in this batch: redo the
                    # batch one append at a time so only the offending appends fail.
                    conn.execute("ROLLBACK")
                    return self._write_one_by_one(conn, batch, streams, recorded_at)
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        return len(rows)

    def _write_one_by_one(
        self,
        conn: sqlite3.Connection,
        batch: list[PendingAppend],
        streams: list[str],
        recorded_at: int,
    ) -> int:
        conn.execute("BEGIN IMMEDIATE")
        position, heads = _read_heads(conn, streams)
        written = 0
        for pending in batch:
            planned = plan(pending, position, heads, recorded_at)
            if planned is None:
                _prefer_duplicates(conn, [pending])
                continue
            conn.execute("SAVEPOINT one_append")
            try:
                conn.executemany(INSERT_EVENTS, planned.rows)
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO one_append")
                conn.execute("RELEASE one_append")
                ids = [event[0] for event in pending.events]
                found = _stored_ids(conn, ids)
                if not found:
                    raise
                pending.error = DuplicateEventError([i for i in ids if i in found])
                continue
            conn.execute("RELEASE one_append")
            heads.update(planned.heads)
            position += len(planned.rows)
            written += len(planned.rows)
        conn.execute("COMMIT")
        return written

    def save_checkpoint(
        self,
        name: str,
        expected_position: int,
        position: int,
        rows: Mapping[str, bytes | None],
        reset: bool,
    ) -> None:
        """Check the saved position, apply ``rows`` and move the position, in one transaction."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute(CHECKPOINT_POSITION, (name,)).fetchone()
            saved = found[0] if found is not None else 0
            if saved != expected_position:
                raise ConcurrencyError(checkpoint_stream(name), expected_position, saved)
            if reset:
                conn.execute(CHECKPOINT_RESET, (name,))
            conn.executemany(
                CHECKPOINT_UPSERT_ROW,
                [(name, key, value) for key, value in rows.items() if value is not None],
            )
            conn.executemany(
                CHECKPOINT_DELETE_ROW, [(name, key) for key, value in rows.items() if value is None]
            )
            conn.execute(CHECKPOINT_SET_POSITION, (name, position))
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise


def _streams_of(batch: list[PendingAppend]) -> list[str]:
    return list({check[0]: None for pending in batch for check in pending.checks})


def _read_heads(conn: sqlite3.Connection, streams: list[str]) -> tuple[int, dict[str, int | None]]:
    position = 0
    heads: dict[str, int | None] = {}
    for stream_id, value in conn.execute(READ_HEADS, (orjson.dumps(streams).decode(),)):
        if stream_id is None:
            position = value or 0
        else:
            heads[stream_id] = value
    return position, heads


def _stored_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    return {row[0] for row in conn.execute(FIND_EVENT_IDS, (orjson.dumps(ids).decode(),))}


def _prefer_duplicates(conn: sqlite3.Connection, batch: list[PendingAppend]) -> None:
    """Turn the version conflicts of ``batch`` that repeat a known event id into duplicates.

    A stale append carrying ids that are already stored is most likely the retry of an append
    that did commit, and the duplicate is what tells its writer so (the memory store checks ids
    before versions too). Known means stored before this batch, or taken by an earlier append of
    it; the batch's rows must not be inserted yet.
    """
    conflicted = [pending for pending in batch if isinstance(pending.error, ConcurrencyError)]
    if not conflicted:
        return
    stored = _stored_ids(conn, [event[0] for pending in conflicted for event in pending.events])
    earlier: set[str] = set()
    for pending in batch:
        if pending.error is None:
            earlier.update(event[0] for event in pending.events)
        elif isinstance(pending.error, ConcurrencyError):
            repeated = [e[0] for e in pending.events if e[0] in stored or e[0] in earlier]
            if repeated:
                pending.error = DuplicateEventError(repeated)
