"""``SqliteEventStore``: the embedded default store, one SQLite file in WAL mode."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from os import PathLike
from typing import Any, Self

import aiosqlite
import anyio
import anyio.to_thread

from ._codec import EventCodec, default_codec
from ._envelope import RecordedEvent, StreamAppend
from ._errors import EventStoreError, StoreClosedError, StoreUnavailableError
from ._sqlite_sql import (
    GET_EVENT,
    HEAD_POSITION,
    LOAD_CHECKPOINT,
    READ_ALL,
    READ_STREAM,
    STREAM_VERSION,
    Synchronous,
    connection_pragmas,
    from_micros,
    map_sqlite_error,
    to_micros,
)
from ._sqlite_writer import PendingAppend, SqliteWriter, prepare
from ._store import Checkpoint, StoreBase
from ._time import Clock, utc_now


@dataclass(slots=True)
class SqliteStoreStats:
    """Counters of the group committer since the store was opened."""

    transactions: int = 0
    """Write transactions committed for appends (one per batch)."""
    appends: int = 0
    """``append`` calls that committed."""
    events: int = 0
    """Events committed."""


CHECKPOINT_EVERY = 1000
"""Committed events between two background WAL checkpoints."""


class _Batch:
    """The appends one transaction carries; callers wait on ``settled``."""

    __slots__ = ("committed", "failure", "recorded_at", "requests", "settled", "taken")

    def __init__(self) -> None:
        self.requests: list[PendingAppend] = []
        self.taken = False
        self.committed = False
        self.failure: BaseException | None = None
        self.recorded_at: datetime | None = None
        self.settled = anyio.Event()


class SqliteEventStore(StoreBase):
    """An ``EventStore`` in one SQLite file, safe to open from several processes at once.

    The file is put in WAL mode; readers never block the writer. Appends from concurrent tasks
    are **group-committed**: one writer task takes everything queued, writes it in one
    ``BEGIN IMMEDIATE`` transaction through its own connection in a worker thread, and wakes each
    caller when that transaction has committed. An append whose expected version does not hold,
    or whose event id is already stored, fails alone; the rest of its batch commits. A driver
    error fails the whole batch (``StorageFullError`` when the database is full,
    ``StoreUnavailableError`` otherwise, e.g. locked past ``busy_timeout``), which is rolled
    back; later appends are served as usual.

    Cancelling a waiting ``append``: if the writer has not taken it yet it is dropped and never
    written; once taken, it commits or fails with its batch as a whole, the caller just stops
    waiting (settle it with ``get_event``). ``aclose`` waits for every append already queued.

    Positions are assigned as max + 1 inside the write transaction and nothing is cached
    between transactions, so several processes may append to one file. Reads go through a
    separate aiosqlite connection; a third one checkpoints the WAL in the background so the
    writer does not pay for it (SQLite's own autocheckpoint stays on as a backstop).

    Args:
        path: the database file (created if missing).
        clock: stamps ``recorded_at``, once per transaction.
        codec: decodes stored events (upcasters, strictness about unknown types).
        busy_timeout: seconds to wait for another process's write lock before failing.
        synchronous: SQLite's ``synchronous`` setting. ``"NORMAL"`` (the default) in WAL mode
            loses no committed event when the process crashes, but the last transactions may
            be lost on power loss or an OS crash; ``"FULL"`` syncs the WAL at every commit and
            survives those too, at some cost per transaction (amortised by group commit).
        max_page_count: a size quota in database pages (``PRAGMA max_page_count``); appends
            past it raise ``StorageFullError``.

    ``stats`` counts transactions, appends and events committed by this store object.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        clock: Clock = utc_now,
        codec: EventCodec = default_codec,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "NORMAL",
        max_page_count: int | None = None,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous setting {synchronous!r}")
        self._path = os.fspath(path)
        self._clock = clock
        self._codec = codec
        self._busy_timeout = busy_timeout
        self._synchronous: Synchronous = synchronous
        self._max_page_count = max_page_count
        self._open = False
        self._writer: SqliteWriter | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint_due = anyio.Event()
        self._uncheckpointed = 0
        self._limiter = anyio.CapacityLimiter(1)
        self._queue = _Batch()
        self._writer_idle: anyio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._writer_stopped = anyio.Event()
        self.stats = SqliteStoreStats()

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._open:
            raise RuntimeError("this SqliteEventStore is already open")
        self._queue = _Batch()
        self._writer_stopped = anyio.Event()
        self.stats = SqliteStoreStats()
        try:
            self._writer = await anyio.to_thread.run_sync(self._open_writer, limiter=self._limiter)
            self._reader = await self._open_side_connection(query_only=True)
            self._checkpointer = await self._open_side_connection(query_only=False)
        except (sqlite3.Error, OSError) as exc:
            await self._close_connections()
            raise map_sqlite_error(exc) from exc
        except BaseException:
            await self._close_connections()
            raise
        # A plain asyncio task rather than a task group entered here: a task group must be left
        # in the task that entered it, and stores are often opened and closed in different tasks
        # (pytest-asyncio fixtures, startup/shutdown hooks). aclose() always waits for it.
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"SqliteEventStore writer for {self._path}"
        )
        self._open = True
        return self

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        self._poke_writer()
        with anyio.CancelScope(shield=True):
            await self._writer_stopped.wait()
            await self._close_connections()
        task, self._writer_task = self._writer_task, None
        self._wake_tails()
        if task is not None and task.done() and not task.cancelled():
            task.result()  # surfaces a bug in the writer instead of losing it

    def _open_writer(self) -> SqliteWriter:
        return SqliteWriter(
            self._path,
            busy_timeout=self._busy_timeout,
            synchronous=self._synchronous,
            max_page_count=self._max_page_count,
        )

    async def _open_side_connection(self, *, query_only: bool) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            for pragma in connection_pragmas(self._busy_timeout, self._synchronous):
                await conn.execute(pragma)
            if query_only:
                await conn.execute("PRAGMA query_only = ON")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _close_connections(self) -> None:
        writer, self._writer = self._writer, None
        reader, self._reader = self._reader, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if writer is not None:
            await anyio.to_thread.run_sync(writer.close, limiter=self._limiter)
        for conn in (reader, checkpointer):
            if conn is not None:
                await conn.close()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosedError("the SQLite store is not open; use 'async with store:'")

    # -- appends: the group committer --------------------------------------------------------

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        self._check_open()
        if not appends:
            return []
        pending = prepare(appends, self._codec)
        batch = self._queue
        batch.requests.append(pending)
        self._poke_writer()
        try:
            await batch.settled.wait()
        except BaseException:
            # Not taken yet: drop it, it will never be written. Taken: it commits or fails
            # with its batch as a whole, and this caller stops waiting.
            if not batch.taken:
                pending.cancelled = True
            raise
        if batch.failure is not None:
            raise _batch_error(batch.failure) from batch.failure
        if pending.error is not None:
            raise pending.error
        assert batch.recorded_at is not None
        return self._recorded(pending, batch.recorded_at)

    @staticmethod
    def _recorded(pending: PendingAppend, recorded_at: datetime) -> list[RecordedEvent]:
        recorded: list[RecordedEvent] = []
        position = pending.first_position
        index = 0
        events = pending.events
        for append, version in zip(pending.appends, pending.first_versions, strict=True):
            stream_id = append.stream_id
            for new in append.events:
                recorded.append(
                    RecordedEvent(
                        stream_id,
                        version,
                        position,
                        new.event_id,
                        recorded_at,
                        events[index][2],
                        new.event,
                    )
                )
                version += 1
                position += 1
                index += 1
        return recorded

    def _poke_writer(self) -> None:
        idle, self._writer_idle = self._writer_idle, None
        if idle is not None:
            idle.set()

    async def _write_loop(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._checkpoint_loop)
                while True:
                    batch = self._queue
                    if not batch.requests:
                        if not self._open:
                            break
                        self._writer_idle = anyio.Event()
                        await self._writer_idle.wait()
                        continue
                    self._queue = _Batch()
                    batch.taken = True
                    try:
                        await self._commit(batch)
                    finally:
                        batch.settled.set()
                    if batch.committed:
                        self._wake_tails()
                tg.cancel_scope.cancel()
        finally:
            self._writer_stopped.set()
            leftover = self._queue
            leftover.failure = StoreClosedError("the SQLite store's writer stopped")
            leftover.taken = True
            leftover.settled.set()

    async def _commit(self, batch: _Batch) -> None:
        live = [pending for pending in batch.requests if not pending.cancelled]
        if not live:
            return
        writer = self._writer
        if writer is None:
            batch.failure = StoreClosedError("the SQLite store is closed")
            return
        try:
            micros = to_micros(self._clock())
            batch.recorded_at = from_micros(micros)
            written = await anyio.to_thread.run_sync(
                writer.write_batch, live, micros, limiter=self._limiter
            )
        except Exception as exc:
            batch.failure = exc
            return
        except BaseException:
            # Cancelled before the thread started (after it started, the thread call is not
            # abandoned, so we never get here with a committed batch).
            batch.failure = StoreClosedError("the SQLite store's writer was cancelled")
            raise
        batch.committed = True
        self._uncheckpointed += written
        if self._uncheckpointed >= CHECKPOINT_EVERY:
            self._uncheckpointed = 0
            self._checkpoint_due.set()
        stats = self.stats
        stats.transactions += 1
        stats.events += written
        stats.appends += sum(1 for pending in live if pending.error is None)

    async def _checkpoint_loop(self) -> None:
        # Copying the WAL back into the database (and its fsyncs) costs about a third of the
        # writer's time when done inline; here it runs on a connection of its own, in its own
        # thread, beside the writer. PASSIVE never waits for nor blocks the writer or readers;
        # the writer's wal_autocheckpoint stays as the backstop should this fall behind.
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = anyio.Event()
            conn = self._checkpointer
            if conn is None:
                return
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- reads -------------------------------------------------------------------------------

    async def _fetch(self, sql: str, parameters: Sequence[Any]) -> Iterable[Any]:
        self._check_open()
        reader = self._reader
        assert reader is not None
        try:
            return await reader.execute_fetchall(sql, parameters)
        except (sqlite3.Error, OSError) as exc:
            raise map_sqlite_error(exc) from exc
        except ValueError as exc:  # aiosqlite: the connection was closed under us
            raise StoreClosedError("the SQLite store was closed during a read") from exc

    def _decode(self, rows: Iterable[Any]) -> list[RecordedEvent]:
        codec = self._codec
        stored = RecordedEvent.stored
        recorded: list[RecordedEvent] = []
        # Events of one transaction share their recorded_at: convert it once per run of them.
        last_micros = -1
        recorded_at = from_micros(0)
        for position, stream_id, version, event_id, event_type, schema, micros, data, sum_ in rows:
            if micros != last_micros:
                recorded_at = from_micros(micros)
                last_micros = micros
            recorded.append(
                stored(
                    stream_id,
                    version,
                    position,
                    event_id,
                    recorded_at,
                    schema,
                    event_type,
                    data,
                    codec,
                    sum_,
                )
            )
        return recorded

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        rows = await self._fetch(
            READ_STREAM, (stream_id, after, -1 if limit is None else max(limit, 0))
        )
        return self._decode(rows)

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._decode(await self._fetch(READ_ALL, (after, max(limit, 0))))

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        found = self._decode(await self._fetch(GET_EVENT, (event_id,)))
        return found[0] if found else None

    async def stream_version(self, stream_id: str) -> int:
        ((version,),) = await self._fetch(STREAM_VERSION, (stream_id,))
        return int(version)

    async def head_position(self) -> int:
        ((position,),) = await self._fetch(HEAD_POSITION, ())
        return int(position)

    # -- projection checkpoints --------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> Checkpoint:
        position = 0
        rows: dict[str, bytes] = {}
        for saved, key, value in await self._fetch(LOAD_CHECKPOINT, (name, name)):
            if key is None:
                position = saved
            else:
                rows[key] = value
        return Checkpoint(position, rows)

    async def save_checkpoint(
        self,
        name: str,
        *,
        expected_position: int,
        position: int,
        rows: Mapping[str, bytes | None],
        reset: bool = False,
    ) -> None:
        self._check_open()
        writer = self._writer
        assert writer is not None
        try:
            await anyio.to_thread.run_sync(
                writer.save_checkpoint,
                name,
                expected_position,
                position,
                dict(rows),
                reset,
                limiter=self._limiter,
            )
        except (sqlite3.Error, OSError) as exc:
            raise map_sqlite_error(exc) from exc


def _batch_error(failure: BaseException) -> BaseException:
    """A fresh error for each caller of a failed batch (one instance raised in many tasks would
    pile up their tracebacks)."""
    if isinstance(failure, sqlite3.Error | OSError):
        return map_sqlite_error(failure)
    if isinstance(failure, StoreClosedError):
        return StoreClosedError(str(failure))
    if isinstance(failure, EventStoreError):
        return failure
    return StoreUnavailableError(f"the SQLite writer failed: {failure!r}")


__all__ = ["SqliteEventStore", "SqliteStoreStats"]
