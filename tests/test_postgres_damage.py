"""PostgreSQL: the checksum column (added to tables made before it), damage found on read, and
a pooled connection whose backend was killed is thrown away, not handed to the next caller."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from agentledger.events import (
    CorruptEventError,
    NewEvent,
    PostgresEventStore,
    StoreUnavailableError,
    StreamAppend,
    TurnStarted,
    event_checksum,
)

asyncpg = pytest.importorskip("asyncpg")
pytestmark = pytest.mark.parametrize("store_factory", ["postgres"], indirect=True)

PG_DSN = os.environ.get("AGENTLEDGER_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def schema(store_factory: Callable[[], PostgresEventStore]) -> str:
    return store_factory().schema


def _turns(stream: str, count: int) -> StreamAppend:
    events = [
        NewEvent(TurnStarted(run_id="r", span_id=f"t{n}", at=AT, turn=n), uuid.uuid4().hex)
        for n in range(1, count + 1)
    ]
    return StreamAppend(stream, events)


async def _sql(query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_DSN)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def test_rows_carry_checksums_and_damage_is_found_on_read(schema: str) -> None:
    async with PostgresEventStore(PG_DSN, schema=schema, listen=False) as store:
        await store.append(_turns("run-r", 3))
    table = f'"{schema}".agentledger_events'
    rows = await _sql(
        f"SELECT stream_id, version, type, schema_version, data, checksum FROM {table}"
    )
    assert all(r["checksum"] == event_checksum(*list(r.values())[:5]) for r in rows)
    await _sql(
        f"UPDATE {table} SET data = convert_to("
        "replace(convert_from(data, 'UTF8'), '2024', '2025'), 'UTF8') WHERE version = 2"
    )
    async with PostgresEventStore(PG_DSN, schema=schema, listen=False) as store:
        first, second, third = await store.read_stream("run-r")
        assert first.event.turn == 1 and third.event.turn == 3
        with pytest.raises(CorruptEventError) as caught:
            second.event  # noqa: B018
    assert (caught.value.stream_id, caught.value.version, caught.value.position) == ("run-r", 2, 2)
    assert "2025" not in str(caught.value)


async def test_a_table_made_before_checksums_gets_the_column_and_old_rows_read(
    schema: str,
) -> None:
    async with PostgresEventStore(PG_DSN, schema=schema, listen=False) as store:
        await store.append(_turns("run-r", 2))
    table = f'"{schema}".agentledger_events'
    await _sql(f"ALTER TABLE {table} DROP COLUMN checksum")
    async with PostgresEventStore(PG_DSN, schema=schema, listen=False) as store:
        assert [r.event.turn for r in await store.read_stream("run-r")] == [1, 2]
        await store.append(_turns("run-s", 1))
    rows = await _sql(
        f"SELECT stream_id, checksum IS NULL AS legacy FROM {table} ORDER BY position"
    )
    assert [(r["stream_id"], r["legacy"]) for r in rows] == [
        ("run-r", True),
        ("run-r", True),
        ("run-s", False),
    ]


async def test_a_connection_whose_backend_was_killed_is_not_reused(schema: str) -> None:
    # Backends are killed only in a database of the test's own.
    database = f"agentledger_kill_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _sql(f'CREATE DATABASE "{database}"')
    try:
        await _kill_and_go_on(PG_DSN.rpartition("/")[0] + "/" + database, database)
    finally:
        await _sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _kill_and_go_on(dsn: str, database: str) -> None:
    async with PostgresEventStore(dsn, listen=False, min_size=1, max_size=1) as store:
        await store.append(_turns("run-r", 1))
        killed = await _sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        assert [row[0] for row in killed] == [True]
        failures = 0
        for _ in range(3):  # the first use may meet the dead connection, typed; then it works
            try:
                assert await store.head_position() == 1
            except StoreUnavailableError:
                failures += 1
        assert failures <= 1
        await store.append(_turns("run-r", 1))
        assert await store.stream_version("run-r") == 2
