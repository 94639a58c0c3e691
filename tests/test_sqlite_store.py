"""What only the SQLite store does: the file, other processes, group commit, a full disk.

The generic contract is in ``test_store_contract.py``; everything here runs on real files in
``tmp_path``, and a second ``SqliteEventStore`` object on the same file stands in for another
process (it has its own connections, writer and locks, and shares nothing in memory).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from agentledger.events import (
    ConcurrencyError,
    DuplicateEventError,
    NewEvent,
    RecordedEvent,
    RunStarted,
    SchemaVersionError,
    SqliteEventStore,
    StorageFullError,
    StoreClosedError,
    StoreUnavailableError,
    StreamAppend,
    TurnStarted,
    UnknownEventTypeError,
)

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def turn(run: str, n: int) -> NewEvent:
    return NewEvent(TurnStarted(run_id=run, span_id=f"{run}/{n}", at=AT, turn=n), uuid.uuid4().hex)


def big(run: str, size: int) -> NewEvent:
    event = RunStarted(
        run_id=run, span_id=run, at=AT, agent="a", model="m", task="x" * size, user_id="u"
    )
    return NewEvent(event, uuid.uuid4().hex)


def to(stream: str, events: Sequence[NewEvent], expected: int | None = None) -> StreamAppend:
    return StreamAppend(stream, events, expected)


async def consistent_log(store: SqliteEventStore) -> list[RecordedEvent]:
    """The whole log, after checking what must hold whatever happened: gapless positions,
    gapless versions per stream, and every read path agreeing."""
    log: list[RecordedEvent] = []
    while page := await store.read_all(after=len(log), limit=500):
        log += page
    assert [e.position for e in log] == list(range(1, len(log) + 1))
    assert await store.head_position() == len(log)
    streams: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in log:
        streams[event.stream_id].append(event)
    for stream_id, events in streams.items():
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        assert await store.read_stream(stream_id) == events
        assert await store.stream_version(stream_id) == len(events)
    return log


# -- the file --------------------------------------------------------------------------------


async def test_events_and_checkpoints_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    ticks = iter(AT + timedelta(seconds=s) for s in range(100))
    async with SqliteEventStore(path, clock=lambda: next(ticks)) as store:
        first = await store.append(to("run-1", [turn("run-1", 1), turn("run-1", 2)], 0))
        second = await store.append(to("run-2", [turn("run-2", 1)], 0), to("run-1", [], 2))
        await store.save_checkpoint("spend", expected_position=0, position=3, rows={"u": b"7"})
    async with SqliteEventStore(path) as reopened:
        assert await consistent_log(reopened) == first + second
        assert [e.recorded_at for e in first + second] == [AT, AT, AT + timedelta(seconds=1)]
        assert await reopened.get_event(second[0].event_id) == second[0]
        saved = await reopened.load_checkpoint("spend")
        assert (saved.position, saved.rows) == (3, {"u": b"7"})
        third = await reopened.append(to("run-1", [turn("run-1", 3)], 2))
        assert (third[0].position, third[0].version) == (4, 3)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_store_is_unusable_outside_its_block(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    with pytest.raises(StoreClosedError):
        await store.append(to("run-1", [turn("run-1", 1)]))
    async with store:
        await store.append(to("run-1", [turn("run-1", 1)]))
    with pytest.raises(StoreClosedError):
        await store.read_all()
    with pytest.raises(StoreClosedError):
        await store.append(to("run-1", [turn("run-1", 2)]))


async def test_an_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        async with SqliteEventStore(tmp_path / "missing-dir" / "events.db"):
            pass


def test_synchronous_must_be_a_sqlite_level(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteEventStore(tmp_path / "events.db", synchronous="SOMETIMES")  # type: ignore[arg-type]


# -- several processes on one file -------------------------------------------------------------


async def test_two_stores_on_one_file_see_one_conflict_and_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    outcomes: dict[str, object] = {}
    async with SqliteEventStore(path) as one, SqliteEventStore(path) as two:

        async def try_append(name: str, store: SqliteEventStore) -> None:
            try:
                outcomes[name] = await store.append(to("shared", [turn(name, 1)], 0))
            except ConcurrencyError as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(try_append, "one", one)
            tg.start_soon(try_append, "two", two)
        errors = [o for o in outcomes.values() if isinstance(o, ConcurrencyError)]
        assert len(errors) == 1
        assert (errors[0].stream_id, errors[0].expected, errors[0].actual) == ("shared", 0, 1)
        assert len(await consistent_log(one)) == 1
        assert await two.read_all() == await one.read_all()


async def test_two_stores_appending_concurrently_keep_one_gapless_log(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    committed: list[RecordedEvent] = []
    conflicts = 0
    async with SqliteEventStore(path) as one, SqliteEventStore(path) as two:

        async def writer(store: SqliteEventStore, name: str, count: int) -> None:
            # Both stores fight over the same few streams with expected versions they read
            # first: every lost race must surface as a conflict, never as a gap or a fork.
            nonlocal conflicts
            for n in range(count):
                stream = f"stream-{n % 3}"
                while True:
                    version = await store.stream_version(stream)
                    try:
                        committed.extend(await store.append(to(stream, [turn(name, n)], version)))
                        break
                    except ConcurrencyError as exc:
                        assert exc.stream_id == stream and exc.expected == version
                        assert exc.actual > version
                        conflicts += 1

        async with anyio.create_task_group() as tg:
            for w in range(4):
                tg.start_soon(writer, one, f"one-{w}", 15)
                tg.start_soon(writer, two, f"two-{w}", 15)
        log = await consistent_log(one)
    assert len(log) == 8 * 15
    assert sorted(log, key=lambda e: e.position) == sorted(committed, key=lambda e: e.position)
    assert conflicts > 0  # eight writers on three streams: someone always loses a race


async def test_a_second_store_tails_the_first(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SqliteEventStore(path) as writer, SqliteEventStore(path) as reader:
        appended = await writer.append(to("run-1", [turn("run-1", 1), turn("run-1", 2)]))
        seen: list[RecordedEvent] = []
        with anyio.fail_after(5):
            async for event in reader.subscribe(poll_interval=0.01):
                seen.append(event)
                if len(seen) == 2:
                    break
        assert seen == appended


async def test_a_locked_database_fails_the_append_and_the_writer_keeps_serving(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with SqliteEventStore(path, busy_timeout=0.05) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.append(to("run-1", [turn("run-1", 1)], 0))
        finally:
            other.execute("ROLLBACK")
            other.close()
        [recorded] = await store.append(to("run-1", [turn("run-1", 1)], 0))
        assert (recorded.position, recorded.version) == (1, 1)
        assert await consistent_log(store) == [recorded]


# -- group commit ------------------------------------------------------------------------------


async def test_concurrent_appends_share_transactions(tmp_path: Path) -> None:
    results: dict[int, list[RecordedEvent]] = {}
    async with SqliteEventStore(tmp_path / "events.db") as store:

        async def one(n: int) -> None:
            results[n] = await store.append(to(f"run-{n}", [turn(f"run-{n}", 1)], 0))

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(one, n)
        log = await consistent_log(store)
        assert store.stats.appends == 200
        assert store.stats.events == 200
        assert store.stats.transactions <= 10, store.stats
    assert sorted((e for rs in results.values() for e in rs), key=lambda e: e.position) == log


async def test_a_failing_append_fails_alone_in_its_batch(tmp_path: Path) -> None:
    async with SqliteEventStore(tmp_path / "events.db") as store:
        [stored] = await store.append(to("taken", [turn("taken", 1)], 0))
        again = turn("twice", 1)
        before = store.stats.transactions
        good: list[RecordedEvent] = []
        failed: dict[str, Exception] = {}

        async def attempt(name: str, *appends: StreamAppend) -> None:
            try:
                good.extend(await store.append(*appends))
            except (ConcurrencyError, DuplicateEventError) as exc:
                failed[name] = exc

        stale = to("taken", [turn("taken", 2)], 0)
        repeated = to("repeat", [NewEvent(stored.event, stored.event_id)])
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(attempt, f"ok-{n}", to(f"run-{n}", [turn(f"run-{n}", 1)], 0))
            tg.start_soon(attempt, "stale", stale)
            tg.start_soon(attempt, "repeated", repeated)
            tg.start_soon(attempt, "first", to("twice-a", [again]))
            tg.start_soon(attempt, "second", to("twice-b", [again]))
            tg.start_soon(attempt, "ok-after", to("run-after", [turn("run-after", 1)], 0))
            # Two streams in one call: the stale half takes the good half down with it.
            half = to("run-half", [turn("run-half", 1)], 0)
            tg.start_soon(attempt, "half-stale", half, to("taken", [turn("taken", 3)], 0))

        assert store.stats.transactions == before + 1  # all of them rode one transaction
        assert set(failed) == {"stale", "repeated", "second", "half-stale"}
        stale_error = failed["stale"]
        assert isinstance(stale_error, ConcurrencyError)
        assert (stale_error.stream_id, stale_error.expected, stale_error.actual) == ("taken", 0, 1)
        half_stale_error = failed["half-stale"]
        assert isinstance(half_stale_error, ConcurrencyError)
        assert half_stale_error.stream_id == "taken"
        for name, event_id in (("repeated", stored.event_id), ("second", again.event_id)):
            error = failed[name]
            assert isinstance(error, DuplicateEventError)
            assert error.event_ids == [event_id]
        log = await consistent_log(store)
        assert log == [stored, *sorted(good, key=lambda e: e.position)]
        assert {e.stream_id for e in log} == {"taken", "twice-a", "run-after"} | {
            f"run-{n}" for n in range(20)
        }


async def test_a_caller_cancelled_before_its_batch_is_taken_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    # The writer reads the clock right after it takes a batch; until another process lets go
    # of the write lock, that batch is stuck in BEGIN IMMEDIATE and the next one waits.
    taken = anyio.Event()

    def clock() -> datetime:
        taken.set()
        return AT

    async with SqliteEventStore(path, clock=clock, busy_timeout=10) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        first = turn("run-1", 1)
        dropped = turn("run-1", 2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.append, to("run-1", [first], 0))
            await taken.wait()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await store.append(to("run-1", [dropped], 1))
            assert scope.cancelled_caught
            other.execute("ROLLBACK")
            other.close()
        kept = await store.append(to("run-1", [turn("run-1", 2)], 1))
        assert await store.get_event(dropped.event_id) is None
        log = await consistent_log(store)
        assert [e.event_id for e in log] == [first.event_id, kept[0].event_id]


async def test_a_caller_cancelled_after_its_batch_is_taken_still_commits(tmp_path: Path) -> None:
    # The clock is read by the writer once it has taken a batch: cancelling the caller from
    # there hits it exactly while its append is in flight.
    scope = anyio.CancelScope()

    def clock() -> datetime:
        scope.cancel()
        return AT

    async with SqliteEventStore(tmp_path / "events.db", clock=clock) as store:
        events = [turn("run-1", 1), turn("run-1", 2)]
        with scope:
            await store.append(to("run-1", events[:1], 0), to("run-2", events[1:], 0))
        assert scope.cancelled_caught
        # The cancelled caller stopped waiting; the next append commits after its batch did.
        last = turn("run-3", 1)
        await store.append(to("run-3", [last]))
        log = await consistent_log(store)
        assert [e.event_id for e in log] == [n.event_id for n in [*events, last]]
        assert await store.get_event(events[1].event_id) == log[1]


async def test_cancelling_many_waiting_callers_leaves_whole_appends_only(tmp_path: Path) -> None:
    succeeded: list[list[RecordedEvent]] = []
    attempted: list[list[NewEvent]] = []
    async with SqliteEventStore(tmp_path / "events.db") as store:

        async def keep_appending(n: int) -> None:
            for k in range(1_000_000):
                # Two streams per append, so a torn append would show as one half present.
                pair = [turn(f"run-{n}", k), turn(f"side-{n % 3}", k)]
                attempted.append(pair)
                succeeded.append(await store.append(to(f"run-{n}", pair[:1]), to("x", pair[1:])))
                if len(succeeded) == 150:
                    # Cancels every other caller while it waits, some of them in flight.
                    scope.cancel()

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for n in range(30):
                    tg.start_soon(keep_appending, n)
        # The store goes on serving; this append commits after any batch still in flight.
        after = await store.append(to("x", [turn("after", 1)]))
        log = await consistent_log(store)
        assert log[-1:] == after
        by_id = {e.event_id: e for e in log}
        for pair in attempted:
            present = [n.event_id in by_id for n in pair]
            assert present in ([True, True], [False, False])
        assert all(e in log for recorded in succeeded for e in recorded)
        assert len(log) == 1 + 2 * sum(1 for pair in attempted if pair[0].event_id in by_id)


# -- what is stored ------------------------------------------------------------------------------


def insert_raw(path: Path, stream: str, event_type: str, schema_version: int, data: bytes) -> None:
    with sqlite3.connect(path) as raw:
        position = raw.execute("SELECT coalesce(max(position), 0) + 1 FROM events").fetchone()[0]
        version = raw.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = ?", (stream,)
        ).fetchone()[0]
        raw.execute(
            "INSERT INTO events (position, stream_id, version, event_id, type, schema_version,"
            " recorded_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (position, stream, version, uuid.uuid4().hex, event_type, schema_version, 0, data),
        )


async def test_an_unknown_event_type_stops_reading_loudly(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SqliteEventStore(path) as store:
        await store.append(to("run-1", [turn("run-1", 1), turn("run-1", 2)], 0))
        insert_raw(path, "run-1", "made_up_event", 1, b'{"type": "made_up_event"}')
        with pytest.raises(UnknownEventTypeError) as caught:
            await store.read_all()
        assert (caught.value.stream_id, caught.value.version) == ("run-1", 3)
        assert caught.value.event_type == "made_up_event"
        with pytest.raises(UnknownEventTypeError):
            await store.read_stream("run-1")
        assert len(await store.read_all(limit=2)) == 2  # what comes before it still reads


async def test_a_newer_schema_version_stops_reading_loudly(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SqliteEventStore(path) as store:
        [recorded] = await store.append(to("run-1", [turn("run-1", 1)], 0))
        data = recorded.event.model_dump_json().encode()
        insert_raw(path, "run-2", "turn_started", 99, data)
        with pytest.raises(SchemaVersionError) as caught:
            await store.read_stream("run-2")
        assert (caught.value.stream_id, caught.value.version) == ("run-2", 1)
        assert caught.value.schema_version == 99


# -- a full disk -----------------------------------------------------------------------------------


async def test_a_full_database_fails_the_batch_and_keeps_the_log_readable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SqliteEventStore(path) as sizing:
        await sizing.append(to("warm-up", [turn("warm-up", 1)], 0))
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    async with SqliteEventStore(path, max_page_count=pages + 40) as store:
        committed = 1
        with pytest.raises(StorageFullError):
            for _ in range(1000):  # 40 pages of 4 KiB hold no more than 160 KiB
                await store.append(to("filling", [big("filling", 8000)]))
                committed += 1
        log = await consistent_log(store)
        assert len(log) == committed

        # A whole batch that does not fit fails together; each caller gets the error.
        errors: list[Exception] = []

        async def too_big(n: int) -> None:
            try:
                await store.append(to(f"big-{n}", [big(f"big-{n}", 200_000)], 0))
            except StorageFullError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(too_big, n)
        assert len(errors) == 5
        assert await consistent_log(store) == log

    # Given room again (a bigger quota, as after freeing disk space), appends go on.
    async with SqliteEventStore(path) as roomy:
        more = await roomy.append(to("big-0", [big("big-0", 200_000)], 0))
        assert more[0].position == committed + 1
        assert await consistent_log(roomy) == [*log, *more]
