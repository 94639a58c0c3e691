"""Ports: the only doors between a run's decisions and the world.

Every input of a decision is either folded from the run's log or the answer of a port: the clock,
the id source, the models, the tools (their tiers and reconcile hooks), the tools' health, the
budget ledgers and the idempotency ledgers. Each port answers with the event that records its
answer (its envelope is the caller's to set), so a live answer and an answer replayed from a
recording are the same kind of thing; ``agentledger.replay`` answers every one of these ports
from a run's tape.

``SystemClock`` and ``RandomIds`` are the production clock and ids; ``agentledger.engine.testing``
has deterministic ones.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypedDict

import anyio

from agentledger.events import (
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    SubAgentEnded,
    SubAgentStarted,
    ToolCallIntended,
    ToolCallReconciled,
    ToolCallSucceeded,
    ToolTierFailed,
    ToolTierSkipped,
)
from agentledger.projections._keys import KeyRecord
from agentledger.projections._spend import LedgerState


class Clock(Protocol):
    """Tells the time and waits; injectable so tests can skip waits."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (retry back-off); a fake clock advances instead."""
        ...


class IdSource(Protocol):
    """Makes unique ids for runs, spans, calls, reservations and events."""

    def new_id(self) -> str:
        """A new id, unique across processes for production sources."""
        ...


def elapsed_ms(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end``, two readings of a ``Clock``."""
    return (end - start).total_seconds() * 1000


class SystemClock:
    """The machine's clock in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class RandomIds:
    """Unique ids: 64 random bits drawn once per source, then a counter (32 hex characters).

    Unique across processes and hosts (two sources share a prefix with odds of 2**-64), sortable
    by creation within one source, and cheap: an id costs no system call, which matters at
    several ids per event.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class SpanFields(TypedDict):
    """The envelope fields of an event in a span of a run."""

    run_id: str
    span_id: str
    parent_span_id: str | None
    at: datetime


class ModelPort(Protocol):
    """Sends model requests: the answer to ``requested`` is a reply (with its cost at the agent's
    prices) or an error, as the event that records it in ``requested``'s span.

    ``request`` is the ``ModelRequest`` that ``requested`` fingerprints.
    """

    async def attempt(
        self, requested: ModelCallRequested, request: Any
    ) -> ModelCallResponded | ModelCallFailed: ...


class ToolPort(Protocol):
    """Runs tools: one tier of an intended call, or the reconcile hook of a call in doubt.

    ``args`` are the validated arguments (the tool's pydantic model). A success or a reconcile
    finding is recorded in the call's span (``intended``'s), a tier's failure in ``tier_span``
    under it; no exception of a tool ever comes out of this port.
    """

    async def run_tier(
        self, intended: ToolCallIntended, tier: str, args: Any, user_id: str, tier_span: str
    ) -> ToolCallSucceeded | ToolTierFailed: ...

    async def reconcile(
        self, intended: ToolCallIntended, args: Any, user_id: str
    ) -> ToolCallReconciled: ...


class HealthPort(Protocol):
    """The circuit breakers: whether tier ``tier`` of ``tool`` is to be skipped at ``now``, as the
    skip event carrying the health it saw, or ``None`` to try it."""

    async def skip(
        self,
        call_id: str,
        tool: str,
        tier: str,
        *,
        threshold: int,
        cooldown: timedelta,
        now: datetime,
    ) -> ToolTierSkipped | None: ...


class LedgerPort(Protocol):
    """Budget ledgers of users' days, as the store holds them now."""

    async def day_ledger(self, stream: str) -> LedgerState: ...

    def forget(self, stream: str) -> None:
        """The ledger moved under an append: read it whole next time."""
        ...


class KeyPort(Protocol):
    """Idempotency ledgers: what key ``key`` records, as call ``call_id`` of the run finds it."""

    async def key_record(self, key: str, call_id: str) -> KeyRecord: ...

    def forget(self, key: str) -> None:
        """The key moved under an append: read it whole next time."""
        ...


class ChildRunPort(Protocol):
    """Sub-agents: drives the child run ``started`` names, of ``agent``, for ``user_id`` on
    ``surface`` (starting it, or resuming it where a crash left it) and answers how it ended, in
    ``started``'s span, or ``None`` when the child waits for a person (the parent pauses too).
    """

    async def run_child(
        self, started: SubAgentStarted, agent: Any, *, user_id: str, surface: str
    ) -> SubAgentEnded | None: ...


class NoChildren:
    """The child-run port where none is wired: a sub-agent call cannot be performed."""

    async def run_child(
        self, started: SubAgentStarted, agent: Any, *, user_id: str, surface: str
    ) -> SubAgentEnded | None:
        raise RuntimeError("sub-agent runs need an Engine's child-run port (Ports.children)")


_NO_CHILDREN = NoChildren()


class Gate(Protocol):
    """Consulted before every I/O of a run with the run's committed and current version.

    Returns ``None`` to go on, or a reason to cancel the run at this point; may raise to stop
    the run where it stands (replay uses both to reproduce a recorded cancellation or crash).
    """

    def before_io(self, committed: int, version: int) -> str | None: ...


class OpenGate:
    """The live gate: never stops a run (cancellation comes from ``Engine.cancel``)."""

    def before_io(self, committed: int, version: int) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class Ports:
    """Every port one run's driver talks through."""

    clock: Clock
    ids: IdSource
    models: ModelPort
    tools: ToolPort
    health: HealthPort
    ledgers: LedgerPort
    keys: KeyPort
    gate: Gate
    children: ChildRunPort = _NO_CHILDREN
