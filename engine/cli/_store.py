"""Opening the event store ``--db`` names: a SQLite file, or a ``postgresql://`` URL.

Read-only commands never create a database: a mistyped path is a one-line error, not an empty
database left behind. A file that is not SQLite, or SQLite without an agentledger log, is
refused before the store would add its tables to it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from agentledger.events import EventStore, SqliteEventStore

from ._errors import CliError, NotFoundError

DEFAULT_DB = "agentledger.db"
"""The embedded store's file when ``--db`` is not given (in the working directory)."""

_SQLITE_HEADER = b"SQLite format 3\x00"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str) -> bool:
    """Whether ``--db`` names a PostgreSQL server rather than a SQLite file."""
    return db.startswith(_POSTGRES_SCHEMES)


def _check_file(path: Path, *, create: bool) -> None:
    if path.is_dir():
        raise CliError(f"{path} is a directory, not a database file")
    if not path.exists():
        if create:
            return
        raise NotFoundError(
            f"no database at {path} (`agentledger demo` makes one; --db names another)"
        )
    with path.open("rb") as file:
        header = file.read(len(_SQLITE_HEADER))
    if header and header != _SQLITE_HEADER:
        raise CliError(f"{path} is not a SQLite database")
    if not create and not _has_log(path):
        raise CliError(f"{path} is a SQLite database without an agentledger event log")


def _has_log(path: Path) -> bool:
    # Read-only, so looking does not create the -wal and -shm files of a database in WAL mode
    # when they are missing, nor anything else.
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{path} cannot be read as a SQLite database: {exc}") from None
    return row is not None


def _postgres(dsn: str) -> EventStore:
    try:
        from agentledger.events import PostgresEventStore
    except ImportError:
        raise CliError(
            "a postgresql:// --db needs asyncpg: pip install 'agentledger[postgres]'"
        ) from None
    return PostgresEventStore(dsn)


async def _check_postgres(dsn: str) -> None:
    """Refuse a database without an agentledger log before the store would create its tables
    there (the same rule as for a SQLite file: reading never creates)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, ValueError, asyncpg.PostgresError, TimeoutError) as exc:
        raise CliError(f"cannot reach the PostgreSQL store: {type(exc).__name__}: {exc}") from None
    try:
        found = await conn.fetchval("SELECT to_regclass('public.agentledger_events') IS NOT NULL")
    finally:
        await conn.close()
    if not found:
        raise NotFoundError(
            "that PostgreSQL database has no agentledger event log (`agentledger import` or "
            "an engine writing to it makes one)"
        )


@asynccontextmanager
async def open_store(db: str, *, create: bool = False) -> AsyncIterator[EventStore]:
    """The store ``db`` names, open for the block.

    ``create=False`` (every command that only reads, or writes projections' checkpoints) fails
    with ``NotFoundError`` when a SQLite file is missing, instead of creating it.
    """
    if is_postgres(db):
        store = _postgres(db)
        if not create:
            await _check_postgres(db)
    else:
        path = Path(db)
        _check_file(path, create=create)
        store = SqliteEventStore(path)
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(store)
        except ValueError as exc:  # the driver could not parse the URL
            raise CliError(f"cannot use --db {db!r}: {exc}") from None
        yield store
