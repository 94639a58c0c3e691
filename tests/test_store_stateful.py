"""The SQLite store and the in-memory reference store, driven by the same random operations, agree.

A Hypothesis state machine appends (right, stale and unchecked expected versions, several streams
at once, duplicate ids), reads, looks ids up, saves checkpoints, and closes and reopens the SQLite
file, and after every step compares both stores: results, errors, and the whole log. Both stores
share one fake clock, so even ``recorded_at`` must match.

The stores are async and the machine is not: each machine owns a blocking portal (an event loop in
a thread) for its whole life, and every store is entered and left through that portal in one task.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from agentledger.events import (
    ConcurrencyError,
    DuplicateEventError,
    EventStore,
    EventStoreError,
    MemoryEventStore,
    NewEvent,
    SqliteEventStore,
    StreamAppend,
    TurnStarted,
)

STREAMS = ["run-a", "run-b", "budget"]
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when the machine moves it, read by both stores alike."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def describe(error: EventStoreError) -> tuple[Any, ...]:
    """What of an error both stores must agree on."""
    if isinstance(error, ConcurrencyError):
        return ("ConcurrencyError", error.stream_id, error.expected, error.actual)
    if isinstance(error, DuplicateEventError):
        return ("DuplicateEventError", sorted(error.event_ids))
    return (type(error).__name__,)


Operation = Callable[[EventStore], Awaitable[Any]]


async def _outcome(operation: Operation, store: EventStore) -> tuple[Any, ...]:
    try:
        return ("ok", await operation(store))
    except EventStoreError as error:
        return ("error", *describe(error))


# Hypothesis builds the version choices; the machine turns them into numbers against the model.
expected_choice = st.sampled_from(["right", "none", "stale-behind", "stale-ahead", "zero"])
id_choice = st.sampled_from(["fresh", "fresh", "fresh", "known", "repeat"])


class StoresAgree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="agentledger-stateful-"))
        self.stack = ExitStack()
        self.portal: BlockingPortal = self.stack.enter_context(
            start_blocking_portal(backend="asyncio")
        )
        self.clock = FakeClock()
        self.memory = MemoryEventStore(clock=self.clock)
        self.memory_cm = self._enter(self.memory)
        self.sqlite = self._new_sqlite()
        self.sqlite_cm = self._enter(self.sqlite)
        self.open = True
        self.event_ids: list[str] = []
        self.next_id = 0
        self.next_turn = 0

    def teardown(self) -> None:
        try:
            if self.open:
                self.sqlite_cm.__exit__(None, None, None)
                self.memory_cm.__exit__(None, None, None)
            self.stack.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- plumbing ------------------------------------------------------------------------------

    def _new_sqlite(self) -> SqliteEventStore:
        return SqliteEventStore(self.directory / "events.db", clock=self.clock)

    def _enter(self, store: EventStore) -> AbstractContextManager[EventStore]:
        # One task enters and leaves the store, as ``async with`` would.
        cm = self.portal.wrap_async_context_manager(store)
        cm.__enter__()
        return cm

    def both(self, operation: Operation) -> Any:
        """Run ``operation`` on each store; they must agree. Returns the shared outcome."""
        expected = self.portal.call(_outcome, operation, self.memory)
        actual = self.portal.call(_outcome, operation, self.sqlite)
        assert actual == expected, f"sqlite {actual!r} != memory {expected!r}"
        return expected

    def version_of(self, stream: str) -> int:
        if not self.open:
            return 0
        return self.portal.call(self.memory.stream_version, stream)

    def expected_version(self, stream: str, choice: str) -> int | None:
        current = self.version_of(stream)
        return {
            "right": current,
            "none": None,
            "stale-behind": max(current - 1, 0) if current else 1,
            "stale-ahead": current + 1,
            "zero": 0,
        }[choice]

    def new_events(self, stream: str, count: int, ids: list[str]) -> list[NewEvent]:
        events: list[NewEvent] = []
        for index in range(count):
            choice = ids[index % len(ids)]
            if choice == "known" and self.event_ids:
                event_id = self.event_ids[self.next_id % len(self.event_ids)]
            elif choice == "repeat" and events:
                event_id = events[-1].event_id
            else:
                event_id = f"evt-{self.next_id}"
            self.next_id += 1
            self.next_turn += 1
            event = TurnStarted(run_id=stream, span_id=f"s{self.next_turn}", at=START, turn=index)
            events.append(NewEvent(event=event, event_id=event_id))
        return events

    def append(self, *appends: StreamAppend) -> None:
        self.clock.now += timedelta(seconds=1, microseconds=1)
        outcome = self.both(lambda store: store.append(*appends))
        if outcome[0] == "ok":
            self.event_ids.extend(recorded.event_id for recorded in outcome[1])

    # -- appends -------------------------------------------------------------------------------

    @rule(
        stream=st.sampled_from(STREAMS),
        count=st.integers(0, 3),
        expected=expected_choice,
        ids=st.lists(id_choice, min_size=1, max_size=3),
    )
    def append_to_one_stream(self, stream: str, count: int, expected: str, ids: list[str]) -> None:
        events = self.new_events(stream, count, ids)
        self.append(StreamAppend(stream, events, self.expected_version(stream, expected)))

    @rule(
        first=st.sampled_from(STREAMS),
        second=st.sampled_from(STREAMS),
        expected=st.tuples(expected_choice, expected_choice),
        counts=st.tuples(st.integers(1, 3), st.integers(1, 3)),
        ids=st.lists(id_choice, min_size=1, max_size=3),
        share_an_id=st.sampled_from([False, False, False, True]),
    )
    def append_to_two_streams(
        self,
        first: str,
        second: str,
        expected: tuple[str, str],
        counts: tuple[int, int],
        ids: list[str],
        share_an_id: bool,
    ) -> None:
        first_events = self.new_events(first, counts[0], ids)
        second_events = self.new_events(second, counts[1], ids)
        if share_an_id:
            second_events[0] = NewEvent(second_events[0].event, first_events[0].event_id)
        second_expected = self.expected_version(second, expected[1])
        if first == second and expected[1] == "right" and second_expected is not None:
            second_expected += counts[0]  # right means: after the first part of this call
        self.append(
            StreamAppend(first, first_events, self.expected_version(first, expected[0])),
            StreamAppend(second, second_events, second_expected),
        )

    # -- reads ---------------------------------------------------------------------------------

    @rule(
        stream=st.sampled_from([*STREAMS, "never-written"]),
        after=st.integers(0, 8),
        limit=st.none() | st.integers(0, 5),
    )
    def read_stream(self, stream: str, after: int, limit: int | None) -> None:
        self.both(lambda store: store.read_stream(stream, after=after, limit=limit))

    @rule(after=st.integers(0, 40), limit=st.none() | st.integers(0, 7))
    def read_all(self, after: int, limit: int | None) -> None:
        if limit is None:
            self.both(lambda store: store.read_all(after=after))
        else:
            self.both(lambda store: store.read_all(after=after, limit=limit))

    @rule(index=st.integers(0, 1000), unknown=st.booleans())
    def get_event(self, index: int, unknown: bool) -> None:
        if unknown or not self.event_ids:
            event_id = f"never-{index}"
        else:
            event_id = self.event_ids[index % len(self.event_ids)]
        self.both(lambda store: store.get_event(event_id))

    @rule(stream=st.sampled_from([*STREAMS, "never-written"]))
    def stream_version(self, stream: str) -> None:
        self.both(lambda store: store.stream_version(stream))

    # -- checkpoints ---------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(["runs", "spend"]),
        stale=st.booleans(),
        position=st.integers(0, 50),
        rows=st.dictionaries(
            st.sampled_from(["k1", "k2", "k3"]), st.none() | st.binary(max_size=4), max_size=3
        ),
        reset=st.booleans(),
    )
    def save_checkpoint(
        self, name: str, stale: bool, position: int, rows: dict[str, bytes | None], reset: bool
    ) -> None:
        saved = self.portal.call(self.memory.load_checkpoint, name).position if self.open else 0
        expected = saved + 1 if stale else saved
        self.both(
            lambda store: store.save_checkpoint(
                name, expected_position=expected, position=position, rows=rows, reset=reset
            )
        )

    @rule(name=st.sampled_from(["runs", "spend", "never-saved"]))
    def load_checkpoint(self, name: str) -> None:
        self.both(lambda store: store.load_checkpoint(name))

    # -- lifecycle -----------------------------------------------------------------------------

    @precondition(lambda self: self.open)
    @rule()
    def reopen_sqlite(self) -> None:
        self.sqlite_cm.__exit__(None, None, None)
        self.sqlite = self._new_sqlite()
        self.sqlite_cm = self._enter(self.sqlite)

    @precondition(lambda self: self.open)
    @rule()
    def close_both(self) -> None:
        self.sqlite_cm.__exit__(None, None, None)
        self.memory_cm.__exit__(None, None, None)
        self.open = False

    @precondition(lambda self: not self.open)
    @rule()
    def reopen_both(self) -> None:
        self.memory_cm = self._enter(self.memory)
        self.sqlite = self._new_sqlite()
        self.sqlite_cm = self._enter(self.sqlite)
        self.open = True

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def same_log(self) -> None:
        outcome = self.both(lambda store: store.read_all(after=0, limit=100_000))
        if self.open:
            log = outcome[1]
            assert [r.position for r in log] == list(range(1, len(log) + 1))
            self.both(lambda store: store.head_position())


StoresAgree.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_sqlite_agrees_with_memory = StoresAgree.TestCase
