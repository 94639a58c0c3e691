"""``RunResult``: where a run stands, as ``run``, ``resume`` and ``result`` return it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic

from agentledger.events import BudgetOvershot, Usage
from agentledger.projections._run_state import RunState, RunStatus

from ._agent import Agent, OutputT


@dataclass(frozen=True, slots=True)
class RunResult(Generic[OutputT]):
    """Where a run stands after ``run``/``resume`` returned: its status, answer and spend.

    ``value`` is the answer as the agent's output type: for an agent with ``output_type=M`` an
    instance of ``M`` (``output`` then holds its JSON), else the ``output`` text; ``None`` unless
    the run completed. It is rebuilt from ``output`` by validation, so it is left out of
    equality: two results of one log are equal whichever agent typed them.
    """

    run_id: str
    status: RunStatus
    output: str | None
    cost_usd: Decimal
    usage: Usage
    turns: int
    flagged: bool = False
    error: str | None = None
    pending_confirmations: tuple[str, ...] = field(default_factory=tuple)
    overshoots: tuple[BudgetOvershot, ...] = ()
    """Model calls that cost more than their reservation (a server ignored the output limit);
    the first closed the run and the user's day to further capped calls."""
    value: OutputT | None = field(default=None, compare=False)
    conversation_id: str | None = None
    """The conversation the run belongs to, if any (pass it to continue the conversation)."""

    @property
    def overshot(self) -> bool:
        """Whether a model call of the run cost more than the budget reserved for it."""
        return bool(self.overshoots)

    @classmethod
    def of(cls, state: RunState, agent: Agent[Any] | None = None) -> RunResult[Any]:
        """The result a run's state describes; ``agent`` types its ``value`` (without it,
        ``value`` is ``None``). Raises ``InvalidOutputError`` if a completed run's output is not
        a valid ``output_type`` of ``agent`` (the type changed since the run validated it)."""
        value = None
        if agent is not None and state.status == "completed" and state.output is not None:
            value = agent.output_value(state.output)
        return cls(
            run_id=state.run_id,
            status=state.status,
            output=state.output,
            cost_usd=state.cost_usd,
            usage=state.usage,
            turns=state.turn,
            flagged=state.flagged,
            error=state.error,
            pending_confirmations=()
            if state.is_terminal
            else tuple(i for i, c in state.calls.items() if c.status == "awaiting_confirmation"),
            overshoots=state.overshoots,
            value=value,
            conversation_id=state.started.conversation_id if state.started else None,
        )
