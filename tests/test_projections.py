"""The projection contract (``fold``, keyed folds, deletes) and ``ProjectionRunner`` on every store.

Runner tests compare what a runner holds and what it saved with a fresh ``fold`` of the whole
log, so any event folded twice, skipped or lost between folding and saving shows up as a
difference in the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

from agentledger.events import (
    ConcurrencyError,
    Event,
    EventStore,
    ModelCallResponded,
    NewEvent,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunStarted,
    StreamAppend,
    ToolCallSucceeded,
    TurnStarted,
    Usage,
)
from agentledger.projections import (
    AccumulatingProjection,
    KeyedProjection,
    Projection,
    ProjectionRunner,
    RowDecodeError,
    RunIndex,
    RunnerClosedError,
    RunSummary,
    fold,
    list_runs,
)

StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def story(
    run_id: str, *, user: str = "ann", turns: int = 2, end: str | None = "done"
) -> list[Event]:
    """A run's events: start, ``turns`` model calls with a tool call each, and an end."""
    at = iter(T0 + timedelta(seconds=s) for s in range(1000))
    events: list[Event] = [
        RunStarted(
            run_id=run_id, span_id="root", at=next(at), agent="a", model="m", task="t", user_id=user
        )
    ]
    for turn in range(1, turns + 1):
        events += [
            TurnStarted(run_id=run_id, span_id=f"t{turn}", at=next(at), turn=turn),
            ModelCallResponded(
                run_id=run_id,
                span_id=f"c{turn}",
                at=next(at),
                call_id=f"c{turn}",
                model="m",
                usage=Usage(input_tokens=100, output_tokens=10),
                cost_usd=Decimal("0.0031"),
            ),
            ToolCallSucceeded(
                run_id=run_id, span_id="tool", at=next(at), call_id="x", tool_name="t"
            ),
        ]
    if end == "done":
        events.append(RunCompleted(run_id=run_id, span_id="root", at=next(at), output="ok"))
    elif end == "cancel":
        events.append(RunCancelled(run_id=run_id, span_id="root", at=next(at)))
    return events


async def append(store: EventStore, run_id: str, events: Sequence[Event]) -> list[RecordedEvent]:
    news = [NewEvent(event, uuid.uuid4().hex) for event in events]
    return await store.append(StreamAppend(f"run-{run_id}", news))


async def whole_log(store: EventStore) -> list[RecordedEvent]:
    return await store.read_all(after=0, limit=1_000_000)


async def saved_rows(store: EventStore, projection: KeyedProjection[object]) -> dict[str, object]:
    checkpoint = await store.load_checkpoint(projection.name)
    return {key: projection.decode_row(data) for key, data in checkpoint.rows.items()}


class OpenRuns:
    """Events per run, kept only while the run is open: an end event deletes the row."""

    name = "open_runs"

    def key(self, recorded: RecordedEvent) -> str | None:
        return recorded.event.run_id

    def evolve_row(self, row: int | None, recorded: RecordedEvent) -> int | None:
        if recorded.event.type in {"run_completed", "run_failed", "run_cancelled"}:
            return None
        return (row or 0) + 1

    def encode_row(self, row: int) -> bytes:
        return str(row).encode()

    def decode_row(self, data: bytes) -> int:
        return int(data)


class OpenRunsAccumulating(OpenRuns):
    """The same, with a mutable accumulator (a one-item list) for batches."""

    def thaw(self, row: int) -> list[int]:
        return [row]

    def accumulate(self, acc: list[int] | None, recorded: RecordedEvent) -> list[int] | None:
        if recorded.event.type in {"run_completed", "run_failed", "run_cancelled"}:
            return None
        if acc is None:
            return [1]
        acc[0] += 1
        return acc

    def freeze(self, acc: list[int]) -> int:
        return acc[0]


@dataclass(frozen=True)
class TypeCounts:
    counts: tuple[tuple[str, int], ...] = ()


class CountTypes:
    """A plain (unkeyed) projection: how many events of each type, as an immutable state."""

    def initial(self) -> TypeCounts:
        return TypeCounts()

    def evolve(self, state: TypeCounts, recorded: RecordedEvent) -> TypeCounts:
        counts = dict(state.counts)
        counts[recorded.event.type] = counts.get(recorded.event.type, 0) + 1
        return TypeCounts(tuple(sorted(counts.items())))


def recorded_log(*stories: tuple[str, list[Event]]) -> list[RecordedEvent]:
    out = []
    for stream_id, events in stories:
        for version, event in enumerate(events, start=1):
            out.append(
                RecordedEvent(stream_id, version, len(out) + 1, f"e{len(out)}", T0, 1, event)
            )
    return out


# -- fold --------------------------------------------------------------------------------------


def test_protocols_are_recognised() -> None:
    assert isinstance(CountTypes(), Projection)
    assert isinstance(RunIndex(), AccumulatingProjection)
    assert isinstance(OpenRuns(), KeyedProjection)
    assert not isinstance(OpenRuns(), AccumulatingProjection)


def test_fold_of_a_plain_projection_continues_from_a_given_state() -> None:
    log = recorded_log(("run-a", story("a")), ("run-b", story("b", turns=1, end=None)))
    whole = fold(CountTypes(), log)
    assert dict(whole.counts) == {
        "run_started": 2,
        "turn_started": 3,
        "model_call_responded": 3,
        "tool_call_succeeded": 3,
        "run_completed": 1,
    }
    assert fold(CountTypes(), log[5:], fold(CountTypes(), log[:5])) == whole


@pytest.mark.parametrize("projection", [OpenRuns(), OpenRunsAccumulating()])
def test_keyed_fold_deletes_rows_and_never_touches_its_input(projection: OpenRuns) -> None:
    log = recorded_log(
        ("run-a", story("a", turns=1)), ("run-b", story("b", turns=2, end=None)), ("run-c", [])
    )
    first = fold(projection, log[:3])
    assert first == {"a": 3}
    rest = fold(projection, log[3:], first)
    assert rest == {"b": 7}  # a ended: deleted
    assert first == {"a": 3}
    assert fold(projection, log) == rest


# -- the runner --------------------------------------------------------------------------------


async def test_catch_up_saves_and_a_new_runner_resumes_without_refolding(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        for n in range(5):
            await append(store, f"r{n}", story(f"r{n}", user=["ann", "bob"][n % 2], end=None))
        async with ProjectionRunner(store, RunIndex(), page_size=7, save_every=10) as runner:
            assert await runner.catch_up() == 35
            assert (runner.position, runner.saved_position) == (35, 35)
            expected = fold(RunIndex(), await whole_log(store))
            assert dict(runner.rows) == expected
            assert await saved_rows(store, RunIndex()) == expected
        # Finish three of the runs while no runner is running.
        for n in range(3):
            await append(
                store, f"r{n}", [RunCompleted(run_id=f"r{n}", span_id="root", at=T0, output="")]
            )

    async with (
        store_factory() as store,
        ProjectionRunner(store, RunIndex()) as runner,
    ):
        assert runner.position == 35
        assert dict(runner.rows) == expected
        assert await runner.catch_up() == 3
        assert await runner.catch_up() == 0
        assert runner.position == runner.saved_position == 38
        after = fold(RunIndex(), await whole_log(store))
        assert dict(runner.rows) == after == await saved_rows(store, RunIndex())
        assert [r.run_id for r in list_runs(runner.rows, status="completed")] == ["r0", "r1", "r2"]


async def test_rebuild_from_zero_equals_the_incremental_state(store: EventStore) -> None:
    async with ProjectionRunner(store, RunIndex(), page_size=4, save_every=6) as runner:
        for n in range(6):
            await append(store, f"r{n}", story(f"r{n}", turns=n % 3, end=["done", None][n % 2]))
            await runner.catch_up()
        incremental = dict(runner.rows)
        saved_before = await saved_rows(store, RunIndex())
        assert await runner.rebuild() == runner.position == await store.head_position()
        assert dict(runner.rows) == incremental == saved_before
        assert await saved_rows(store, RunIndex()) == incremental
        assert (await store.load_checkpoint("run_index")).position == runner.position


async def test_rebuild_drops_rows_that_a_fresh_fold_does_not_have(store: EventStore) -> None:
    await append(store, "r", story("r"))
    # A row left by an older version of the projection code.
    await store.save_checkpoint("open_runs", expected_position=0, position=0, rows={"ghost": b"41"})
    async with ProjectionRunner(store, OpenRunsAccumulating()) as runner:
        assert dict(runner.rows) == {"ghost": 41}
        await runner.rebuild()
        assert dict(runner.rows) == {}
        assert await saved_rows(store, OpenRunsAccumulating()) == {}


@pytest.mark.parametrize("projection", [OpenRuns(), OpenRunsAccumulating()])
async def test_deleted_rows_are_deleted_in_the_store(
    store: EventStore, projection: OpenRuns
) -> None:
    async with ProjectionRunner(store, projection) as runner:
        await append(store, "a", story("a", end=None))
        await append(store, "b", story("b", end=None))
        await runner.catch_up()
        assert await saved_rows(store, projection) == {"a": 7, "b": 7}
        await append(store, "a", [RunCancelled(run_id="a", span_id="root", at=T0)])
        await runner.catch_up()
        assert await saved_rows(store, projection) == {"b": 7} == dict(runner.rows)


async def test_a_crash_before_saving_refolds_only_the_unsaved_events(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        await append(store, "a", story("a", end=None))
        async with ProjectionRunner(store, RunIndex()) as runner:
            await runner.catch_up()
            await append(store, "a", [RunCompleted(run_id="a", span_id="root", at=T0, output="")])
            await append(store, "b", story("b"))
            # Folded but never saved: the process dies here.
            assert await runner.catch_up(save=False) == 9
            assert (runner.position, runner.saved_position) == (16, 7)

    async with store_factory() as store, ProjectionRunner(store, RunIndex()) as runner:
        assert runner.position == 7
        assert runner.rows["a"].status == "running"
        assert await runner.catch_up() == 9
        assert dict(runner.rows) == fold(RunIndex(), await whole_log(store))
        assert runner.rows["a"].status == "completed"
        assert runner.rows["b"].cost_usd == Decimal("0.0062")


async def test_a_runner_that_loses_a_save_race_reloads_and_folds_on(store: EventStore) -> None:
    await append(store, "a", story("a", end=None))
    async with (
        ProjectionRunner(store, RunIndex(), page_size=3) as first,
        ProjectionRunner(store, RunIndex(), page_size=3) as second,
    ):
        await first.catch_up()
        await append(store, "b", story("b"))
        # second folded from 0 and its save expects position 0, but first saved 7.
        await second.catch_up()
        assert second.position == second.saved_position == 15
        # first is now behind what is saved: its save fails, and it reloads 15.
        await append(store, "a", [RunCompleted(run_id="a", span_id="root", at=T0, output="")])
        await first.catch_up(save=False)
        assert first.position == 16
        assert await first.save() is False
        assert first.position == first.saved_position == 15
        assert await first.catch_up() == 1
        expected = fold(RunIndex(), await whole_log(store))
        assert dict(first.rows) == expected == await saved_rows(store, RunIndex())
        with pytest.raises(ConcurrencyError):
            await store.save_checkpoint("run_index", expected_position=15, position=17, rows={})
        await second.catch_up()
        assert dict(second.rows) == expected


async def test_run_follows_live_appends_and_saves_when_idle(store_factory: StoreFactory) -> None:
    async with store_factory() as store:
        await append(store, "a", story("a"))
        async with (
            ProjectionRunner(store, RunIndex(), page_size=5) as runner,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(runner.run)
            with anyio.fail_after(10):
                await runner.wait_until(8, saved=True)
                assert runner.saved_position == 8
                for n in range(4):
                    recorded = await append(store, f"live{n}", story(f"live{n}", end=None))
                await runner.wait_until(recorded[-1].position)
                assert runner.rows["live3"].turns == 2
                await runner.wait_until(recorded[-1].position, saved=True)
            assert runner.saved_position == runner.position == 36
            assert dict(runner.rows) == fold(RunIndex(), await whole_log(store))
            tasks.cancel_scope.cancel()
    async with store_factory() as store, ProjectionRunner(store, RunIndex()) as reopened:
        assert reopened.position == 36
        assert dict(reopened.rows) == fold(RunIndex(), await whole_log(store))


async def test_run_survives_another_runner_saving_ahead_of_it(store: EventStore) -> None:
    await append(store, "a", story("a", end=None))
    async with (
        ProjectionRunner(store, RunIndex()) as follower,
        ProjectionRunner(store, RunIndex()) as other,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(follower.run)
        with anyio.fail_after(10):
            await follower.wait_until(7)
            for n in range(3):
                # Whichever saves first, the other must reload and end on the same state.
                await append(store, f"b{n}", story(f"b{n}"))
                await other.catch_up()
                await follower.wait_until(await store.head_position())
            head = await store.head_position()
            await other.catch_up()
            await follower.wait_until(head)
        expected = fold(RunIndex(), await whole_log(store))
        assert dict(follower.rows) == dict(other.rows) == expected
        assert await saved_rows(store, RunIndex()) == expected
        tasks.cancel_scope.cancel()


async def test_rows_are_read_only_and_a_closed_runner_refuses_work(store: EventStore) -> None:
    runner = ProjectionRunner(store, RunIndex())
    with pytest.raises(RunnerClosedError):
        await runner.catch_up()
    async with runner:
        await append(store, "a", story("a"))
        await runner.catch_up()
        rows = runner.rows
        with pytest.raises(TypeError):
            rows["a"] = rows["a"]  # type: ignore[index]
        assert isinstance(rows["a"], RunSummary)
    with pytest.raises(RunnerClosedError):
        await runner.save()


async def test_a_row_that_cannot_be_decoded_is_reported(store: EventStore) -> None:
    await store.save_checkpoint("run_index", expected_position=0, position=0, rows={"r": b"{"})
    with pytest.raises(RowDecodeError, match="'r' of projection 'run_index'"):
        async with ProjectionRunner(store, RunIndex()):
            pass


async def test_a_rebuild_replaces_a_state_another_runner_saved_meanwhile(
    store: EventStore,
) -> None:
    await append(store, "a", story("a", end=None))
    async with (
        ProjectionRunner(store, OpenRuns()) as rebuilder,
        ProjectionRunner(store, OpenRuns()) as other,
    ):
        await rebuilder.catch_up()
        await append(store, "b", story("b"))
        await other.catch_up()
        # The rebuilder's reset save expects position 7, but 15 is saved: it still lands.
        assert await rebuilder.rebuild() == 15
        assert (rebuilder.saved_position, await saved_rows(store, OpenRuns())) == (15, {"a": 7})
        await append(store, "c", story("c", end=None))
        assert await other.catch_up() == 7
        assert await saved_rows(store, OpenRuns()) == {"a": 7, "c": 7} == dict(other.rows)


async def test_catch_up_and_rebuild_while_run_follows_fold_each_event_once(
    store: EventStore,
) -> None:
    async with (
        ProjectionRunner(store, RunIndex(), page_size=4) as runner,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(runner.run)
        with anyio.fail_after(10):
            for n in range(3):
                await append(store, f"r{n}", story(f"r{n}", end=None))
                await runner.catch_up()
            await runner.wait_until(await store.head_position())
            # The state goes back to 0 under the running subscription, and forward again.
            assert await runner.rebuild() == 21
            await append(store, "late", story("late"))
            await runner.wait_until(await store.head_position(), saved=True)
        expected = fold(RunIndex(), await whole_log(store))
        assert dict(runner.rows) == expected == await saved_rows(store, RunIndex())
        assert runner.rows["r0"].cost_usd == Decimal("0.0062")
        tasks.cancel_scope.cancel()


async def test_run_refolds_when_another_runner_saved_an_older_state(store: EventStore) -> None:
    index = RunIndex()
    async with (
        ProjectionRunner(store, index) as runner,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(runner.run)
        with anyio.fail_after(10):
            await append(store, "a", story("a", end=None))
            await append(store, "b", story("b"))
            await runner.wait_until(15, saved=True)
            # Another runner rebuilt when the head was 7, and saved that.
            older = fold(index, (await whole_log(store))[:7])
            await store.save_checkpoint(
                "run_index",
                expected_position=15,
                position=7,
                rows={k: index.encode_row(r) for k, r in older.items()},
                reset=True,
            )
            await append(store, "c", story("c"))
            await runner.wait_until(await store.head_position(), saved=True)
        expected = fold(index, await whole_log(store))
        assert set(expected) == {"a", "b", "c"}
        assert dict(runner.rows) == expected == await saved_rows(store, index)
        tasks.cancel_scope.cancel()


def test_the_run_state_fold_has_a_handler_for_every_event_type() -> None:
    from agentledger.events import EVENT_TYPES
    from agentledger.projections._run_state import _HANDLERS

    assert set(_HANDLERS) == set(EVENT_TYPES)
