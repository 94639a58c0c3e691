"""What the SQLite store says to SQLite: schema, statements, connection set-up, error mapping."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Literal

from ._errors import EventStoreError, StorageFullError, StoreUnavailableError

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

SCHEMA_VERSION = 1

# ``position`` is a plain INTEGER PRIMARY KEY (the rowid), not AUTOINCREMENT: the writer assigns
# max + 1 inside its transaction, so a rolled-back transaction leaves no gap. ``recorded_at`` is
# integer microseconds since the Unix epoch (UTC), which costs nothing to store and little to read.
# ``checksum`` is ``event_checksum`` of the row, checked on every read; NULL in rows written
# before it existed (accepted as they are). Files made before the column are given it on open
# (``create_schema``); the schema version stays 1 because older programs still read and write
# such a file correctly (their rows simply carry no checksum).
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    checksum       INTEGER,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS projection_positions (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_rows (
    name  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
"""

EVENT_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, recorded_at, data, checksum"
)

INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

# The head position, then each stream's version; the correlated max() is one index seek per
# stream, where a GROUP BY over the streams would walk every version of every stream.
READ_HEADS = (
    "SELECT NULL, (SELECT max(position) FROM events) "
    "UNION ALL "
    "SELECT value, (SELECT max(version) FROM events WHERE stream_id = value) FROM json_each(?)"
)

FIND_EVENT_IDS = "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))"

READ_ALL = f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"

READ_STREAM = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ? "
    "ORDER BY version LIMIT ?"
)

GET_EVENT = f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?"

STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"

HEAD_POSITION = "SELECT coalesce(max(position), 0) FROM events"

# One statement, so the position and the rows come from the same snapshot.
LOAD_CHECKPOINT = (
    "SELECT position, NULL, NULL FROM projection_positions WHERE name = ? "
    "UNION ALL "
    "SELECT NULL, key, value FROM projection_rows WHERE name = ?"
)

CHECKPOINT_POSITION = "SELECT position FROM projection_positions WHERE name = ?"
CHECKPOINT_RESET = "DELETE FROM projection_rows WHERE name = ?"
CHECKPOINT_UPSERT_ROW = (
    "INSERT INTO projection_rows (name, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (name, key) DO UPDATE SET value = excluded.value"
)
CHECKPOINT_DELETE_ROW = "DELETE FROM projection_rows WHERE name = ? AND key = ?"
CHECKPOINT_SET_POSITION = (
    "INSERT INTO projection_positions (name, position) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)


def connection_pragmas(busy_timeout: float, synchronous: Synchronous) -> list[str]:
    """The per-connection settings both the reader and the writer connection run on open."""
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}",
        f"PRAGMA synchronous = {synchronous}",
        "PRAGMA foreign_keys = OFF",
    ]


def create_schema(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL and create the tables, unless another process already did."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreUnavailableError(f"cannot switch the database to WAL mode (it is in {mode!r})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"the database has schema version {found}; this program knows up to "
                f"{SCHEMA_VERSION}"
            )
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "checksum" not in columns:  # a file made before checksums: its rows stay legacy
            conn.execute("ALTER TABLE events ADD COLUMN checksum INTEGER")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; SQLite may already have rolled back by itself (FULL)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def map_sqlite_error(exc: sqlite3.Error | OSError) -> EventStoreError:
    """Our typed error for a driver (or operating system) error; the caller raises it
    ``from exc``."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return StorageFullError(f"the SQLite database's disk is full: {exc}")
        return StoreUnavailableError(f"SQLite failed: {type(exc).__name__}: {exc}")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = str(exc)
    if primary == sqlite3.SQLITE_FULL or "database or disk is full" in message:
        return StorageFullError(f"the SQLite database is full: {message}")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in message:
        return StoreUnavailableError(
            f"the SQLite database stayed locked past the busy timeout: {message}"
        )
    return StoreUnavailableError(f"SQLite failed: {message}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Integer microseconds since the Unix epoch; a naive time is taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC time ``to_micros`` stored."""
    return _EPOCH + timedelta(microseconds=micros)
