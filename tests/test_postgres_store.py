"""What only ``PostgresEventStore`` has to prove: many pools (as in many processes) on one schema,
gapless positions in commit order under concurrent writers, ``LISTEN``/``NOTIFY`` tails, group
commit, strict decoding of rows written by others, and typed errors for a closed or unreachable
store. The generic store contract runs against it in ``test_store_contract.py``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import pytest

from agentledger.events import (
    ConcurrencyError,
    DuplicateEventError,
    EventCodec,
    NewEvent,
    RecordedEvent,
    SchemaVersionError,
    StoreClosedError,
    StoreUnavailableError,
    StreamAppend,
    TurnStarted,
    UnknownEventTypeError,
)

asyncpg = pytest.importorskip("asyncpg")
from agentledger.events import PostgresEventStore  # noqa: E402

# Every test runs on conftest's ``store_factory`` for PostgreSQL only: a fresh schema per test,
# a skip without a server, a failure instead under ``CI=true``.
pytestmark = pytest.mark.parametrize("store_factory", ["postgres"], indirect=True)

PG_DSN = os.environ.get("AGENTLEDGER_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The server conftest uses."""
AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
TIMEOUT = 15.0


@pytest.fixture
def schema(store_factory: Callable[[], PostgresEventStore]) -> str:
    """The fresh schema conftest made for this test (building a store object connects nothing)."""
    return store_factory().schema


def opened(schema: str, **options: object) -> PostgresEventStore:
    options.setdefault("max_size", 4)
    return PostgresEventStore(PG_DSN, schema=schema, **options)  # type: ignore[arg-type]


def turn(n: int, run: str = "run") -> NewEvent:
    return NewEvent(TurnStarted(run_id=run, span_id=f"t{n}", at=AT, turn=n), uuid.uuid4().hex)


def to(stream: str, *events: NewEvent, expected: int | None = None) -> StreamAppend:
    return StreamAppend(stream_id=stream, events=events, expected_version=expected)


async def sql(query: str, *args: object) -> object:
    conn = await asyncpg.connect(PG_DSN)
    try:
        return await conn.execute(query, *args)
    finally:
        await conn.close()


def assert_gapless(log: list[RecordedEvent]) -> None:
    assert [r.position for r in log] == list(range(1, len(log) + 1))
    versions: dict[str, int] = {}
    for r in log:
        versions[r.stream_id] = versions.get(r.stream_id, 0) + 1
        assert r.version == versions[r.stream_id], r


# -- many writers --------------------------------------------------------------------------------


async def test_two_pools_racing_for_the_same_versions_exactly_one_wins(schema: str) -> None:
    streams = [f"s{i}" for i in range(8)]
    rounds = 4
    wins: list[RecordedEvent] = []
    losses: list[ConcurrencyError] = []

    async def contend(store: PostgresEventStore, stream: str, go: anyio.Event) -> None:
        await go.wait()
        for version in range(rounds):
            try:
                wins.extend(await store.append(to(stream, turn(version), expected=version)))
            except ConcurrencyError as error:
                losses.append(error)
                # The loser must see the winner's event before trying the next version.
                assert await store.stream_version(stream) > version

    async with opened(schema) as first, opened(schema) as second:
        go = anyio.Event()
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                # Two contenders per store and stream: in-process group commit and cross-pool
                # locking both get to referee.
                for store in (first, second, first, second):
                    for stream in streams:
                        tg.start_soon(contend, store, stream, go)
                go.set()
        log = await second.read_all(limit=10_000)

    assert len(wins) == len(streams) * rounds
    assert len(losses) == 3 * len(streams) * rounds
    assert sorted(wins, key=lambda r: r.position) == log
    assert_gapless(log)
    assert all(error.actual > error.expected for error in losses)
    for stream in streams:
        assert [r.version for r in log if r.stream_id == stream] == list(range(1, rounds + 1))


async def test_fifty_writers_get_gapless_positions_in_commit_order(schema: str) -> None:
    writers, appends_each = 50, 4
    total = writers * appends_each
    finished_head = 0  # the highest position any append had returned before another began
    tail: list[RecordedEvent] = []

    async def write(store: PostgresEventStore, stream: str) -> None:
        nonlocal finished_head
        for n in range(appends_each):
            already_committed = finished_head
            recorded = await store.append(to(stream, turn(n, stream), expected=n))
            # Commit order: whatever had committed before this append began sorts before it.
            assert recorded[0].position > already_committed
            finished_head = max(finished_head, recorded[-1].position)

    async def follow(store: PostgresEventStore) -> None:
        async for recorded in store.subscribe(poll_interval=0.05):
            tail.append(recorded)
            if len(tail) == total:
                return

    async with opened(schema) as a, opened(schema) as b, opened(schema) as watcher:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, watcher)
                for i in range(writers):
                    tg.start_soon(write, a if i % 2 else b, f"w{i}")
        log = await watcher.read_all(limit=10_000)

    assert len(log) == total
    assert_gapless(log)
    # A tail reading while the writers raced saw the very same order, none skipped or repeated.
    assert tail == log


async def test_concurrent_appends_sharing_an_event_id_one_is_recorded(schema: str) -> None:
    shared = turn(1).event_id
    outcomes: list[object] = []

    async def attempt(store: PostgresEventStore, stream: str) -> None:
        event = NewEvent(TurnStarted(run_id=stream, span_id="t", at=AT, turn=1), shared)
        try:
            outcomes.append(await store.append(to(stream, turn(0, stream), event)))
        except DuplicateEventError as error:
            outcomes.append(error)

    async with opened(schema) as store:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(attempt, store, f"s{i}")
        log = await store.read_all()

    recorded = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, DuplicateEventError)]
    assert len(recorded) == 1
    assert len(refused) == 9
    assert all(error.event_ids == [shared] for error in refused)
    # The refused appends wrote nothing, not even their other event.
    assert log == recorded[0]
    assert_gapless(log)


# -- tails ---------------------------------------------------------------------------------------


async def test_a_tail_is_woken_by_another_store_objects_commits(schema: str) -> None:
    send, receive = anyio.create_memory_object_stream[RecordedEvent](100)

    async def follow(store: PostgresEventStore) -> None:
        # An hour of polling: once idle, only a notification can wake this tail in time.
        async for recorded in store.subscribe(poll_interval=3600):
            send.send_nowait(recorded)

    async with opened(schema) as reader, opened(schema) as writer:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, reader)
                for n in range(1, 6):
                    [appended] = await writer.append(to("run", turn(n)))
                    assert await receive.receive() == appended
                tg.cancel_scope.cancel()


# -- rows written by someone else ----------------------------------------------------------------


async def test_an_unknown_event_type_stops_the_stream_loudly(schema: str) -> None:
    async with opened(schema) as store:
        await store.append(to("run", turn(1)))
        await sql(
            f'INSERT INTO "{schema}".agentledger_events VALUES '
            "(2, 'run', 2, 'alien', 'from_the_future', 1, now(), '{}'::bytea)"
        )
        for read in (store.read_stream("run"), store.read_all(), store.get_event("alien")):
            with pytest.raises(UnknownEventTypeError) as caught:
                await read
            assert (caught.value.stream_id, caught.value.version) == ("run", 2)
            assert caught.value.event_type == "from_the_future"
        # What comes before it still reads.
        assert [r.version for r in await store.read_stream("run", limit=1)] == [1]


async def test_a_newer_schema_version_stops_the_stream_loudly(schema: str) -> None:
    async with opened(schema) as store:
        data = EventCodec.encode(turn(1).event)
        await sql(
            f'INSERT INTO "{schema}".agentledger_events VALUES '
            "(1, 'run', 1, 'new', 'turn_started', 99, now(), $1)",
            data,
        )
        with pytest.raises(SchemaVersionError) as caught:
            await store.read_all()
        assert (caught.value.stream_id, caught.value.version) == ("run", 1)
        assert caught.value.schema_version == 99


async def test_payloads_are_stored_as_the_codecs_exact_bytes(schema: str) -> None:
    event = turn(7)
    async with opened(schema) as store:
        await store.append(to("run", event))
    conn = await asyncpg.connect(PG_DSN)
    try:
        row = await conn.fetchrow(
            f'SELECT type, schema_version, data FROM "{schema}".agentledger_events'
        )
    finally:
        await conn.close()
    assert tuple(row) == ("turn_started", 1, EventCodec.encode(event.event))


async def test_unique_violations_past_the_lock_become_typed_errors(schema: str) -> None:
    async with opened(schema, max_retries=1) as store:
        # A trigger plays a writer that bypasses the lock: PostgreSQL raises the violations
        # after the store's own checks passed, on every attempt.
        await sql(
            f"""
            CREATE FUNCTION "{schema}".collide() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.stream_id = 'contested' THEN
                    RAISE unique_violation USING
                        CONSTRAINT = 'agentledger_events_stream_id_version_key',
                        DETAIL = format('Key (stream_id, version)=(%s, %s) already exists.',
                                        NEW.stream_id, NEW.version);
                ELSIF NEW.event_id = 'contested-id' THEN
                    RAISE unique_violation USING
                        CONSTRAINT = 'agentledger_events_event_id_key',
                        DETAIL = format('Key (event_id)=(%s) already exists.', NEW.event_id);
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER collide BEFORE INSERT ON "{schema}".agentledger_events
                FOR EACH ROW EXECUTE FUNCTION "{schema}".collide();
            """
        )
        with pytest.raises(ConcurrencyError) as conflict:
            await store.append(to("contested", turn(1), expected=0))
        assert (conflict.value.stream_id, conflict.value.expected, conflict.value.actual) == (
            "contested",
            0,
            1,
        )
        with pytest.raises(DuplicateEventError) as duplicate:
            await store.append(to("run", turn(1), NewEvent(turn(2).event, "contested-id")))
        assert duplicate.value.event_ids == ["contested-id"]
        # Nothing of either was written, and the positions they did not take are reused.
        recorded = await store.append(to("run", turn(3)))
        assert await store.read_all() == recorded
        assert recorded[0].position == 1


# -- lifecycle and errors ------------------------------------------------------------------------


async def test_opening_creates_missing_schema_and_tables_once(schema: str) -> None:
    fresh = f"{schema}_new"
    try:
        # Concurrent first opens must not trip over each other's CREATE statements.
        stores = [opened(fresh) for _ in range(3)]
        async with stores[0], stores[1], stores[2]:
            await stores[0].append(to("run", turn(1)))
            assert await stores[2].head_position() == 1
        async with opened(fresh) as again:
            assert await again.stream_version("run") == 1
    finally:
        await sql(f'DROP SCHEMA IF EXISTS "{fresh}" CASCADE')


async def test_every_method_refuses_when_closed(schema: str) -> None:
    store = opened(schema)
    calls = {
        "append": lambda: store.append(to("run", turn(1))),
        "read_stream": lambda: store.read_stream("run"),
        "read_all": lambda: store.read_all(),
        "get_event": lambda: store.get_event("x"),
        "stream_version": lambda: store.stream_version("run"),
        "head_position": lambda: store.head_position(),
        "load_checkpoint": lambda: store.load_checkpoint("p"),
        "save_checkpoint": lambda: store.save_checkpoint(
            "p", expected_position=0, position=1, rows={}
        ),
        "subscribe": lambda: anext(store.subscribe()),
    }
    for call in calls.values():
        with pytest.raises(StoreClosedError):
            await call()
    async with store:
        await store.append(to("run", turn(1)))
    for call in calls.values():
        with pytest.raises(StoreClosedError):
            await call()
    # Reopening the same object sees what was written.
    async with store:
        assert await store.head_position() == 1


async def test_aclose_waits_for_appends_in_flight(schema: str) -> None:
    results: list[list[RecordedEvent]] = []

    async def write(store: PostgresEventStore, i: int) -> None:
        results.append(await store.append(to(f"s{i}", turn(i))))

    store = opened(schema)
    async with store, anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(write, store, i)
        await anyio.wait_all_tasks_blocked()
        await store.aclose()
    assert len(results) == 20
    async with opened(schema) as reopened:
        assert sorted(await reopened.read_all(), key=lambda r: r.position) == sorted(
            (r for batch in results for r in batch), key=lambda r: r.position
        )


async def test_cancelled_appends_leave_a_consistent_store(schema: str) -> None:
    survivors: list[RecordedEvent] = []

    async def survive(store: PostgresEventStore, stream: str) -> None:
        survivors.extend(await store.append(to(stream, turn(1, stream))))

    async with opened(schema) as store:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as outer:
                with anyio.CancelScope() as doomed:
                    async with anyio.create_task_group() as inner:
                        # Cancelled and surviving callers interleave in the group-commit queue,
                        # so leadership gets handed to cancelled ones too.
                        for i in range(30):
                            if i % 2:
                                outer.start_soon(survive, store, f"s{i}")
                            else:
                                inner.start_soon(store.append, to(f"s{i}", turn(1, f"s{i}")))
                        await anyio.wait_all_tasks_blocked()
                        doomed.cancel()
            recorded = await store.append(to("after", turn(1)))
        log = await store.read_all()
    # Whatever committed is gapless, every survivor committed, and the queue is not wedged.
    assert_gapless(log)
    assert len(survivors) == 15
    assert set(survivors) <= set(log)
    assert log[-1] == recorded[0]


async def test_an_unreachable_server_raises_store_unavailable(schema: str) -> None:
    with pytest.raises(StoreUnavailableError):
        async with PostgresEventStore("postgresql://postgres@127.0.0.1:1/test", schema=schema):
            pass


async def test_lost_connections_are_reported_then_replaced(schema: str) -> None:
    async with opened(schema, min_size=1, max_size=1) as store:
        first = await store.append(to("run", turn(1)))
        # The server drops every connection of this store's pool (its queries name the schema).
        await sql(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND strpos(query, $1) > 0",
            f'"{schema}".',
        )
        attempt = turn(2)
        # An outcome unknown is settled by id, never by appending again blindly.
        with contextlib.suppress(StoreUnavailableError):
            await store.append(to("run", attempt))
        committed = await store.get_event(attempt.event_id) is not None
        assert await store.stream_version("run") == 1 + committed
        more = await store.append(to("run", turn(3)))
        assert more[0].position == first[0].position + 1 + committed


async def test_checkpoint_saves_from_two_pools_exactly_one_wins(schema: str) -> None:
    outcomes: list[str] = []

    async def save(store: PostgresEventStore, key: str) -> None:
        try:
            await store.save_checkpoint("p", expected_position=0, position=5, rows={key: b"x"})
            outcomes.append(key)
        except ConcurrencyError as error:
            assert (error.stream_id, error.expected, error.actual) == ("$projection-p", 0, 5)
            outcomes.append("conflict")

    async with opened(schema) as a, opened(schema) as b:
        async with anyio.create_task_group() as tg:
            for i, store in enumerate((a, b, a, b)):
                tg.start_soon(save, store, f"k{i}")
        saved = await b.load_checkpoint("p")
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1
    assert (saved.position, saved.rows) == (5, {winners[0]: b"x"})
