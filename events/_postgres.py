"""``PostgresEventStore``: the event store in PostgreSQL, for many processes and hosts.

Tables (created on open, inside the store's schema):

- ``agentledger_events``: one row per event. ``position`` is the primary key, ``(stream_id,
  version)`` and ``event_id`` are unique. The payload is the codec's JSON bytes in a ``bytea``
  column: the bytes stay exactly as encoded (``jsonb`` would reorder keys and re-render numbers)
  and writing skips a server-side JSON parse; every read decodes through the codec anyway. Ad hoc
  SQL can still look inside with ``convert_from(data, 'UTF8')::jsonb``. ``checksum`` is
  ``event_checksum`` of the row, checked on every read (NULL in rows written before it existed;
  a table made before it gets the column on open).
- ``agentledger_checkpoints`` and ``agentledger_checkpoint_rows``: persistent projections.

Order: an append transaction takes a transaction-level advisory lock (one per schema) before it
reads the head and numbers its events ``head + 1, ...``. PostgreSQL releases that lock only after
the commit is visible, so positions are gapless and in commit order across every process, and a
tail reading ``position > n`` can never miss an event that commits late. The price is that appends
to one schema are serial; group commit wins the throughput back: concurrent appends through one
store object share a transaction (each keeps its own all-or-nothing outcome).
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Self, TypeAlias

import anyio

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresEventStore needs asyncpg: pip install 'agentledger[postgres]'"
    ) from exc

from ._append_rule import Accepted, judge_in_order
from ._checksum import event_checksum
from ._codec import EventCodec, default_codec
from ._envelope import RecordedEvent, StreamAppend
from ._errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    StorageFullError,
    StoreClosedError,
    StoreUnavailableError,
)
from ._store import Checkpoint, StoreBase, checkpoint_stream
from ._time import Clock, utc_now

_Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
_Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

# Everything asyncpg raises: the server's errors, misuse of a connection, and the client's own
# protocol failures (``InternalClientError``, e.g. "cannot switch to state ...; another
# operation is in progress" on a connection whose backend was killed mid-query), which derive
# from neither of the first two. Timeouts are ``TimeoutError``, an ``OSError``.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
# Failures after which the transaction is certainly rolled back and running it again is safe.
# A unique violation only gets past the locked pre-check if someone writes without the lock; the
# next attempt's pre-check then names the offending event or stream precisely.
_RETRYABLE = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.UniqueViolationError,
)
_MAX_BATCH_EVENTS = 2000

# (position, stream_id, version, event_id, type, schema_version, data, checksum); recorded_at
# is shared by the whole batch.
_EventRow: TypeAlias = tuple[int, str, int, str, str, int, bytes, int]
_EVENT_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, recorded_at, data, checksum"
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lock_key(schema: str, purpose: str) -> int:
    # Advisory locks live in one key space per database; hashing the schema in keeps stores in
    # different schemas from waiting on each other.
    digest = hashlib.blake2b(f"agentledger:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def _connection(pool: _Pool, acquire_within: float) -> AsyncIterator[_Conn]:
    """A pooled connection that is thrown away, not reused, after a failure that may have left
    it in a bad state.

    A server error (a constraint, a serialization failure) leaves a live connection in a known
    state, and the pool rolls back what is open; anything else (the backend killed, a
    timeout, the client's protocol state machine confused) may leave a half-read reply behind,
    and the next operation on that connection would fail with "another operation is in
    progress". Terminating it makes the pool open a fresh one.
    """
    async with pool.acquire(timeout=acquire_within) as conn:
        try:
            yield conn
        except _DRIVER_ERRORS as exc:
            _discard_if_broken(conn, exc)
            raise


def _discard_if_broken(conn: _Conn, exc: BaseException) -> None:
    """Terminate ``conn`` unless ``exc`` is a server error on a connection still open."""
    if not isinstance(exc, asyncpg.PostgresError) or conn.is_closed():
        conn.terminate()


def _driver_error(exc: BaseException, doing: str) -> StoreUnavailableError:
    if isinstance(exc, asyncpg.DiskFullError):
        return StorageFullError(f"{doing}: the database is out of disk space: {exc}")
    return StoreUnavailableError(f"{doing}: {type(exc).__name__}: {exc}")


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    # asyncpg's default pool reset (RESET ALL, UNLISTEN *, ...) costs a round trip per release,
    # about a tenth of an append. The store sets no session state on pooled connections, and
    # asyncpg still rolls back an open transaction before this hook runs.
    return None


def _append_failure(exc: Exception, request: _Request) -> EventStoreError:
    """What an append of a batch that failed with ``exc`` raises (a new error per caller)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return _unique_violation(exc, request)
    if isinstance(exc, _RETRYABLE):
        return StoreUnavailableError(f"append failed after retries, nothing was written: {exc}")
    if isinstance(exc, asyncpg.DiskFullError):
        return _driver_error(exc, "append failed, nothing was written")
    if isinstance(exc, _DRIVER_ERRORS):
        return StoreUnavailableError(
            f"append outcome unknown ({type(exc).__name__}: {exc}); "
            "look its event ids up with get_event before appending again"
        )
    return StoreUnavailableError(f"append outcome unknown: the batch failed with {exc!r}")


def _unique_violation(exc: asyncpg.UniqueViolationError, request: _Request) -> EventStoreError:
    # Only reached when the violation outlived every retry, i.e. something writes to the table
    # without taking the lock. PostgreSQL's detail reads "Key (cols)=(values) already exists."
    key = (exc.detail or "").partition("=(")[2].rpartition(") already exists")[0]
    constraint = exc.constraint_name or ""
    if constraint.endswith("_event_id_key"):
        if any(new.event_id == key for append in request.appends for new in append.events):
            return DuplicateEventError([key])
    elif constraint.endswith("_stream_id_version_key"):
        stream_id, _, version = key.rpartition(", ")
        if version.isdigit() and any(a.stream_id == stream_id for a in request.appends):
            return ConcurrencyError(stream_id, int(version) - 1, int(version))
    return StoreUnavailableError(
        f"append failed, nothing was written: another writer's rows collided with its batch: {exc}"
    )


@dataclass(eq=False, slots=True)
class _Request:
    """One ``append`` call waiting in the group-commit queue."""

    appends: tuple[StreamAppend, ...]
    payloads: list[list[bytes]]
    wake: anyio.Event = field(default_factory=anyio.Event)
    taken: bool = False
    done: bool = False
    result: list[RecordedEvent] = field(default_factory=list)
    error: EventStoreError | None = None

    @property
    def event_count(self) -> int:
        return sum(len(append.events) for append in self.appends)

    def finish(self, result: list[RecordedEvent] | EventStoreError) -> None:
        if isinstance(result, EventStoreError):
            self.error = result
        else:
            self.result = result
        self.done = True
        self.wake.set()


class PostgresEventStore(StoreBase):
    """An ``EventStore`` in a PostgreSQL schema, shared by any number of processes and hosts.

    ``dsn`` is an asyncpg connection string; ``schema`` (created if missing) holds the tables, so
    one database can hold several independent stores. Appends from all processes get gapless
    positions in commit order. Tails are woken at once by this object's commits and, through
    ``LISTEN``/``NOTIFY`` (``listen=True``), by other processes' commits; the poll interval is
    the fallback if notifications are lost.

    ``command_timeout`` bounds every statement, including waits for locks held by other writers.
    Serialization failures, deadlocks and unique violations (rows written without the store's
    lock) are retried up to ``max_retries`` times; the last failure becomes the matching typed
    error. An append whose commit outcome is unknown (the connection broke) raises
    ``StoreUnavailableError`` and is never retried here: look its event ids up with
    ``get_event``. The pool holds ``min_size`` to ``max_size`` connections, plus one for
    ``listen``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 30.0,
        max_retries: int = 5,
        listen: bool = True,
        codec: EventCodec = default_codec,
        clock: Clock = utc_now,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._max_retries = max_retries
        self._listen = listen
        self._codec = codec
        self._clock = clock
        self._pool: _Pool | None = None
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._closing = False
        self._active = 0
        self._idle: anyio.Event | None = None
        self._queue: deque[_Request] = deque()
        self._leading = False
        self._append_lock_key = _lock_key(schema, "append")
        self._ddl_lock_key = _lock_key(schema, "ddl")
        self._channel = "agentledger_" + hashlib.blake2b(schema.encode(), digest_size=8).hexdigest()
        s = _ident(schema)
        self._events = f"{s}.agentledger_events"
        self._checkpoints = f"{s}.agentledger_checkpoints"
        self._checkpoint_rows = f"{s}.agentledger_checkpoint_rows"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds this store's tables."""
        return self._schema

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._pool is not None:
            raise RuntimeError("this PostgresEventStore is already open")
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._command_timeout,
                reset=_keep_session,
            )
        except _DRIVER_ERRORS as exc:
            raise _driver_error(exc, "cannot open the PostgreSQL store") from exc
        try:
            await self._create_tables(pool)
            if self._listen:
                self._listener = await self._start_listener()
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        self._closing = False
        return self

    async def aclose(self) -> None:
        pool, listener = self._pool, self._listener
        if pool is None or self._closing:
            return
        self._closing = True
        self._wake_tails()
        # Shielded but bounded: a cancelled close must still give the connections back, and a
        # hung server must not hang it forever.
        with anyio.move_on_after(self._command_timeout, shield=True):
            if self._active:
                self._idle = anyio.Event()
                await self._idle.wait()
            if listener is not None:
                await listener.close()
            await pool.close()
        if listener is not None and not listener.is_closed():
            listener.terminate()
        pool.terminate()  # a no-op after a clean close
        self._pool = self._listener = None

    async def _create_tables(self, pool: _Pool) -> None:
        names = ("agentledger_events", "agentledger_checkpoints", "agentledger_checkpoint_rows")
        exists = (
            "SELECT bool_and(to_regclass(format('%I.%I', $1::text, t)) IS NOT NULL) "
            "AND EXISTS (SELECT 1 FROM pg_attribute WHERE attname = 'checksum' "
            "AND NOT attisdropped "
            "AND attrelid = to_regclass(format('%I.agentledger_events', $1::text))) "
            "FROM unnest($2::text[]) AS t"
        )
        try:
            async with _connection(pool, self._command_timeout) as conn:
                # Checking first lets a role without CREATE rights open a store set up by others.
                if await conn.fetchval(exists, self._schema, names):
                    return
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", self._ddl_lock_key)
                    await conn.execute(self._ddl())
        except _DRIVER_ERRORS as exc:
            raise _driver_error(
                exc, f"cannot create the tables in schema {self._schema!r}"
            ) from exc

    def _ddl(self) -> str:
        return f"""
            CREATE SCHEMA IF NOT EXISTS {_ident(self._schema)};
            CREATE TABLE IF NOT EXISTS {self._events} (
                position bigint PRIMARY KEY CHECK (position > 0),
                stream_id text NOT NULL,
                version integer NOT NULL CHECK (version > 0),
                event_id text NOT NULL,
                type text NOT NULL,
                schema_version integer NOT NULL,
                recorded_at timestamptz NOT NULL,
                data bytea NOT NULL,
                checksum bigint,
                CONSTRAINT agentledger_events_event_id_key UNIQUE (event_id),
                CONSTRAINT agentledger_events_stream_id_version_key UNIQUE (stream_id, version)
            );
            ALTER TABLE {self._events} ADD COLUMN IF NOT EXISTS checksum bigint;
            CREATE TABLE IF NOT EXISTS {self._checkpoints} (
                name text PRIMARY KEY,
                position bigint NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {self._checkpoint_rows} (
                name text NOT NULL,
                key text NOT NULL,
                value bytea NOT NULL,
                PRIMARY KEY (name, key)
            );
        """

    async def _start_listener(self) -> asyncpg.Connection[asyncpg.Record]:
        try:
            conn = await asyncpg.connect(self._dsn, command_timeout=self._command_timeout)
            await conn.add_listener(self._channel, self._on_notify)
        except _DRIVER_ERRORS as exc:
            raise _driver_error(exc, "cannot listen for other processes' commits") from exc
        return conn

    def _on_notify(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self._wake_tails()

    @asynccontextmanager
    async def _operation(self) -> AsyncIterator[_Pool]:
        """Count an operation in flight, so ``aclose`` can wait for it."""
        if self._pool is None or self._closing:
            raise StoreClosedError("the PostgreSQL store is not open; use 'async with store:'")
        self._active += 1
        try:
            yield self._pool
        finally:
            self._active -= 1
            if self._active == 0 and self._idle is not None:
                self._idle.set()

    # -- appends -----------------------------------------------------------------------------

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        async with self._operation() as pool:
            payloads = [[EventCodec.encode(new.event) for new in a.events] for a in appends]
            request = _Request(appends, payloads)
            self._queue.append(request)
            try:
                while not request.done:
                    if self._leading:
                        request.wake = anyio.Event()
                        await request.wake.wait()
                    else:
                        await self._lead(pool, request)
            finally:
                if not request.taken and request in self._queue:
                    self._queue.remove(request)  # cancelled before a leader took it
                # Hand leadership on, also when it was handed to this caller as it left.
                if not self._leading and self._queue:
                    self._queue[0].wake.set()
        if request.error is not None:
            raise request.error
        return request.result

    async def _lead(self, pool: _Pool, own: _Request) -> None:
        """Commit queued appends, a batch per transaction, until ``own`` is done."""
        self._leading = True
        try:
            while not own.done:
                try:
                    async with _connection(pool, self._command_timeout) as conn:
                        batch = self._take_batch()
                        # Shielded: the batch holds other callers' appends, whose outcome must
                        # not become unknown because this caller was cancelled.
                        with anyio.CancelScope(shield=True):
                            await self._commit_batch(conn, batch)
                except _DRIVER_ERRORS as exc:
                    # No connection, so nothing was taken: only this caller fails; the next
                    # leader tries again for the others.
                    if not own.done:
                        if own in self._queue:
                            self._queue.remove(own)
                        own.finish(_driver_error(exc, "cannot append"))
        finally:
            self._leading = False

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        events = 0
        while self._queue and (
            not batch or events + self._queue[0].event_count <= _MAX_BATCH_EVENTS
        ):
            request = self._queue.popleft()
            request.taken = True
            events += request.event_count
            batch.append(request)
        return batch

    async def _commit_batch(self, conn: _Conn, batch: list[_Request]) -> None:
        """Commit every acceptable request of ``batch`` in one transaction; finish them all."""
        try:
            outcomes = await self._commit_with_retries(conn, batch)
        except Exception as exc:
            for request in batch:
                failure = _append_failure(exc, request)
                failure.__cause__ = exc  # as if raised ``from exc``: the driver's own words
                request.finish(failure)
            if not isinstance(exc, _DRIVER_ERRORS):
                raise  # a bug, not the database: let the leader's caller see it whole
            _discard_if_broken(conn, exc)  # handled here, so ``_connection`` never sees it
            return
        for request, outcome in zip(batch, outcomes, strict=True):
            request.finish(outcome)
        if any(isinstance(outcome, list) and outcome for outcome in outcomes):
            self._wake_tails()

    async def _commit_with_retries(
        self, conn: _Conn, batch: list[_Request]
    ) -> list[list[RecordedEvent] | EventStoreError]:
        for attempt in range(self._max_retries):
            try:
                return await self._try_commit(conn, batch)
            except _RETRYABLE:
                await anyio.sleep(random.uniform(0.005, 0.02) * 2**attempt)
        return await self._try_commit(conn, batch)

    async def _try_commit(
        self, conn: _Conn, batch: list[_Request]
    ) -> list[list[RecordedEvent] | EventStoreError]:
        ids = [new.event_id for r in batch for a in r.appends for new in a.events]
        streams = list(dict.fromkeys(a.stream_id for r in batch for a in r.appends))
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._append_lock_key)
            # A statement of its own after the lock, so its snapshot sees the previous commit.
            probe = await conn.fetchrow(
                f"""SELECT
                    (SELECT coalesce(max(position), 0) FROM {self._events}),
                    ARRAY(SELECT event_id FROM {self._events} WHERE event_id = ANY($1::text[])),
                    ARRAY(SELECT (SELECT coalesce(max(e.version), 0) FROM {self._events} e
                                  WHERE e.stream_id = s.id)
                          FROM unnest($2::text[]) WITH ORDINALITY AS s(id, n) ORDER BY s.n)""",
                ids,
                streams,
            )
            head, known_ids, versions = probe if probe is not None else (0, [], [])
            verdicts = judge_in_order(
                (request.appends for request in batch),
                dict(zip(streams, versions, strict=True)),
                known_ids,
            )
            recorded_at = self._clock()
            rows: list[_EventRow] = []
            outcomes: list[list[RecordedEvent] | EventStoreError] = []
            for request, verdict in zip(batch, verdicts, strict=True):
                outcomes.append(
                    _record(request, verdict, head + len(rows), recorded_at, rows)
                    if isinstance(verdict, Accepted)
                    else verdict
                )
            if rows:
                columns = list(zip(*rows, strict=True))
                await conn.execute(
                    f"""WITH inserted AS (
                            INSERT INTO {self._events} ({_EVENT_COLUMNS})
                            SELECT p, s, v, e, t, sv, $7, d, c FROM unnest(
                                $1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[],
                                $6::int[], $8::bytea[], $11::bigint[])
                                AS r(p, s, v, e, t, sv, d, c))
                        SELECT pg_notify($9, $10)""",
                    *columns[:6],
                    recorded_at,
                    columns[6],
                    self._channel,
                    str(head + len(rows)),
                    columns[7],
                )
        return outcomes

    # -- reads -------------------------------------------------------------------------------

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self._operation() as pool:
            try:
                async with _connection(pool, self._command_timeout) as conn:
                    return await conn.fetch(query, *args)
            except _DRIVER_ERRORS as exc:
                raise _driver_error(exc, "cannot read from the PostgreSQL store") from exc

    def _decode(self, row: asyncpg.Record) -> RecordedEvent:
        position, stream_id, version, event_id, event_type, schema_version, recorded_at, data = row[
            :8
        ]
        return RecordedEvent.stored(
            stream_id,
            version,
            position,
            event_id,
            recorded_at,
            schema_version,
            event_type,
            data,
            self._codec,
            row[8],
        )

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM {self._events} WHERE stream_id = $1 AND version > $2 "
            "ORDER BY version LIMIT $3",
            stream_id,
            after,
            None if limit is None else max(limit, 0),
        )
        return [self._decode(row) for row in rows]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM {self._events} WHERE position > $1 "
            "ORDER BY position LIMIT $2",
            after,
            max(limit, 0),
        )
        return [self._decode(row) for row in rows]

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM {self._events} WHERE event_id = $1", event_id
        )
        return self._decode(rows[0]) if rows else None

    async def stream_version(self, stream_id: str) -> int:
        rows = await self._fetch(
            f"SELECT coalesce(max(version), 0) FROM {self._events} WHERE stream_id = $1", stream_id
        )
        return int(rows[0][0])

    async def head_position(self) -> int:
        rows = await self._fetch(f"SELECT coalesce(max(position), 0) FROM {self._events}")
        return int(rows[0][0])

    # -- checkpoints -------------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> Checkpoint:
        async with self._operation() as pool:
            try:
                async with (
                    _connection(pool, self._command_timeout) as conn,
                    conn.transaction(isolation="repeatable_read", readonly=True),
                ):
                    position = await conn.fetchval(
                        f"SELECT position FROM {self._checkpoints} WHERE name = $1", name
                    )
                    rows = await conn.fetch(
                        f"SELECT key, value FROM {self._checkpoint_rows} WHERE name = $1", name
                    )
            except _DRIVER_ERRORS as exc:
                raise _driver_error(exc, f"cannot load checkpoint {name!r}") from exc
        return Checkpoint(position or 0, {key: value for key, value in rows})

    async def save_checkpoint(
        self,
        name: str,
        *,
        expected_position: int,
        position: int,
        rows: Mapping[str, bytes | None],
        reset: bool = False,
    ) -> None:
        upserts = {key: value for key, value in rows.items() if value is not None}
        deletes = [key for key, value in rows.items() if value is None]
        async with self._operation() as pool:
            try:
                async with _connection(pool, self._command_timeout) as conn, conn.transaction():
                    # Make sure the row exists, then lock it: two first saves cannot both pass.
                    await conn.execute(
                        f"INSERT INTO {self._checkpoints} (name, position) VALUES ($1, 0) "
                        "ON CONFLICT (name) DO NOTHING",
                        name,
                    )
                    saved = await conn.fetchval(
                        f"SELECT position FROM {self._checkpoints} WHERE name = $1 FOR UPDATE",
                        name,
                    )
                    if saved != expected_position:
                        raise ConcurrencyError(checkpoint_stream(name), expected_position, saved)
                    await self._write_checkpoint(conn, name, position, upserts, deletes, reset)
            except _DRIVER_ERRORS as exc:
                raise _driver_error(exc, f"cannot save checkpoint {name!r}") from exc

    async def _write_checkpoint(
        self,
        conn: _Conn,
        name: str,
        position: int,
        upserts: dict[str, bytes],
        deletes: list[str],
        reset: bool,
    ) -> None:
        if reset:
            await conn.execute(f"DELETE FROM {self._checkpoint_rows} WHERE name = $1", name)
        if deletes:
            await conn.execute(
                f"DELETE FROM {self._checkpoint_rows} WHERE name = $1 AND key = ANY($2::text[])",
                name,
                deletes,
            )
        if upserts:
            await conn.execute(
                f"INSERT INTO {self._checkpoint_rows} (name, key, value) "
                "SELECT $1, k, v FROM unnest($2::text[], $3::bytea[]) AS r(k, v) "
                "ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                name,
                list(upserts),
                list(upserts.values()),
            )
        await conn.execute(
            f"UPDATE {self._checkpoints} SET position = $2 WHERE name = $1", name, position
        )


def _record(
    request: _Request,
    accepted: Accepted,
    position: int,
    recorded_at: datetime,
    rows: list[_EventRow],
) -> list[RecordedEvent]:
    """The events of an accepted request, numbered after ``position``; their rows go to ``rows``."""
    recorded: list[RecordedEvent] = []
    for append, payloads, first in zip(
        request.appends, request.payloads, accepted.first_versions, strict=True
    ):
        for version, (new, data) in enumerate(zip(append.events, payloads, strict=True), first):
            position += 1
            schema_version = EventCodec.schema_version(new.event.type)
            recorded.append(
                RecordedEvent(
                    stream_id=append.stream_id,
                    version=version,
                    position=position,
                    event_id=new.event_id,
                    recorded_at=recorded_at,
                    schema_version=schema_version,
                    event=new.event,
                )
            )
            rows.append(
                (
                    position,
                    append.stream_id,
                    version,
                    new.event_id,
                    new.event.type,
                    schema_version,
                    data,
                    event_checksum(append.stream_id, version, new.event.type, schema_version, data),
                )
            )
    return recorded


__all__ = ["PostgresEventStore"]
