"""The append acceptance rule, judged directly: ``judge`` and ``judge_in_order`` are pure.

Every backend asks this one rule, so these tests pin it down without a database; the contract
suite then checks that each backend applies it. The properties compare a batch judged in order
with the same calls applied one at a time: to the memory store, and through the SQLite writer
(one batch against one transaction per call), which takes its fast path, its re-judging of a
refusal and its retry after a UNIQUE violation.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.events import (
    ConcurrencyError,
    DuplicateEventError,
    EventCodec,
    EventStoreError,
    MemoryEventStore,
    NewEvent,
    StreamAppend,
    TurnStarted,
)
from agentledger.events._append_rule import Accepted, Verdict, judge, judge_in_order
from agentledger.events._sqlite_writer import PendingAppend, SqliteWriter, prepare

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MICROS = 1_714_564_800_000_000


def ev(event_id: str, n: int = 1) -> NewEvent:
    return NewEvent(TurnStarted(run_id="r", span_id=f"s{n}", at=AT, turn=n), event_id)


def to(stream: str, ids: Sequence[str], expected: int | None = None) -> StreamAppend:
    return StreamAppend(stream, [ev(i, n) for n, i in enumerate(ids, 1)], expected)


def conflict(verdict: Verdict) -> tuple[str, int, int]:
    assert isinstance(verdict, ConcurrencyError), verdict
    return (verdict.stream_id, verdict.expected, verdict.actual)


def duplicates(verdict: Verdict) -> list[str]:
    assert isinstance(verdict, DuplicateEventError), verdict
    return verdict.event_ids


# -- judge: one call ---------------------------------------------------------------------------


def test_a_new_stream_starts_at_version_one() -> None:
    for expected in (None, 0):
        verdict = judge([to("a", ["e1", "e2"], expected)], {}, set())
        assert verdict == Accepted([1], {"a": 2}, ["e1", "e2"])


def test_an_existing_stream_continues_after_its_head() -> None:
    for expected in (None, 3):
        verdict = judge([to("a", ["e1", "e2"], expected)], {"a": 3}, set())
        assert verdict == Accepted([4], {"a": 5}, ["e1", "e2"])


def test_a_stale_expected_version_is_a_conflict() -> None:
    assert conflict(judge([to("a", ["e1"], 2)], {"a": 3}, set())) == ("a", 2, 3)
    assert conflict(judge([to("a", ["e1"], 4)], {"a": 3}, set())) == ("a", 4, 3)


def test_a_stream_missing_from_the_heads_has_no_events() -> None:
    assert conflict(judge([to("a", ["e1"], 1)], {"b": 1}, set())) == ("a", 1, 0)


def test_the_same_stream_twice_in_one_call_continues_where_the_first_left_off() -> None:
    verdict = judge([to("a", ["e1", "e2"], 1), to("a", ["e3"], 3)], {"a": 1}, set())
    assert verdict == Accepted([2, 4], {"a": 4}, ["e1", "e2", "e3"])
    # The second append expecting the head the call started from is stale.
    assert conflict(judge([to("a", ["e1"], 1), to("a", ["e2"], 1)], {"a": 1}, set())) == (
        "a",
        1,
        2,
    )


def test_several_streams_in_one_call_are_all_or_nothing() -> None:
    appends = [to("run", ["e1"], 0), to("budget", ["e2"], 2), to("new", ["e3"], 0)]
    assert judge(appends, {"budget": 2}, set()) == Accepted(
        [1, 3, 1], {"run": 1, "budget": 3, "new": 1}, ["e1", "e2", "e3"]
    )
    assert conflict(judge(appends, {"budget": 1}, set())) == ("budget", 2, 1)


def test_a_known_event_id_is_a_duplicate() -> None:
    verdict = judge([to("a", ["e1", "old", "e2"])], {}, {"old"})
    assert duplicates(verdict) == ["old"]


def test_ids_are_judged_before_versions() -> None:
    # A stale append carrying a stored id is most likely the retry of one that committed.
    verdict = judge([to("a", ["e1", "e2"], 0)], {"a": 2}, {"e1", "e2"})
    assert duplicates(verdict) == ["e1", "e2"]


def test_an_id_repeated_within_one_call_is_a_duplicate() -> None:
    assert duplicates(judge([to("a", ["same", "same"])], {}, set())) == ["same"]
    assert duplicates(judge([to("a", ["same"]), to("b", ["same"], 0)], {}, set())) == ["same"]


def test_an_empty_call_is_accepted_and_an_empty_append_still_checks_its_version() -> None:
    assert judge([], {}, set()) == Accepted([], {}, [])
    assert judge([to("a", [], 2)], {"a": 2}, set()) == Accepted([3], {"a": 2}, [])
    assert conflict(judge([to("a", [], 0)], {"a": 2}, set())) == ("a", 0, 2)


def test_judge_changes_none_of_its_arguments() -> None:
    heads, known = {"a": 1}, {"old"}
    judge([to("a", ["e1"], 1), to("b", ["e2"])], heads, known)
    assert (heads, known) == ({"a": 1}, {"old"})


# -- judge_in_order: one group-commit batch ----------------------------------------------------


def test_later_calls_see_the_streams_and_ids_of_earlier_accepted_ones() -> None:
    verdicts = judge_in_order(
        [
            [to("a", ["e1"], 0)],
            [to("a", ["e2"], 0)],  # a is at 1 now
            [to("b", ["e1"])],  # e1 is taken now
            [to("a", ["e3"], 1)],
        ],
        {},
    )
    assert verdicts[0] == Accepted([1], {"a": 1}, ["e1"])
    assert conflict(verdicts[1]) == ("a", 0, 1)
    assert duplicates(verdicts[2]) == ["e1"]
    assert verdicts[3] == Accepted([2], {"a": 2}, ["e3"])


def test_a_refused_call_changes_nothing_for_the_calls_after_it() -> None:
    heads, known = {"a": 2}, ["old"]
    verdicts = judge_in_order(
        [
            [to("b", ["e1"], 0), to("a", ["e2"], 0)],  # stale on a: b and e1 stay free
            [to("b", ["e1"], 0)],
            [to("c", ["e3", "old"])],  # a duplicate: e3 and c stay free
            [to("c", ["e3"], 0)],
        ],
        heads,
        known,
    )
    assert conflict(verdicts[0]) == ("a", 0, 2)
    assert verdicts[1] == Accepted([1], {"b": 1}, ["e1"])
    assert duplicates(verdicts[2]) == ["old"]
    assert verdicts[3] == Accepted([1], {"c": 1}, ["e3"])
    assert (heads, known) == ({"a": 2}, ["old"])


# -- properties: a batch judged in order equals the calls made one at a time -------------------

STREAMS = ["a", "b", "c"]
IDS = [f"e{n}" for n in range(12)]

appends_st = st.builds(
    lambda stream, ids, expected: to(stream, ids, expected),
    st.sampled_from(STREAMS),
    st.lists(st.sampled_from(IDS), max_size=3),
    st.one_of(st.none(), st.integers(0, 5)),
)
calls_st = st.lists(st.lists(appends_st, max_size=3), max_size=8)
# Stored before the batch: so many events per stream, ids e0, e1, ... in that order.
seed_st = st.fixed_dictionaries({stream: st.integers(0, 3) for stream in STREAMS})


def seed_appends(seed: Mapping[str, int]) -> list[StreamAppend]:
    ids = iter(IDS)
    return [to(stream, [next(ids) for _ in range(count)]) for stream, count in seed.items()]


def placed(appends: Sequence[StreamAppend], first_versions: Sequence[int]) -> list[Any]:
    """Where an accepted call's events went: (stream, version) of each, in the order given."""
    return [
        (append.stream_id, first + offset)
        for append, first in zip(appends, first_versions, strict=True)
        for offset in range(len(append.events))
    ]


def describe(error: EventStoreError) -> tuple[Any, ...]:
    if isinstance(error, ConcurrencyError):
        return ("conflict", error.stream_id, error.expected, error.actual)
    assert isinstance(error, DuplicateEventError), error
    return ("duplicate", error.event_ids)


def verdict_outcome(appends: Sequence[StreamAppend], verdict: Verdict) -> tuple[Any, ...]:
    if isinstance(verdict, Accepted):
        return ("ok", placed(appends, verdict.first_versions))
    return describe(verdict)


async def one_at_a_time_in_memory(
    seed: Mapping[str, int], calls: list[list[StreamAppend]]
) -> list[tuple[Any, ...]]:
    outcomes: list[tuple[Any, ...]] = []
    async with MemoryEventStore() as store:
        await store.append(*seed_appends(seed))
        for appends in calls:
            try:
                recorded = await store.append(*appends)
            except EventStoreError as error:
                outcomes.append(describe(error))
            else:
                outcomes.append(("ok", [(r.stream_id, r.version) for r in recorded]))
    return outcomes


@settings(max_examples=300, deadline=None)
@given(seed=seed_st, calls=calls_st)
def test_a_batch_judged_in_order_equals_the_calls_made_one_at_a_time(
    seed: dict[str, int], calls: list[list[StreamAppend]]
) -> None:
    known = [new.event_id for append in seed_appends(seed) for new in append.events]
    verdicts = judge_in_order(calls, seed, known)
    batched = [verdict_outcome(a, v) for a, v in zip(calls, verdicts, strict=True)]
    assert batched == anyio.run(one_at_a_time_in_memory, seed, calls)


def sqlite_outcome(pending: PendingAppend) -> tuple[Any, ...]:
    if pending.error is not None:
        return describe(pending.error)
    return ("ok", pending.first_position, placed(pending.appends, pending.first_versions))


def sqlite_run(path: Path, seed: Mapping[str, int], batches: list[list[list[StreamAppend]]]) -> Any:
    """Write ``batches`` through the SQLite writer, one transaction each; outcomes and rows."""
    writer = SqliteWriter(path, busy_timeout=5.0, synchronous="OFF", max_page_count=None)
    try:
        writer.write_batch([prepare(seed_appends(seed), EventCodec)], MICROS)
        outcomes: list[tuple[Any, ...]] = []
        for batch in batches:
            pending = [prepare(appends, EventCodec) for appends in batch]
            writer.write_batch(pending, MICROS)
            outcomes += [sqlite_outcome(p) for p in pending]
    finally:
        writer.close()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT position, stream_id, version, event_id FROM events ORDER BY position"
        ).fetchall()
    finally:
        conn.close()
    return outcomes, rows


@settings(max_examples=100, deadline=None)
@given(seed=seed_st, calls=calls_st)
def test_the_sqlite_writer_commits_a_batch_like_one_call_per_transaction(
    seed: dict[str, int], calls: list[list[StreamAppend]]
) -> None:
    calls = [appends for appends in calls if appends]  # the store never queues an empty call
    with tempfile.TemporaryDirectory() as tmp:
        batched = sqlite_run(Path(tmp) / "batched.db", seed, [calls])
        one_by_one = sqlite_run(Path(tmp) / "one.db", seed, [[appends] for appends in calls])
    assert batched == one_by_one
    # And both are what the rule says: the outcomes, and the rows where it placed the events.
    known = [new.event_id for append in seed_appends(seed) for new in append.events]
    verdicts = judge_in_order(calls, seed, known)
    outcomes, rows = batched
    assert [o if o[0] != "ok" else ("ok", o[2]) for o in outcomes] == [
        verdict_outcome(a, v) for a, v in zip(calls, verdicts, strict=True)
    ]
    expected = [
        (append.stream_id, version, new.event_id)
        for append in seed_appends(seed)
        for version, new in enumerate(append.events, 1)
    ]
    for appends, verdict in zip(calls, verdicts, strict=True):
        if isinstance(verdict, Accepted):
            expected += [
                (append.stream_id, version, new.event_id)
                for append, first in zip(appends, verdict.first_versions, strict=True)
                for version, new in enumerate(append.events, first)
            ]
    assert rows == [(position, *row) for position, row in enumerate(expected, 1)]
