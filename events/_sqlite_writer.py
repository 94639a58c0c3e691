"""The SQLite store's write side: one plain ``sqlite3`` connection that commits whole batches.

Everything here runs in a worker thread (the store serialises calls with a ``CapacityLimiter(1)``),
so a batch costs one thread hop however many appends it carries: ``BEGIN IMMEDIATE``, one query
for the head position and every stream's version, one ``executemany`` and ``COMMIT``. The
shared append rule (``_append_rule``) judges the batch; stored event ids are queried only when
it refuses an append or the UNIQUE constraint reports one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from os import PathLike

import orjson

from ._append_rule import Accepted, judge_in_order
from ._checksum import event_checksum
from ._codec import EventCodec
from ._envelope import StreamAppend
from ._errors import ConcurrencyError, EventStoreError, StoreClosedError
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
# (position, stream_id, version, event_id, type, schema_version, recorded_at, data, checksum)
EventRow = tuple[int, str, int, str, str, int, int, bytes, int]


class PendingAppend:
    """One ``append`` call as the writer sees it: prepared rows in, outcome out.

    The caller fills ``appends`` and ``events`` (see :func:`prepare`). The writer thread sets
    either ``error`` (this call alone was refused: a version conflict or a duplicate id) or
    ``first_position`` and ``first_versions``.
    """

    __slots__ = ("appends", "cancelled", "error", "events", "first_position", "first_versions")

    def __init__(self, appends: Sequence[StreamAppend], events: list[PreparedEvent]) -> None:
        self.appends = appends
        self.events = events
        self.cancelled = False
        self.error: EventStoreError | None = None
        self.first_position = 0
        self.first_versions: list[int] = []


def prepare(appends: Sequence[StreamAppend], codec: EventCodec) -> PendingAppend:
    """Encode one call's events for the writer (raises ``EncodeError`` before anything queues)."""
    encode = codec.encode
    schema_version = codec.schema_version
    events: list[PreparedEvent] = []
    for append in appends:
        for new in append.events:
            event_type = new.event.type
            events.append((new.event_id, event_type, schema_version(event_type), encode(new.event)))
    return PendingAppend(appends, events)


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
        """Commit every append of ``batch`` the append rule accepts, in one transaction.

        Returns how many events were committed. An append refused alone gets its ``error``; an
        ``sqlite3.Error`` escaping from here means nothing of the batch was committed.
        """
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = _judge(conn, batch, recorded_at, look_up_ids=False)
            if rows:
                try:
                    conn.executemany(INSERT_EVENTS, rows)
                except sqlite3.IntegrityError:
                    # An event id stored before this batch, which the fast path does not look
                    # up: judge the batch again, this time against the stored ids. Under the
                    # write lock that judgement is exact, so a second violation fails the batch.
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    rows = _judge(conn, batch, recorded_at, look_up_ids=True)
                    conn.executemany(INSERT_EVENTS, rows)
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        return len(rows)

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


def _judge(
    conn: sqlite3.Connection, batch: list[PendingAppend], recorded_at: int, *, look_up_ids: bool
) -> list[EventRow]:
    """Judge ``batch`` in order against the heads read now; the rows of the accepted appends.

    Without ``look_up_ids`` (the fast path) stored ids are not queried: the UNIQUE constraint
    catches them at insert. A refusal made without them is not trusted, though (a stale retry of
    an append that did commit must be reported as a duplicate), so any refusal looks them up and
    judges again, still before anything is inserted.
    """
    position, heads = _read_heads(conn, batch)
    calls = [pending.appends for pending in batch]
    known = _stored_ids(conn, batch) if look_up_ids else ()
    verdicts = judge_in_order(calls, heads, known)
    if not look_up_ids and not all(isinstance(verdict, Accepted) for verdict in verdicts):
        verdicts = judge_in_order(calls, heads, _stored_ids(conn, batch))
    rows: list[EventRow] = []
    for pending, verdict in zip(batch, verdicts, strict=True):
        if isinstance(verdict, Accepted):
            pending.error = None
            pending.first_position = position + 1
            pending.first_versions = verdict.first_versions
            position = _add_rows(rows, pending, verdict.first_versions, position, recorded_at)
        else:
            pending.error = verdict
    return rows


def _add_rows(
    rows: list[EventRow],
    pending: PendingAppend,
    first_versions: list[int],
    position: int,
    recorded_at: int,
) -> int:
    """Append the rows of an accepted call numbered after ``position``; the new position."""
    events = pending.events
    if len(pending.appends) == 1:  # the common case, kept lean: one stream, versions in step
        stream_id = pending.appends[0].stream_id
        shift = first_versions[0] - position - 1
        rows += [
            (
                at,
                stream_id,
                at + shift,
                event_id,
                event_type,
                schema_version,
                recorded_at,
                data,
                event_checksum(stream_id, at + shift, event_type, schema_version, data),
            )
            for at, (event_id, event_type, schema_version, data) in enumerate(events, position + 1)
        ]
        return position + len(events)
    index = 0
    for append, first in zip(pending.appends, first_versions, strict=True):
        stream_id = append.stream_id
        for version in range(first, first + len(append.events)):
            event_id, event_type, schema_version, data = events[index]
            index += 1
            rows.append(
                (
                    position + index,
                    stream_id,
                    version,
                    event_id,
                    event_type,
                    schema_version,
                    recorded_at,
                    data,
                    event_checksum(stream_id, version, event_type, schema_version, data),
                )
            )
    return position + index


def _read_heads(conn: sqlite3.Connection, batch: list[PendingAppend]) -> tuple[int, dict[str, int]]:
    """The head position and the version of every stream ``batch`` touches (0 if new)."""
    streams = list({append.stream_id: None for pending in batch for append in pending.appends})
    position = 0
    heads: dict[str, int] = {}
    for stream_id, value in conn.execute(READ_HEADS, (orjson.dumps(streams).decode(),)):
        if stream_id is None:
            position = value or 0
        else:
            heads[stream_id] = value or 0
    return position, heads


def _stored_ids(conn: sqlite3.Connection, batch: list[PendingAppend]) -> set[str]:
    ids = [event[0] for pending in batch for event in pending.events]
    return {row[0] for row in conn.execute(FIND_EVENT_IDS, (orjson.dumps(ids).decode(),))}
