"""Sub-agents in the loop: starting a child run from a tool call, and what it answers.

A sub-agent call takes two steps. ``start_sub_agent`` records ``SubAgentStarted`` (the child's
run id, its task, and what is left of this run's cap for it), which the recorder makes durable
before anything runs, like a side effect's intent. ``run_sub_agent`` then asks the child-run port
to drive the child, and records ``SubAgentEnded`` (its status, answer or error, cost) as the
call's result. After a crash the call is still in flight, so the next session asks the port
again with the same ``SubAgentStarted``: the port resumes the child it names (or starts it, if
the crash came before its first write), never a second one.

The child's run id is made from the parent's run, turn and call ids, so it is the same in every
session and in a replay. It runs for the parent's user and surface (the same day ledger) with a
run cap of what the parent had left when it started; a parent's sub-agent calls run one at a
time, so each starts with what the ones before it spent already counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agentledger.engine._agent import Agent
from agentledger.engine.tools._subagent import SubAgentTool
from agentledger.events import (
    RecordedEvent,
    RunPaused,
    RunStarted,
    SubAgentEnded,
    SubAgentStarted,
)
from agentledger.projections._run_state import RunState

from ._commands import RunSubAgent, StartSubAgent
from ._perform_run import run_started
from ._ports import Clock
from ._step import RUN_CAP_SETTING, Step, Writer

_READABLE_ID_CHARS = 200


def subagent(
    agent: Agent, *, name: str | None = None, description: str | None = None
) -> SubAgentTool:
    """``agent`` as a tool of another agent: the model calls it with ``{"task": "..."}`` and a
    child run of ``agent`` answers (see ``docs/subagents.md``).

    ``name`` (default: the agent's name) must be a valid tool name; ``description`` (default: a
    sentence naming the agent) is what the model picks the tool by. Raises ``TypeError`` for a
    name providers refuse, as ``tool`` does.
    """
    if not isinstance(agent, Agent):
        raise TypeError(f"subagent() takes an Agent, not {type(agent).__name__}")
    return SubAgentTool(
        agent,
        name=agent.name if name is None else name,
        description=description
        or f"Hand a self-contained task to the {agent.name} agent and get its answer.",
    )


def child_run_id(parent_run_id: str, turn: int, call_id: str) -> str:
    """The run id of the child a call starts: the same for every session and replay of the
    parent (a readable ``<parent>.t<turn>.<call>``, or a digest when that would be too long or
    hold characters an id may not)."""
    readable = f"{parent_run_id}.t{turn}.{call_id}"
    if len(readable) <= _READABLE_ID_CHARS and readable.isprintable():
        return readable
    digest = hashlib.sha256(f"{parent_run_id}\0{turn}\0{call_id}".encode(errors="surrogatepass"))
    return f"sub-{digest.hexdigest()[:40]}"


def start_sub_agent(command: StartSubAgent, step: Step, writer: Writer) -> None:
    """Record the child's start: its id, task and the part of this run's cap left to it."""
    state, call = step.state, command.call
    policy = step.budget_policy
    cap = None
    if policy is not None and policy.per_run_usd is not None:
        cap = max(policy.per_run_usd - state.committed_usd, Decimal(0))
    started = SubAgentStarted(
        **step.span(call.span_id or step.ports.ids.new_id(), step.turn_span),
        call_id=call.call.id,
        tool_name=command.tool.name,
        child_run_id=child_run_id(state.run_id, state.turn, call.call.id),
        agent=command.tool.agent.name,
        task=command.args.task,
        run_cap_usd=cap,
    )
    writer.stage([started])


async def run_sub_agent(command: RunSubAgent, step: Step, writer: Writer) -> None:
    """Drive the child through the port; record how it ended, or pause with it."""
    started = command.call.child
    assert started is not None and step.state.started is not None
    ended = await step.ports.children.run_child(
        started, command.tool.agent, user_id=step.user_id, surface=step.state.started.surface
    )
    if ended is not None:
        writer.stage([ended])
        return
    paused = RunPaused(
        **step.run_span(),
        reason=f"sub-agent run {started.child_run_id} waits for a person",
        call_ids=(started.call_id,),
    )
    writer.stage([paused])


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A child run to drive: its agent, and its first event (written if it has not started)."""

    agent: Agent
    opening: RunStarted

    @property
    def run_id(self) -> str:
        """The child's run id."""
        return self.opening.run_id


def child_opening(
    started: SubAgentStarted, agent: Agent, *, user_id: str, surface: str, at: datetime
) -> RunStarted:
    """The child's ``RunStarted``: its parent run and call, and the cap it was left."""
    opening = run_started(
        agent, started.child_run_id, started.task, user_id=user_id, surface=surface, at=at
    )
    settings = dict(opening.settings)
    if started.run_cap_usd is not None:
        settings[RUN_CAP_SETTING] = str(started.run_cap_usd)
    return opening.model_copy(
        update={
            "parent_run_id": started.run_id,
            "parent_call_id": started.call_id,
            "settings": settings,
        }
    )


def child_ended(started: SubAgentStarted, child: RunState, at: datetime) -> SubAgentEnded | None:
    """How the child ended, as the parent records it (``None``: it has not, it waits)."""
    if not child.is_terminal:
        return None
    status = child.status
    assert status in ("completed", "failed", "cancelled", "budget_exceeded")
    return SubAgentEnded(
        run_id=started.run_id,
        span_id=started.span_id,
        parent_span_id=started.parent_span_id,
        at=at,
        call_id=started.call_id,
        tool_name=started.tool_name,
        child_run_id=started.child_run_id,
        status=status,
        output=child.output,
        error=child.error or _exceeded(child),
        flagged=child.flagged,
        cost_usd=child.cost_usd + child.children_usd,
        usage=child.usage,
    )


def _exceeded(child: RunState) -> str | None:
    if child.status != "budget_exceeded":
        return None
    return "the sub-agent's next model call could have passed its budget cap"


class LiveChildren:
    """The live child-run port: ``drive`` (the engine's) starts or resumes a child run and
    returns its state once it ends or pauses."""

    def __init__(self, drive: Callable[[ChildRun], Awaitable[RunState]], clock: Clock) -> None:
        self._drive = drive
        self._clock = clock

    async def run_child(
        self, started: SubAgentStarted, agent: Any, *, user_id: str, surface: str
    ) -> SubAgentEnded | None:
        assert isinstance(agent, Agent)
        opening = child_opening(
            started, agent, user_id=user_id, surface=surface, at=self._clock.now()
        )
        child = await self._drive(ChildRun(agent, opening))
        return child_ended(started, child, self._clock.now())


def sub_agents_started(recorded: Sequence[RecordedEvent]) -> list[SubAgentStarted]:
    """The children a run's log started, in order."""
    return [r.event for r in recorded if isinstance(r.event, SubAgentStarted)]


def child_agent_of(agent: Agent, started: SubAgentStarted) -> Agent | None:
    """The agent ``agent`` runs as the sub-agent ``started`` names (``None``: it has no such
    sub-agent any more)."""
    tool = agent.tools_by_name.get(started.tool_name)
    return tool.agent if isinstance(tool, SubAgentTool) and isinstance(tool.agent, Agent) else None
