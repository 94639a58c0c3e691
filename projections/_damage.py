"""Folding past damaged events: a corrupt event parks its stream instead of stopping a fold.

A persistent projection folds the whole log. If one damaged row (``CorruptEventError``) stopped
it, one bad run would freeze every listing built on it, forever. So a projection runner skips
the damaged event, notes its stream as *parked* (with where and why) and folds on. The parked
stream's rows may then miss that event's effect, which is why the stream is reported, never
silently passed over; once the row is repaired, ``rebuild()`` the projection.

Only damage parks. An unknown event type, a newer schema or a missing upcaster mean this
program is too old for the log: those still stop the fold loudly, since folding on would save
a checkpoint past events a newer program could read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from agentledger.events import CorruptEventError, RecordedEvent

from ._streams import RUN_PREFIX

PARKED_KEY_PREFIX = "\x01parked:"
"""The prefix of a runner's saved rows that record parked streams, apart from the projection's
own rows (keys are ids, which never start with a control character in practice)."""


@dataclass(frozen=True, slots=True)
class ParkedStream:
    """A stream whose event at ``version`` (global ``position``) is damaged, and why."""

    stream_id: str
    version: int
    position: int | None
    reason: str

    @classmethod
    def of(cls, error: CorruptEventError) -> ParkedStream:
        """Where and why, from the error a damaged event raised."""
        return cls(error.stream_id, error.version, error.position, error.reason)

    def describe(self) -> str:
        """One line: the stream, version, position and reason."""
        where = "" if self.position is None else f" (position {self.position})"
        return f"event {self.stream_id!r}@{self.version}{where} is corrupt: {self.reason}"

    def encode(self) -> bytes:
        """As saved with a runner's checkpoint."""
        return orjson.dumps(
            {
                "stream_id": self.stream_id,
                "version": self.version,
                "position": self.position,
                "reason": self.reason,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> ParkedStream:
        """Back from ``encode`` bytes."""
        raw = orjson.loads(data)
        return cls(raw["stream_id"], raw["version"], raw["position"], raw["reason"])


def fold_around_damage(
    fold: Callable[[Sequence[RecordedEvent]], None],
    page: Sequence[RecordedEvent],
    park: Callable[[ParkedStream], None],
) -> None:
    """``fold(page)``, but an event that raises ``CorruptEventError`` is handed to ``park`` and
    the fold goes on with the events after it.

    ``fold`` must apply events in order and raise before it changes anything for the event that
    fails (folds read ``recorded.event`` first, which is where damage shows).
    """
    while page:
        try:
            fold(page)
            return
        except CorruptEventError as exc:
            index = next(
                (
                    i
                    for i, recorded in enumerate(page)
                    if recorded.stream_id == exc.stream_id and recorded.version == exc.version
                ),
                None,
            )
            if index is None:  # not one of this page's events: not ours to skip
                raise
            park(ParkedStream.of(exc))
            page = page[index + 1 :]


def parked_runs(parked: Mapping[str, ParkedStream]) -> dict[str, ParkedStream]:
    """The runs among parked streams, by run id (a runner's ``parked`` holds every stream)."""
    return {
        stream_id.removeprefix(RUN_PREFIX): where
        for stream_id, where in parked.items()
        if stream_id.startswith(RUN_PREFIX)
    }
