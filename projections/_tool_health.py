"""Tool health (pattern 4): successes and failures per tool and tier, and the circuit breaker.

Fed by ``ToolCallSucceeded`` and ``ToolTierFailed`` from every run (fold ``read_all``), in the
order the store committed them: "consecutive" failures are consecutive in that order. Skips
(``ToolTierSkipped``) are not attempts and change nothing.

The breaker of a tier, with ``threshold`` N and ``cooldown`` C, at time ``now``:

- **closed** while the tier has fewer than N failures in a row: calls go to it.
- **open** from its N-th failure in a row at time ``t`` until ``t + C``: calls skip it
  (``circuit_open_until`` gives ``t + C``, the ``until`` of ``ToolTierSkipped``).
- **half-open** from ``t + C`` on: a trial call goes to the tier. If the trial fails at ``t2``,
  the run of failures is still at least N, so the breaker is open again until ``t2 + C`` after
  that *one* failure; if it succeeds, the run of failures is reset and the breaker is closed.

The fold sees outcomes, not attempts in flight, so "a single trial" holds per decision: calls
that start before the trial's outcome is recorded also find the breaker half-open and may try
too. An engine that wants exactly one trial serialises the half-open attempts of a tier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

import anyio
import orjson

from agentledger.events import (
    CorruptEventError,
    EventStore,
    RecordedEvent,
    ToolCallSucceeded,
    ToolTierFailed,
)

from ._damage import PARKED_KEY_PREFIX
from ._streams import is_run_stream

_TIER_EVENTS = frozenset({"tool_call_succeeded", "tool_tier_failed"})

BreakerState = Literal["closed", "open", "half_open"]
"""Where a tier's circuit breaker stands at a given time."""


@dataclass(frozen=True, slots=True)
class TierHealth:
    """What the log says about one tier of one tool.

    ``last_failure_at`` and ``last_success_at`` are the latest ``at`` of those events (the
    engine's clock), kept as the maximum so an event from a process whose clock lags cannot move
    them back.
    """

    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_failure_at: datetime | None = None
    last_success_at: datetime | None = None


_NEVER_USED = TierHealth()


def _empty_tiers() -> Mapping[tuple[str, str], TierHealth]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ToolHealth:
    """Health of every (tool, tier) seen so far; read-only, replaced (not changed) by ``evolve``."""

    tiers: Mapping[tuple[str, str], TierHealth] = field(default_factory=_empty_tiers)

    def get(self, tool: str, tier: str) -> TierHealth:
        """The health of a tier; all zeros for one the log never mentions."""
        return self.tiers.get((tool, tier), _NEVER_USED)

    @classmethod
    def from_rows(cls, rows: Mapping[str, TierHealth]) -> ToolHealth:
        """The state of ``ToolHealthProjection`` from the rows of ``ToolHealthRows``."""
        return cls(MappingProxyType({_split_key(key): row for key, row in rows.items()}))


def _after(health: TierHealth | None, recorded: RecordedEvent) -> TierHealth | None:
    """The tier's health after one event, or ``None`` when the event is not about a tier."""
    event = recorded.event
    current = _NEVER_USED if health is None else health
    if isinstance(event, ToolCallSucceeded):
        return replace(
            current,
            successes=current.successes + 1,
            consecutive_failures=0,
            last_success_at=_latest(current.last_success_at, event.at),
        )
    if isinstance(event, ToolTierFailed):
        return replace(
            current,
            failures=current.failures + 1,
            consecutive_failures=current.consecutive_failures + 1,
            last_failure_at=_latest(current.last_failure_at, event.at),
        )
    return None


def _latest(known: datetime | None, at: datetime) -> datetime:
    return at if known is None or at > known else known


def _tier_of(recorded: RecordedEvent) -> tuple[str, str] | None:
    # Outcomes are copied into key ledgers too; a run's stream holds each attempt once.
    if recorded.type not in _TIER_EVENTS or not is_run_stream(recorded.stream_id):
        return None
    event = recorded.event
    if isinstance(event, ToolCallSucceeded | ToolTierFailed):
        return (event.tool_name, event.tier)
    return None


class ToolHealthProjection:
    """The ``Projection`` of the whole log into a ``ToolHealth``.

    ``evolve`` copies the (small) tier mapping only for events that change it and returns the
    state it was given, unchanged, for any other event.
    """

    def initial(self) -> ToolHealth:
        """No tier seen yet."""
        return ToolHealth()

    def evolve(self, state: ToolHealth, recorded: RecordedEvent) -> ToolHealth:
        """The health after ``recorded``; ``state`` is left as it was."""
        key = _tier_of(recorded)
        if key is None:
            return state
        updated = _after(state.tiers.get(key), recorded)
        assert updated is not None  # _tier_of and _after agree on which events count
        return ToolHealth(MappingProxyType({**state.tiers, key: updated}))


class ToolHealthRows:
    """Tool health as a ``KeyedProjection``: one row per ``"<tool>/<tier>"``, saved as JSON.

    For a ``ProjectionRunner`` to keep it saved; ``ToolHealth.from_rows`` turns the rows into
    the state ``circuit_open_until`` reads. Tool names cannot hold ``/`` (the ``tool``
    decorator allows only letters, digits, ``_`` and ``-``), so the key splits unambiguously.
    """

    def __init__(self, *, name: str = "tool_health") -> None:
        self.name = name

    def key(self, recorded: RecordedEvent) -> str | None:
        """``"<tool>/<tier>"`` for a success or tier failure, else ``None``."""
        tier = _tier_of(recorded)
        return None if tier is None else f"{tier[0]}/{tier[1]}"

    def evolve_row(self, row: TierHealth | None, recorded: RecordedEvent) -> TierHealth | None:
        """The tier's health after ``recorded``."""
        updated = _after(row, recorded)
        return row if updated is None else updated

    def encode_row(self, row: TierHealth) -> bytes:
        """The row as JSON (times in ISO 8601)."""
        return orjson.dumps(
            [
                row.successes,
                row.failures,
                row.consecutive_failures,
                row.last_failure_at,
                row.last_success_at,
            ]
        )

    def decode_row(self, data: bytes) -> TierHealth:
        """A row back from ``encode_row`` bytes (the runner reports a bad one with its key)."""
        successes, failures, consecutive, failed_at, succeeded_at = orjson.loads(data)
        return TierHealth(
            successes=int(successes),
            failures=int(failures),
            consecutive_failures=int(consecutive),
            last_failure_at=None if failed_at is None else datetime.fromisoformat(failed_at),
            last_success_at=None if succeeded_at is None else datetime.fromisoformat(succeeded_at),
        )


def _split_key(key: str) -> tuple[str, str]:
    tool, _, tier = key.partition("/")
    return (tool, tier)


def circuit_open_until(
    health: ToolHealth, tool: str, tier: str, *, threshold: int, cooldown: timedelta
) -> datetime | None:
    """Until when the breaker of ``tool``/``tier`` stays open, or ``None`` if it is closed.

    The breaker opens at the ``threshold``-th failure in a row and stays open for ``cooldown``
    after the latest failure; compare the result with the clock: the tier is skipped while
    ``now < until`` and is half-open (one trial) from ``until`` on. See the module docstring.
    """
    _check_policy(threshold, cooldown)
    state = health.get(tool, tier)
    if state.consecutive_failures < threshold or state.last_failure_at is None:
        return None
    return state.last_failure_at + cooldown


def circuit_state(
    health: ToolHealth,
    tool: str,
    tier: str,
    *,
    threshold: int,
    cooldown: timedelta,
    now: datetime,
) -> BreakerState:
    """``closed``, ``open`` or ``half_open`` at ``now`` (see the module docstring)."""
    until = circuit_open_until(health, tool, tier, threshold=threshold, cooldown=cooldown)
    if until is None:
        return "closed"
    return "open" if now < until else "half_open"


def _check_policy(threshold: int, cooldown: timedelta) -> None:
    if threshold < 1:
        raise ValueError("a breaker threshold is at least 1 failure")
    if cooldown < timedelta(0):
        raise ValueError("a breaker cooldown cannot be negative")


class ToolHealthView:
    """Tool health as this store holds it, shared by every engine on the store.

    Folded from the whole log in commit order (``read_all``), so a tier that fails in one
    process is skipped by the others. Appends made through this process are folded as they are
    published (``observe``), in position order, at no read: a batch that arrives before the
    ones it follows waits for them. ``current()`` reads what other processes committed when the
    view is older than ``refresh_interval`` seconds (of the event loop's clock). It starts from
    the saved checkpoint of a ``ProjectionRunner`` over ``ToolHealthRows`` named
    ``checkpoint``, if one is kept, so a new process need not fold the whole log.

    The view is a cache: a decision that depends on it (skipping a tier) records what it saw.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        refresh_interval: float = 1.0,
        checkpoint: str = "tool_health",
        page_size: int = 1000,
    ) -> None:
        self._store = store
        self._refresh_interval = refresh_interval
        self._checkpoint = checkpoint
        self._page_size = page_size
        self._projection = ToolHealthProjection()
        self._state = self._projection.initial()
        self._position = 0
        self._loaded = False
        self._waiting: dict[int, Sequence[RecordedEvent]] = {}
        """Published batches that follow a gap, by their first position."""
        self._refreshed_at = -math.inf
        self._refreshing = False

    @property
    def position(self) -> int:
        """The global position folded so far."""
        return self._position

    @property
    def loaded(self) -> bool:
        """Whether the view has read the store once."""
        return self._loaded

    def observe(self, recorded: Sequence[RecordedEvent]) -> None:
        """Fold events this process appended (one append's events, consecutive positions)."""
        if not recorded or not self._loaded or recorded[-1].position <= self._position:
            return
        self._waiting[recorded[0].position] = recorded
        while (batch := self._waiting.pop(self._position + 1, None)) is not None:
            self._fold(batch)

    def take_refresh(self) -> bool:
        """Whether the caller is to ``refresh`` the view now: it is due to read what other
        processes committed, and no one else is at it (the others go on with the view as it
        is meanwhile)."""
        if self._refreshing or anyio.current_time() - self._refreshed_at < self._refresh_interval:
            return False
        self._refreshing = True
        return True

    @property
    def state(self) -> ToolHealth:
        """The health as of the last refresh, with this process's appends since."""
        return self._state

    async def current(self) -> ToolHealth:
        """``state``, refreshed first if that is due."""
        if self.take_refresh():
            await self.refresh()
        return self._state

    async def refresh(self) -> None:
        """Read what the store holds beyond the view (after ``take_refresh`` said so)."""
        try:
            now = anyio.current_time()
            await self._catch_up()
            self._refreshed_at = now
        finally:
            self._refreshing = False

    def _fold(self, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            if event.position > self._position:
                if event.type in _TIER_EVENTS:
                    # One damaged outcome must not freeze every tool's breaker: it is skipped,
                    # and the run it belongs to is parked when it is read (see ``_damage``).
                    with suppress(CorruptEventError):
                        self._state = self._projection.evolve(self._state, event)
                self._position = event.position

    async def _catch_up(self) -> None:
        if not self._loaded:
            saved = await self._store.load_checkpoint(self._checkpoint)
            rows = ToolHealthRows()
            self._state = ToolHealth.from_rows(
                {
                    key: rows.decode_row(data)
                    for key, data in saved.rows.items()
                    if not key.startswith(PARKED_KEY_PREFIX)  # the runner's note of damage
                }
            )
            self._position = saved.position
            self._loaded = True
        while True:
            page = await self._store.read_all(after=self._position, limit=self._page_size)
            self._fold(page)
            if len(page) < self._page_size:
                break
        self._waiting = {first: b for first, b in self._waiting.items() if first > self._position}
