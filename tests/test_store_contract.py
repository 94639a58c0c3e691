"""The ``EventStore`` contract, run against every backend (memory, SQLite, PostgreSQL).

Every test takes the ``store`` (open, empty) or ``store_factory`` (new objects over one database)
fixture from ``conftest.py``, so a backend passes exactly when it behaves like the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

import anyio
import anyio.lowlevel
import pytest

from agentledger.events import (
    EVENT_TYPES,
    BudgetReserved,
    Checkpoint,
    ConcurrencyError,
    DuplicateEventError,
    Event,
    EventBase,
    EventCodec,
    EventStore,
    EventStoreError,
    NewEvent,
    RecordedEvent,
    RunCompleted,
    RunStarted,
    SchemaVersionError,
    StoreClosedError,
    StreamAppend,
    ToolCallSucceeded,
    TurnStarted,
    UnknownEventTypeError,
)

StoreFactory = Callable[[], EventStore]
"""What ``conftest.store_factory`` yields: a new, unopened store over the test's database."""

AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
TIMEOUT = 10.0
"""Seconds any waiting test may take before it counts as hung."""


def turn(n: int, run: str = "run-1") -> TurnStarted:
    return TurnStarted(run_id=run, span_id=f"turn-{n}", at=AT, turn=n)


def started(run: str = "run-1") -> RunStarted:
    return RunStarted(run_id=run, span_id=run, at=AT, agent="a", model="m", task="t", user_id="u")


def new(event: Event, event_id: str | None = None) -> NewEvent:
    return NewEvent(event=event, event_id=event_id or uuid.uuid4().hex)


def turns(count: int, run: str = "run-1", first: int = 1) -> list[NewEvent]:
    return [new(turn(n, run)) for n in range(first, first + count)]


def to(
    stream: str, events: Sequence[NewEvent], expected_version: int | None = None
) -> StreamAppend:
    return StreamAppend(stream_id=stream, events=events, expected_version=expected_version)


async def everything(store: EventStore) -> list[RecordedEvent]:
    return await store.read_all(after=0, limit=1_000_000)


def assert_recorded(
    recorded: Sequence[RecordedEvent], stream: str, versions: range, appended: Sequence[NewEvent]
) -> None:
    assert [r.stream_id for r in recorded] == [stream] * len(appended)
    assert [r.version for r in recorded] == list(versions)
    assert [r.event_id for r in recorded] == [n.event_id for n in appended]
    assert [r.event for r in recorded] == [n.event for n in appended]


# -- append and read back ----------------------------------------------------------------------


async def test_empty_store(store: EventStore) -> None:
    assert await store.head_position() == 0
    assert await store.read_all() == []
    assert await store.read_stream("nowhere") == []
    assert await store.stream_version("nowhere") == 0
    assert await store.get_event("nothing") is None


async def test_append_returns_what_is_read_back(store: EventStore) -> None:
    batch = [new(started()), *turns(2)]
    recorded = await store.append(to("run-1", batch, expected_version=0))

    assert_recorded(recorded, "run-1", range(1, 4), batch)
    assert [r.position for r in recorded] == [1, 2, 3]
    for r in recorded:
        assert r.schema_version == EventCodec.schema_version(r.event.type)
        assert r.recorded_at.tzinfo is not None
        assert r.recorded_at.utcoffset() is not None
    assert await store.read_stream("run-1") == recorded
    assert await everything(store) == recorded
    assert await store.stream_version("run-1") == 3
    assert await store.head_position() == 3
    for r in recorded:
        assert await store.get_event(r.event_id) == r


async def test_one_append_shares_one_recorded_at(store: EventStore) -> None:
    recorded = await store.append(to("run-1", turns(3)), to("run-2", turns(2, "run-2")))
    assert len({r.recorded_at for r in recorded}) == 1


async def test_versions_and_positions_are_gapless_across_streams(store: EventStore) -> None:
    await store.append(to("a", turns(2, "a"), 0))
    await store.append(to("b", turns(1, "b"), 0), to("a", turns(1, "a", 3), 2))
    await store.append(to("b", turns(3, "b", 2), None))
    await store.append(to("c", turns(1, "c")))

    log = await everything(store)
    assert [r.position for r in log] == list(range(1, 9))
    assert [(r.stream_id, r.version) for r in log] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("a", 3),
        ("b", 2),
        ("b", 3),
        ("b", 4),
        ("c", 1),
    ]
    for stream, length in {"a": 3, "b": 4, "c": 1}.items():
        events = await store.read_stream(stream)
        assert [r.version for r in events] == list(range(1, length + 1))
        assert [r.event.turn for r in events if isinstance(r.event, TurnStarted)] == list(
            range(1, length + 1)
        )
        assert await store.stream_version(stream) == length
    assert await store.head_position() == 8


async def test_multi_stream_append_returns_events_in_the_order_given(store: EventStore) -> None:
    run_events = turns(2, "run-1")
    budget_events = turns(1, "budget")
    recorded = await store.append(to("run-1", run_events, 0), to("budget", budget_events, 0))
    assert [(r.stream_id, r.version, r.position) for r in recorded] == [
        ("run-1", 1, 1),
        ("run-1", 2, 2),
        ("budget", 1, 3),
    ]
    assert [r.event_id for r in recorded] == [n.event_id for n in run_events + budget_events]


async def test_two_appends_to_one_stream_in_one_call_follow_each_other(store: EventStore) -> None:
    first, second = turns(2), turns(1, first=3)
    recorded = await store.append(to("run-1", first, 0), to("run-1", second, 2))
    assert [r.version for r in recorded] == [1, 2, 3]
    assert await store.stream_version("run-1") == 3


async def test_empty_appends_write_nothing(store: EventStore) -> None:
    assert await store.append() == []
    assert await store.append(to("run-1", [])) == []
    assert await store.head_position() == 0
    assert await store.stream_version("run-1") == 0


async def test_a_large_batch_is_gapless(store: EventStore) -> None:
    batch = turns(500)
    recorded = await store.append(to("run-1", batch, 0))
    assert [r.position for r in recorded] == list(range(1, 501))
    assert [r.version for r in recorded] == list(range(1, 501))
    assert await everything(store) == recorded


async def test_event_contents_survive_storage_exactly(store: EventStore) -> None:
    odd_text = 'nul \x00, emoji \U0001f600, quote ", backslash \\, rtl \u202e, newline \n'
    events = [
        new(
            BudgetReserved(
                run_id="run-1",
                span_id="s",
                at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                reservation_id="res",
                user_id=odd_text,
                day=date(2024, 2, 29),
                model="m",
                amount_usd=Decimal("0.000000000000000000000000001"),
            )
        ),
        new(
            ToolCallSucceeded(
                run_id="run-1",
                span_id="s",
                at=AT,
                call_id="c",
                tool_name="t",
                result={"text": odd_text, "n": [1, -(2**63), 2**63 - 1, 0.1, None, True, {}]},
            )
        ),
        new(RunCompleted(run_id="run-1", span_id="s", at=AT, output=odd_text * 200)),
    ]
    recorded = await store.append(to("run-1", events, 0))
    assert [r.event for r in await store.read_stream("run-1")] == [n.event for n in events]
    assert await everything(store) == recorded


# -- expected versions -------------------------------------------------------------------------


async def test_expected_version_zero_means_a_new_stream(store: EventStore) -> None:
    await store.append(to("run-1", turns(2), 0))
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(to("run-1", turns(1, first=3), 0))
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("run-1", 0, 2)
    assert await store.stream_version("run-1") == 2


async def test_expected_version_none_appends_anywhere(store: EventStore) -> None:
    await store.append(to("run-1", turns(1), None))
    await store.append(to("run-1", turns(1, first=2), None))
    assert await store.stream_version("run-1") == 2


@pytest.mark.parametrize("expected", [2, 4])
async def test_wrong_expected_version_raises_and_writes_nothing(
    store: EventStore, expected: int
) -> None:
    await store.append(to("run-1", turns(3), 0))
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(to("run-1", turns(1, first=4), expected))
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
        "run-1",
        expected,
        3,
    )
    assert await store.stream_version("run-1") == 3
    assert await store.head_position() == 3


async def test_expected_version_of_a_missing_stream(store: EventStore) -> None:
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(to("run-1", turns(1), 1))
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("run-1", 1, 0)
    assert await store.head_position() == 0


async def test_the_right_expected_version_appends(store: EventStore) -> None:
    await store.append(to("run-1", turns(2), 0))
    recorded = await store.append(to("run-1", turns(2, first=3), 2))
    assert [r.version for r in recorded] == [3, 4]


async def test_concurrent_writers_to_one_stream_exactly_one_wins(store: EventStore) -> None:
    outcomes: list[str] = []

    async def writer(index: int) -> None:
        try:
            await store.append(to("run-1", [new(turn(index))], expected_version=0))
        except ConcurrencyError as error:
            assert (error.expected, error.actual) == (0, 1)
            outcomes.append("conflict")
        else:
            outcomes.append("won")

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index in range(10):
                tg.start_soon(writer, index)
    assert sorted(outcomes) == ["conflict"] * 9 + ["won"]
    assert await store.stream_version("run-1") == 1
    assert await store.head_position() == 1


async def test_concurrent_appends_to_many_streams_are_gapless(store: EventStore) -> None:
    returned: list[RecordedEvent] = []

    async def writer(stream: str) -> None:
        for n in range(1, 4):
            returned.extend(await store.append(to(stream, turns(2, stream, 2 * n - 1), 2 * n - 2)))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index in range(8):
                tg.start_soon(writer, f"run-{index}")

    log = await everything(store)
    assert [r.position for r in log] == list(range(1, 49))
    assert sorted(returned, key=lambda r: r.position) == log
    for index in range(8):
        stream = await store.read_stream(f"run-{index}")
        assert [r.version for r in stream] == list(range(1, 7))


async def test_one_failing_append_does_not_fail_its_neighbours(store: EventStore) -> None:
    # Group commit puts concurrent appends in one transaction; each must keep its own outcome.
    # An integer over 64 bits has no exact JSON form: that append alone must fail.
    await store.append(to("taken", turns(1, "taken"), 0))
    outcomes: dict[str, str] = {}
    too_big = ToolCallSucceeded(
        run_id="r", span_id="s", at=AT, call_id="c", tool_name="t", result=2**70
    )

    async def append(stream: str, expected: int | None) -> None:
        events = [new(too_big)] if stream == "unencodable" else turns(2, stream)
        try:
            await store.append(to(stream, events, expected))
        except EventStoreError as error:
            outcomes[stream] = type(error).__name__
        else:
            outcomes[stream] = "ok"

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(append, "good-1", 0)
            tg.start_soon(append, "taken", 0)
            tg.start_soon(append, "unencodable", None)
            tg.start_soon(append, "good-2", 0)
            tg.start_soon(append, "good-3", None)
    assert outcomes["taken"] == "ConcurrencyError"
    assert outcomes["unencodable"] == "EncodeError"
    assert await store.read_stream("unencodable") == []
    for stream in ("good-1", "good-2", "good-3"):
        assert outcomes[stream] == "ok", outcomes
        assert len(await store.read_stream(stream)) == 2
    log = await everything(store)
    assert [r.position for r in log] == list(range(1, len(log) + 1))


async def test_concurrent_appends_are_judged_as_if_made_one_by_one(store: EventStore) -> None:
    # Started in this order, the calls queue in this order; group commit may put any run of
    # them in one transaction, and each must see what the accepted calls before it wrote.
    seed = turns(2, "taken")
    await store.append(to("taken", seed, 0))
    first = new(turn(1, "new"))
    calls: list[tuple[str, list[StreamAppend]]] = [
        ("new at 0", [to("new", [first], 0)]),
        ("new at 0 again", [to("new", turns(1, "new", 2), 0)]),
        ("new at 1", [to("new", turns(1, "new", 2), 1)]),
        ("first's id again", [to("other", [new(turn(1, "other"), first.event_id)])]),
        ("retry of the seed", [to("taken", seed, 0)]),
        ("taken at 2", [to("taken", turns(1, "taken", 3), 2)]),
        ("x with taken at 2", [to("x", turns(1, "x"), 0), to("taken", turns(1, "taken", 4), 2)]),
        ("x at 0", [to("x", turns(1, "x"), 0)]),
    ]
    outcomes: dict[str, object] = {}

    async def call(name: str, appends: list[StreamAppend]) -> None:
        try:
            recorded = await store.append(*appends)
        except ConcurrencyError as error:
            outcomes[name] = ("conflict", error.stream_id, error.expected, error.actual)
        except DuplicateEventError as error:
            outcomes[name] = ("duplicate", error.event_ids)
        else:
            outcomes[name] = [(r.stream_id, r.version) for r in recorded]

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for name, appends in calls:
                tg.start_soon(call, name, appends)
    assert outcomes == {
        "new at 0": [("new", 1)],
        "new at 0 again": ("conflict", "new", 0, 1),
        "new at 1": [("new", 2)],
        "first's id again": ("duplicate", [first.event_id]),
        "retry of the seed": ("duplicate", [n.event_id for n in seed]),
        "taken at 2": [("taken", 3)],
        "x with taken at 2": ("conflict", "taken", 2, 3),
        "x at 0": [("x", 1)],
    }
    log = await everything(store)
    assert [r.position for r in log] == list(range(1, 7))


def test_ids_no_backend_can_store_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="stream id"):
        StreamAppend("nul\x00", [])
    with pytest.raises(ValueError, match="stream id"):
        StreamAppend("", [])
    with pytest.raises(ValueError, match="event id"):
        new(started(), "id\x00")


# -- atomicity ---------------------------------------------------------------------------------


async def test_a_batch_with_one_known_event_id_writes_nothing(store: EventStore) -> None:
    [first] = await store.append(to("run-1", [new(started())], 0))
    batch = [*turns(3, first=1), new(turn(4), first.event_id)]
    with pytest.raises(DuplicateEventError) as caught:
        await store.append(to("run-1", batch, 1))
    assert caught.value.event_ids == [first.event_id]
    assert await everything(store) == [first]
    for n in batch[:3]:
        assert await store.get_event(n.event_id) is None


async def test_multi_stream_append_with_one_stale_version_writes_nothing(
    store: EventStore,
) -> None:
    await store.append(to("run-1", turns(1), 0), to("budget", turns(2, "budget"), 0))
    good = to("run-1", turns(1, first=2), 1)
    stale = to("budget", turns(1, "budget", 3), 1)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(good, stale)
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
        "budget",
        1,
        2,
    )
    assert await store.stream_version("run-1") == 1
    assert await store.stream_version("budget") == 2
    assert await store.head_position() == 3
    assert await store.get_event(good.events[0].event_id) is None

    # Stale first, good second: still nothing.
    with pytest.raises(ConcurrencyError):
        await store.append(stale, good)
    assert await store.head_position() == 3


async def test_multi_stream_append_to_a_new_and_an_existing_stream_is_atomic(
    store: EventStore,
) -> None:
    await store.append(to("budget", turns(1, "budget"), 0))
    with pytest.raises(ConcurrencyError):
        await store.append(to("run-new", turns(2, "run-new"), 0), to("budget", turns(1), 0))
    assert await store.stream_version("run-new") == 0
    assert await store.read_stream("run-new") == []
    assert await store.head_position() == 1


async def test_failed_appends_leave_no_gap_in_positions(store: EventStore) -> None:
    await store.append(to("run-1", turns(1), 0))
    with pytest.raises(ConcurrencyError):
        await store.append(to("run-1", turns(5, first=2), 0))
    dupe = (await store.read_stream("run-1"))[0].event_id
    with pytest.raises(DuplicateEventError):
        await store.append(to("run-2", [*turns(3, "run-2"), new(turn(9), dupe)]))
    recorded = await store.append(to("run-3", turns(2, "run-3")))
    assert [r.position for r in recorded] == [2, 3]
    assert [r.position for r in await everything(store)] == [1, 2, 3]


# -- duplicate event ids -----------------------------------------------------------------------


async def test_an_event_id_already_stored_is_refused(store: EventStore) -> None:
    [first] = await store.append(to("run-1", [new(started(), "id-1")]))
    other_stream = to("run-2", [new(turn(1, "run-2")), new(turn(2, "run-2"), "id-1")])
    with pytest.raises(DuplicateEventError) as caught:
        await store.append(other_stream)
    assert caught.value.event_ids == ["id-1"]
    assert "id-1" in str(caught.value)
    assert await everything(store) == [first]
    assert await store.stream_version("run-2") == 0


async def test_an_event_id_twice_in_one_stream_append_is_refused(store: EventStore) -> None:
    with pytest.raises(DuplicateEventError) as caught:
        await store.append(to("run-1", [new(turn(1), "same"), new(turn(2), "same")], 0))
    assert caught.value.event_ids == ["same"]
    assert await store.head_position() == 0
    assert await store.get_event("same") is None


async def test_an_event_id_twice_across_streams_in_one_call_is_refused(store: EventStore) -> None:
    with pytest.raises(DuplicateEventError) as caught:
        await store.append(
            to("run-1", [new(turn(1), "same")], 0), to("budget", [new(turn(1), "same")], 0)
        )
    assert caught.value.event_ids == ["same"]
    assert await store.head_position() == 0
    assert await store.stream_version("run-1") == 0
    assert await store.stream_version("budget") == 0


async def test_get_event_settles_an_append_of_unknown_outcome(store: EventStore) -> None:
    batch = turns(2)
    # The writer does not know whether this append committed (say, the connection dropped).
    recorded = await store.append(to("run-1", batch, 0))

    # Retrying blindly is refused and writes nothing a second time ...
    with pytest.raises((DuplicateEventError, ConcurrencyError)):
        await store.append(to("run-1", batch, 0))
    with pytest.raises(DuplicateEventError):
        await store.append(to("run-1", batch, None))
    assert await store.head_position() == 2
    # ... and looking the ids up tells the writer it did commit, where, and when.
    found = [await store.get_event(n.event_id) for n in batch]
    assert found == recorded
    assert await store.get_event(uuid.uuid4().hex) is None


async def test_retrying_a_committed_append_reports_the_duplicate(store: EventStore) -> None:
    # The retry is stale too; the duplicate is what tells the writer its first try committed.
    batch = turns(2)
    await store.append(to("run-1", batch, 0))
    with pytest.raises(DuplicateEventError) as caught:
        await store.append(to("run-1", batch, 0))
    assert sorted(caught.value.event_ids) == sorted(n.event_id for n in batch)
    assert await store.head_position() == 2


async def test_odd_stream_ids_and_event_ids_are_kept_apart(store: EventStore) -> None:
    streams = ["a%", "a_", "abc", "A%", "рун/1 🚀 'q' \"d\" ;--", " "]
    for index, stream in enumerate(streams):
        await store.append(to(stream, [new(turn(1, stream), f"{stream}|ид|{index}")], 0))
    for index, stream in enumerate(streams):
        [recorded] = await store.read_stream(stream)
        assert recorded.event_id == f"{stream}|ид|{index}"
        assert await store.stream_version(stream) == 1
        assert await store.get_event(recorded.event_id) == recorded
    assert await store.get_event("a%") is None


# -- reading -----------------------------------------------------------------------------------


async def _three_streams(store: EventStore) -> list[RecordedEvent]:
    await store.append(to("a", turns(3, "a")))
    await store.append(to("b", turns(2, "b")), to("a", turns(2, "a", 4)))
    await store.append(to("c", turns(3, "c")))
    log = await everything(store)
    assert len(log) == 10
    return log


async def test_read_all_after_and_limit(store: EventStore) -> None:
    log = await _three_streams(store)
    assert await store.read_all() == log
    assert await store.read_all(after=0, limit=3) == log[:3]
    assert await store.read_all(after=4) == log[4:]
    assert await store.read_all(after=4, limit=2) == log[4:6]
    assert await store.read_all(after=9, limit=5) == log[9:]
    assert await store.read_all(after=10) == []
    assert await store.read_all(after=100) == []
    assert await store.read_all(after=3, limit=0) == []


async def test_read_all_pages_through_the_whole_log(store: EventStore) -> None:
    log = await _three_streams(store)
    pages: list[RecordedEvent] = []
    position = 0
    for _ in range(len(log) + 1):
        page = await store.read_all(after=position, limit=3)
        if not page:
            break
        assert len(page) <= 3
        pages.extend(page)
        position = page[-1].position
    assert pages == log


async def test_read_all_default_limit_is_a_thousand(store: EventStore) -> None:
    await store.append(to("run-1", turns(1001)))
    page = await store.read_all()
    assert [r.position for r in page] == list(range(1, 1001))


async def test_read_stream_after_and_limit(store: EventStore) -> None:
    log = await _three_streams(store)
    a = [r for r in log if r.stream_id == "a"]
    assert [r.version for r in a] == [1, 2, 3, 4, 5]
    assert await store.read_stream("a") == a
    assert await store.read_stream("a", after=2) == a[2:]
    assert await store.read_stream("a", limit=2) == a[:2]
    assert await store.read_stream("a", after=1, limit=3) == a[1:4]
    assert await store.read_stream("a", after=4, limit=3) == a[4:]
    assert await store.read_stream("a", after=5) == []
    assert await store.read_stream("a", limit=0) == []
    assert await store.read_stream("zzz", after=0, limit=10) == []


async def test_data_survives_close_and_reopen(store_factory: StoreFactory) -> None:
    async with store_factory() as store:
        first = await store.append(to("run-1", turns(3), 0))
        await store.save_checkpoint("p", expected_position=0, position=3, rows={"k": b"v"})
    async with store_factory() as store:
        assert await everything(store) == first
        assert await store.stream_version("run-1") == 3
        assert await store.get_event(first[1].event_id) == first[1]
        assert await store.load_checkpoint("p") == Checkpoint(3, {"k": b"v"})
        more = await store.append(to("run-1", turns(1, first=4), 3))
        assert [(r.version, r.position) for r in more] == [(4, 4)]


async def test_two_store_objects_on_one_database_share_one_log(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as one, store_factory() as two:
        await one.append(to("run-1", turns(1), 0))
        with pytest.raises(ConcurrencyError):
            await two.append(to("run-1", turns(1), 0))
        await two.append(to("run-1", turns(1, first=2), 1))

        async def write(store: EventStore, stream: str) -> None:
            for n in range(1, 6):
                await store.append(to(stream, turns(1, stream, n), n - 1))

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write, one, "from-one")
                tg.start_soon(write, two, "from-two")
        assert await everything(one) == await everything(two)
        assert [r.position for r in await everything(one)] == list(range(1, 13))


# -- the tail ----------------------------------------------------------------------------------


class Tail:
    """Follows ``store.subscribe`` in a task until it has seen ``stop_at`` events."""

    def __init__(
        self, store: EventStore, *, stop_at: int, after: int = 0, poll_interval: float = 0.2
    ) -> None:
        self.store = store
        self.stop_at = stop_at
        self.after = after
        self.poll_interval = poll_interval
        self.seen: list[RecordedEvent] = []
        self._grew = anyio.Event()

    async def run(self) -> None:
        async for recorded in self.store.subscribe(
            after=self.after, poll_interval=self.poll_interval
        ):
            self.seen.append(recorded)
            self._grew.set()
            self._grew = anyio.Event()
            if len(self.seen) == self.stop_at:
                return
            # A tail that spins without awaiting anything would starve ``fail_after``.
            await anyio.lowlevel.checkpoint()

    async def wait_for(self, count: int) -> None:
        while len(self.seen) < count:
            await self._grew.wait()


async def test_subscribe_sees_old_then_new_events(store: EventStore) -> None:
    await store.append(to("run-1", turns(3)))
    # A long poll interval: only the wake-up from our own appends can make this pass in time.
    tail = Tail(store, stop_at=7, poll_interval=60)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail.run)
            await tail.wait_for(3)
            await store.append(to("run-1", turns(2, first=4)))
            await tail.wait_for(5)
            await store.append(to("run-2", turns(2, "run-2")))
    assert tail.seen == await everything(store)
    assert [r.position for r in tail.seen] == list(range(1, 8))


async def test_subscribe_after_skips_what_was_seen(store: EventStore) -> None:
    await store.append(to("run-1", turns(5)))
    tail = Tail(store, stop_at=4, after=3, poll_interval=60)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail.run)
            await tail.wait_for(2)
            await store.append(to("run-1", turns(2, first=6)))
    assert [r.position for r in tail.seen] == [4, 5, 6, 7]


async def test_subscribe_pages_past_a_thousand_events(store: EventStore) -> None:
    await store.append(to("run-1", turns(1005)))
    tail = Tail(store, stop_at=1005)
    with anyio.fail_after(TIMEOUT):
        await tail.run()
    assert [r.position for r in tail.seen] == list(range(1, 1006))


async def test_subscribe_sees_every_event_of_concurrent_writers_once(store: EventStore) -> None:
    total = 8 * 5 * 2
    tail = Tail(store, stop_at=total, poll_interval=0.05)

    async def writer(stream: str) -> None:
        for n in range(5):
            await store.append(to(stream, turns(2, stream, 2 * n + 1), 2 * n))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail.run)
            for index in range(8):
                tg.start_soon(writer, f"run-{index}")
    assert [r.position for r in tail.seen] == list(range(1, total + 1))
    assert tail.seen == await everything(store)


async def test_subscribe_sees_appends_of_another_store_object(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as reader, store_factory() as writer:
        tail = Tail(reader, stop_at=3, poll_interval=0.05)
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tail.run)
                await writer.append(to("run-1", turns(2)))
                await tail.wait_for(2)
                await writer.append(to("run-1", turns(1, first=3)))
        assert tail.seen == await everything(reader)


async def test_a_waiting_tail_ends_when_the_store_closes(store_factory: StoreFactory) -> None:
    store = store_factory()
    tail = Tail(store, stop_at=100, poll_interval=60)
    async with store:
        await store.append(to("run-1", turns(1)))
        with anyio.fail_after(TIMEOUT), pytest.RaisesGroup(StoreClosedError):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tail.run)
                await tail.wait_for(1)
                await store.aclose()
    assert len(tail.seen) == 1


# -- cancellation and closing with work in flight --------------------------------------------


@pytest.mark.parametrize("checkpoints_before_cancel", [0, 3])
async def test_cancelled_appends_are_all_or_nothing(
    store: EventStore, checkpoints_before_cancel: int
) -> None:
    batches = {f"run-{index}": turns(3, f"run-{index}") for index in range(10)}
    scopes = {stream: anyio.CancelScope() for stream in batches}

    async def append(stream: str) -> None:
        with scopes[stream]:
            await store.append(to(stream, batches[stream], 0))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for stream in batches:
                tg.start_soon(append, stream)
            for _ in range(checkpoints_before_cancel):
                await anyio.lowlevel.checkpoint()
            for stream in list(batches)[::2]:
                scopes[stream].cancel()

    for stream, batch in batches.items():
        written = await store.read_stream(stream)
        assert len(written) in (0, 3), f"{stream} is half written"
        if not scopes[stream].cancel_called:
            assert len(written) == 3, f"{stream} was not cancelled but is missing"
        found = [await store.get_event(n.event_id) for n in batch]
        settled: list[RecordedEvent | None] = [*written] if written else [None] * len(batch)
        assert found == settled
    log = await everything(store)
    assert [r.position for r in log] == list(range(1, len(log) + 1))
    # The store still works after its callers were cancelled.
    recorded = await store.append(to("after", turns(1, "after"), 0))
    assert recorded[0].position == len(log) + 1


async def test_aclose_waits_for_appends_in_flight(store_factory: StoreFactory) -> None:
    acknowledged: list[RecordedEvent] = []
    enough = anyio.Event()
    store = store_factory()

    async def writer(stream: str) -> None:
        version = 0
        while True:
            await anyio.lowlevel.checkpoint()  # the memory store never yields on its own
            try:
                recorded = await store.append(to(stream, turns(2, stream, version + 1), version))
            except StoreClosedError:
                return
            acknowledged.extend(recorded)
            version += 2
            if len(acknowledged) >= 40:
                enough.set()

    async with store:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                for index in range(4):
                    tg.start_soon(writer, f"run-{index}")
                await enough.wait()
                await store.aclose()

    async with store_factory() as reopened:
        # Every append a caller was told about is there, and nothing else.
        assert await everything(reopened) == sorted(acknowledged, key=lambda r: r.position)


# -- what this program cannot read -------------------------------------------------------------


class RunTeleported(EventBase):
    """An event type from a newer program that this one does not know."""

    type: Literal["run_teleported"] = "run_teleported"
    destination: str


def _backend(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["store_factory"])


async def test_an_unknown_event_type_stops_its_reads_loudly(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if _backend(request) == "memory":
        pytest.skip("the memory store keeps event objects: there is nothing to decode")
    teleported = RunTeleported(run_id="run-1", span_id="s", at=AT, destination="mars")
    foreign = new(teleported)  # type: ignore[arg-type]  # not in this program's union, on purpose
    async with store_factory() as store:
        await store.append(to("run-1", turns(1), 0))
        with monkeypatch.context() as newer_program:
            newer_program.setitem(EVENT_TYPES, "run_teleported", RunTeleported)
            await store.append(to("run-1", [foreign], 1))
        await store.append(to("run-2", turns(1, "run-2"), 0))

    async with store_factory() as store:
        with pytest.raises(UnknownEventTypeError) as caught:
            await store.read_stream("run-1")
        error = caught.value
        assert (error.stream_id, error.version, error.event_type) == ("run-1", 2, "run_teleported")
        with pytest.raises(UnknownEventTypeError):
            await store.read_all()
        with pytest.raises(UnknownEventTypeError):
            await store.get_event(foreign.event_id)
        # What comes before it, and other streams, still read.
        assert len(await store.read_stream("run-1", limit=1)) == 1
        assert len(await store.read_all(limit=1)) == 1
        assert [r.stream_id for r in await store.read_all(after=2)] == ["run-2"]
        assert len(await store.read_stream("run-2")) == 1
        assert await store.stream_version("run-1") == 2
        # A tail stops at it rather than skipping it (it may stop a page early).
        tail = Tail(store, stop_at=3, poll_interval=60)
        with anyio.fail_after(TIMEOUT), pytest.RaisesGroup(UnknownEventTypeError):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tail.run)
        assert [r.position for r in tail.seen] in ([], [1])


async def test_a_newer_schema_version_stops_its_reads_loudly(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if _backend(request) == "memory":
        pytest.skip("the memory store keeps event objects: there is nothing to decode")
    async with store_factory() as store:
        with monkeypatch.context() as newer_program:
            newer_program.setattr(TurnStarted, "schema_version", 2)
            [recorded] = await store.append(to("run-1", turns(1), 0))
        assert recorded.schema_version == 2

    async with store_factory() as store:
        with pytest.raises(SchemaVersionError) as caught:
            await store.read_stream("run-1")
        error = caught.value
        assert (error.stream_id, error.version, error.schema_version, error.known) == (
            "run-1",
            1,
            2,
            1,
        )
        with pytest.raises(SchemaVersionError):
            await store.get_event(recorded.event_id)


# -- closed stores -----------------------------------------------------------------------------


async def _every_method_refuses(store: EventStore) -> None:
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "append": lambda: store.append(to("run-1", turns(1))),
        "read_stream": lambda: store.read_stream("run-1"),
        "read_all": lambda: store.read_all(),
        "get_event": lambda: store.get_event("x"),
        "stream_version": lambda: store.stream_version("run-1"),
        "head_position": lambda: store.head_position(),
        "load_checkpoint": lambda: store.load_checkpoint("p"),
        "save_checkpoint": lambda: store.save_checkpoint(
            "p", expected_position=0, position=1, rows={}
        ),
        "subscribe": lambda: anext(aiter(store.subscribe(poll_interval=30))),
    }
    for name, call in calls.items():
        with anyio.fail_after(TIMEOUT), pytest.raises(StoreClosedError):
            await call()
            pytest.fail(f"{name} worked on a closed store")


async def test_every_method_refuses_after_aclose(store_factory: StoreFactory) -> None:
    store = store_factory()
    async with store:
        await store.append(to("run-1", turns(1)))
    await _every_method_refuses(store)


async def test_aclose_inside_the_block_is_fine_twice(store_factory: StoreFactory) -> None:
    store = store_factory()
    async with store:
        await store.aclose()
        await _every_method_refuses(store)
    await store.aclose()


async def test_every_method_refuses_before_the_store_is_opened(
    store_factory: StoreFactory,
) -> None:
    await _every_method_refuses(store_factory())


# -- checkpoints -------------------------------------------------------------------------------


async def test_checkpoint_of_a_new_projection_is_empty(store: EventStore) -> None:
    assert await store.load_checkpoint("never-saved") == Checkpoint(0, {})


async def test_checkpoint_round_trip(store: EventStore) -> None:
    rows = {"run-1": b"\x00\xff binary", "run-2": b"{}", "": b""}
    await store.save_checkpoint("runs", expected_position=0, position=5, rows=rows)
    assert await store.load_checkpoint("runs") == Checkpoint(5, rows)
    await store.save_checkpoint(
        "runs", expected_position=5, position=9, rows={"run-2": b"[1]", "run-3": b"3"}
    )
    assert await store.load_checkpoint("runs") == Checkpoint(
        9, {"run-1": b"\x00\xff binary", "run-2": b"[1]", "run-3": b"3", "": b""}
    )


async def test_checkpoint_none_deletes_rows(store: EventStore) -> None:
    await store.save_checkpoint(
        "runs", expected_position=0, position=2, rows={"a": b"1", "b": b"2", "c": b"3"}
    )
    await store.save_checkpoint(
        "runs", expected_position=2, position=4, rows={"a": None, "c": b"30", "nope": None}
    )
    assert await store.load_checkpoint("runs") == Checkpoint(4, {"b": b"2", "c": b"30"})


async def test_checkpoint_position_conflict(store: EventStore) -> None:
    await store.save_checkpoint("runs", expected_position=0, position=7, rows={"a": b"1"})
    with pytest.raises(ConcurrencyError) as caught:
        await store.save_checkpoint("runs", expected_position=3, position=9, rows={"a": b"2"})
    assert (caught.value.expected, caught.value.actual) == (3, 7)
    assert "runs" in caught.value.stream_id
    assert await store.load_checkpoint("runs") == Checkpoint(7, {"a": b"1"})

    with pytest.raises(ConcurrencyError) as caught:
        await store.save_checkpoint("fresh", expected_position=1, position=2, rows={"a": b"2"})
    assert (caught.value.expected, caught.value.actual) == (1, 0)
    assert await store.load_checkpoint("fresh") == Checkpoint(0, {})


async def test_checkpoint_reset_drops_old_rows(store: EventStore) -> None:
    await store.save_checkpoint(
        "runs", expected_position=0, position=6, rows={"a": b"1", "b": b"2"}
    )
    await store.save_checkpoint(
        "runs", expected_position=6, position=1, rows={"b": b"new"}, reset=True
    )
    assert await store.load_checkpoint("runs") == Checkpoint(1, {"b": b"new"})
    await store.save_checkpoint("runs", expected_position=1, position=0, rows={}, reset=True)
    assert await store.load_checkpoint("runs") == Checkpoint(0, {})


async def test_checkpoints_are_kept_apart_by_name(store: EventStore) -> None:
    await store.save_checkpoint("one", expected_position=0, position=1, rows={"k": b"1"})
    await store.save_checkpoint("two", expected_position=0, position=2, rows={"k": b"2"})
    await store.save_checkpoint("two", expected_position=2, position=3, rows={}, reset=True)
    assert await store.load_checkpoint("one") == Checkpoint(1, {"k": b"1"})
    assert await store.load_checkpoint("two") == Checkpoint(3, {})


async def test_a_loaded_checkpoint_is_a_copy(store: EventStore) -> None:
    await store.save_checkpoint("runs", expected_position=0, position=1, rows={"k": b"1"})
    loaded = await store.load_checkpoint("runs")
    loaded.rows["k"] = b"changed"
    loaded.rows["extra"] = b"x"
    assert await store.load_checkpoint("runs") == Checkpoint(1, {"k": b"1"})


async def test_concurrent_checkpoint_saves_exactly_one_wins(store: EventStore) -> None:
    outcomes: list[int] = []

    async def runner(index: int) -> None:
        try:
            await store.save_checkpoint(
                "runs", expected_position=0, position=index, rows={"k": bytes([index])}
            )
        except ConcurrencyError:
            return
        outcomes.append(index)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index in range(1, 9):
                tg.start_soon(runner, index)
    assert len(outcomes) == 1
    [winner] = outcomes
    assert await store.load_checkpoint("runs") == Checkpoint(winner, {"k": bytes([winner])})
