"""Shared fixtures: one ``store`` fixture parametrised over every backend.

PostgreSQL tests use ``AGENTLEDGER_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
Without a reachable server they skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from agentledger.events import EventStore, MemoryEventStore

PG_DSN = os.environ.get("AGENTLEDGER_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["memory", "sqlite", "postgres"]

StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]


@pytest.fixture(autouse=True)
def _no_provider_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model clients read ``$OPENAI_BASE_URL``/``$ANTHROPIC_BASE_URL``; a developer's own
    setting must not point the tests' clients elsewhere."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


async def _postgres_reachable() -> bool:
    try:
        import asyncpg
    except ImportError:
        return False
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _fresh_pg_schema() -> str:
    """A new, empty schema for one test, so tests never see each other's events."""
    import asyncpg

    name = f"t_{os.getpid()}_{os.urandom(4).hex()}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_schema(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """A factory of store objects over one shared database, per backend.

    Every call opens a new store object on the same data (for memory: the same object), so a
    test can close and reopen, or run two writers side by side.
    """
    backend = request.param
    if backend == "memory":
        shared = MemoryEventStore()
        yield lambda: shared
    elif backend == "sqlite":
        from agentledger.events import SqliteEventStore

        path = tmp_path / "events.db"
        yield lambda: SqliteEventStore(path)
    else:
        if not await _postgres_reachable():
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} and CI=true")
            pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}")
        from agentledger.events import PostgresEventStore

        schema = await _fresh_pg_schema()
        try:
            yield lambda: PostgresEventStore(PG_DSN, schema=schema)
        finally:
            await _drop_pg_schema(schema)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[EventStore]:
    """An open, empty store of each backend."""
    async with store_factory() as opened:
        yield opened
