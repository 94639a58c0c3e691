"""What a performed step is given: the run's state, its agent, its ports, and where to write.

A step receives these narrow parts, never the driver: it reads ``Step``, meets the world through
``step.ports`` (at most one I/O) and hands the events that record it to a ``Writer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from agentledger.engine._agent import Agent
from agentledger.engine.policies._budget import BudgetPolicy, Budgets
from agentledger.events import Event, RunStarted, StreamAppend
from agentledger.projections._run_state import RunState

from ._ports import Clock, Ports, SpanFields


def in_span(
    state: RunState, clock: Clock, span_id: str, parent: str | None, at: datetime | None = None
) -> SpanFields:
    """The envelope of an event of ``state``'s run in span ``span_id`` (child of ``parent``)."""
    return {
        "run_id": state.run_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "at": clock.now() if at is None else at,
    }


RUN_CAP_SETTING = "run_cap_usd"
"""The ``RunStarted.settings`` entry of a sub-agent's run: what its parent left it of its cap."""


def parent_cap(started: RunStarted) -> Decimal | None:
    """The run cap a sub-agent's run was given by its parent (``None``: none)."""
    value = started.settings.get(RUN_CAP_SETTING)
    return Decimal(value) if isinstance(value, str) else None


class Writer(Protocol):
    """Where a step's events go: staged for the next write, or written now (``commit``)."""

    def stage(self, events: Sequence[Event], *others: StreamAppend) -> None: ...

    async def commit(self, events: Sequence[Event], *others: StreamAppend) -> None: ...


@dataclass(slots=True)
class Step:
    """The inputs of one step (not to be changed: made anew for every step)."""

    state: RunState
    agent: Agent
    ports: Ports
    budgets: Budgets | None

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.state.run_id

    @property
    def user_id(self) -> str:
        """Who the run is for."""
        started = self.state.started
        return started.user_id if started is not None else ""

    @property
    def turn_span(self) -> str:
        """The span of the current turn (the run's before the first turn)."""
        return self.state.turn_span_id or self.state.run_id

    def span(self, span_id: str, parent: str | None, at: datetime | None = None) -> SpanFields:
        """The envelope of an event of span ``span_id`` (child of ``parent``) at ``at`` (default:
        now on the clock)."""
        return in_span(self.state, self.ports.clock, span_id, parent, at)

    def run_span(self) -> SpanFields:
        """The envelope of a run-level event."""
        return self.span(self.state.run_id, None)

    @property
    def budget_policy(self) -> BudgetPolicy | None:
        """The run's caps, or ``None`` when its surface has none (then nothing is reserved)."""
        started = self.state.started
        if self.budgets is None or started is None:
            return None
        policy = self.budgets.policy(started.surface)
        left = parent_cap(started)
        if left is not None and (policy.per_run_usd is None or left < policy.per_run_usd):
            policy = BudgetPolicy(per_run_usd=left, per_user_day_usd=policy.per_user_day_usd)
        if policy.per_run_usd is None and policy.per_user_day_usd is None:
            return None
        return policy

    def budget_day(self, at: datetime) -> date:
        """The budget day ``at`` falls in."""
        assert self.budgets is not None  # a policy exists only with budgets
        return self.budgets.day(at)
