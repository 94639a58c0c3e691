"""``MemoryEventStore``: the event store in a Python list, for tests and short-lived runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from ._append_rule import Accepted, judge
from ._codec import EventCodec
from ._envelope import RecordedEvent, StreamAppend
from ._errors import ConcurrencyError, StoreClosedError
from ._store import Checkpoint, StoreBase, checkpoint_stream
from ._time import Clock, utc_now


class MemoryEventStore(StoreBase):
    """An ``EventStore`` that keeps everything in memory and loses it on exit.

    It honours the whole store contract (atomic multi-stream appends, expected versions,
    duplicate ids, gapless positions), so code tested against it behaves the same on SQLite or
    PostgreSQL.
    """

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[str, RecordedEvent] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def aclose(self) -> None:
        self._open = False
        self._wake_tails()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosedError("the memory store is not open; use 'async with store:'")

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        self._check_open()
        for append in appends:  # refuse what the durable stores could not write
            for new in append.events:
                EventCodec.encode(new.event)
        heads = {a.stream_id: len(self._streams.get(a.stream_id, ())) for a in appends}
        verdict = judge(appends, heads, self._by_id)
        if not isinstance(verdict, Accepted):
            raise verdict
        recorded_at = self._clock()
        recorded: list[RecordedEvent] = []
        position = len(self._log)
        for append, first in zip(appends, verdict.first_versions, strict=True):
            stream = self._streams.setdefault(append.stream_id, [])
            for version, new in enumerate(append.events, first):
                position += 1
                event = RecordedEvent(
                    stream_id=append.stream_id,
                    version=version,
                    position=position,
                    event_id=new.event_id,
                    recorded_at=recorded_at,
                    schema_version=EventCodec.schema_version(new.event.type),
                    event=new.event,
                )
                stream.append(event)
                recorded.append(event)
        self._log.extend(recorded)
        self._by_id.update((r.event_id, r) for r in recorded)
        if recorded:
            self._wake_tails()
        return recorded

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        self._check_open()
        events = self._streams.get(stream_id, [])[max(after, 0) :]
        return events if limit is None else events[:limit]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self._check_open()
        return self._log[max(after, 0) : max(after, 0) + limit]

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        self._check_open()
        return self._by_id.get(event_id)

    async def stream_version(self, stream_id: str) -> int:
        self._check_open()
        return len(self._streams.get(stream_id, ()))

    async def head_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def load_checkpoint(self, name: str) -> Checkpoint:
        self._check_open()
        saved = self._checkpoints.get(name, Checkpoint())
        return Checkpoint(saved.position, dict(saved.rows))

    async def save_checkpoint(
        self,
        name: str,
        *,
        expected_position: int,
        position: int,
        rows: Mapping[str, bytes | None],
        reset: bool = False,
    ) -> None:
        self._check_open()
        saved = self._checkpoints.get(name, Checkpoint())
        if saved.position != expected_position:
            raise ConcurrencyError(checkpoint_stream(name), expected_position, saved.position)
        merged = {} if reset else dict(saved.rows)
        for key, value in rows.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self._checkpoints[name] = Checkpoint(position, merged)


__all__ = ["MemoryEventStore"]
