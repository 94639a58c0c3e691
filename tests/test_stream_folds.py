"""``StreamFolds``: a ledger read on from what was folded, also by concurrent readers and after
a lost race, and always equal to the fold of the whole stream."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import anyio
import anyio.lowlevel

from agentledger.events import (
    BudgetReserved,
    MemoryEventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
)
from agentledger.projections import StreamFolds, fold_ledger

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Counting(MemoryEventStore):
    """A store that notes every stream read and where it started."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        self.reads.append(after)
        await anyio.lowlevel.checkpoint()  # a real store answers later: other readers run meanwhile
        return await super().read_stream(stream_id, after=after, limit=limit)


def reserved(n: int) -> NewEvent:
    event = BudgetReserved(
        run_id=f"r{n}",
        span_id=f"s{n}",
        at=T0,
        reservation_id=f"res{n}",
        user_id="ada",
        day=date(2026, 3, 1),
        model="m",
        amount_usd=Decimal("0.01"),
    )
    return NewEvent(event, f"e{n}")


async def test_concurrent_readers_and_lost_races_read_only_what_is_new() -> None:
    async with Counting() as store:
        folds = StreamFolds(store, fold_ledger)
        await store.append(StreamAppend("ledger", [reserved(1), reserved(2)]))
        assert (await folds.current("ledger")).version == 2
        await store.append(StreamAppend("ledger", [reserved(3)]))
        states = []

        async def read() -> None:
            states.append(await folds.current("ledger"))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(read)
        assert store.reads == [0, 2, 2, 2]  # none of the three read the stream from its start
        whole = fold_ledger(await store.read_stream("ledger"))
        assert all(s == whole for s in states) and whole.committed == Decimal("0.03")

        # A lost race (an append expecting version 3 failed): the next read takes the tail.
        await store.append(StreamAppend("ledger", [reserved(4)]))
        folds.forget("ledger")
        assert await folds.current("ledger") == fold_ledger(await store.read_stream("ledger"))
        assert store.reads[-2] == 3
