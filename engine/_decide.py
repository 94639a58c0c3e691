"""``decide``: the pure half of the loop. It looks at a run's state and names the next step."""

from __future__ import annotations

from dataclasses import dataclass

from agentledger.projections._run_state import RunState, ToolCallState

from ._agent import Agent


@dataclass(frozen=True, slots=True)
class CallModel:
    """Ask the model chain for turn ``turn`` (compacting memory first if the policy says so)."""

    turn: int


@dataclass(frozen=True, slots=True)
class RunTools:
    """Run (or settle, for in-doubt side effects) these tool calls of the current turn."""

    calls: tuple[ToolCallState, ...]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait for a person to approve or deny these calls."""

    call_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Critique:
    """Have the agent's critic judge the answer of the current turn."""

    answer: str


@dataclass(frozen=True, slots=True)
class Complete:
    """The answer stands: end the run with it (``flagged`` if the critic never accepted it)."""

    output: str
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class Fail:
    """The run cannot go on."""

    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Nothing to do: the run has ended or waits for something outside it."""


Command = CallModel | RunTools | Pause | Critique | Complete | Fail | Stop


def decide(state: RunState, agent: Agent) -> Command:
    """The next step of a run, from its state alone (no I/O, no clock)."""
    if state.status != "running":
        return Stop()
    to_run = tuple(
        c for c in state.calls.values() if c.status in ("requested", "approved", "intended")
    )
    if to_run:
        return RunTools(to_run)
    waiting = tuple(
        call_id for call_id, c in state.calls.items() if c.status == "awaiting_confirmation"
    )
    if waiting:
        return Pause(waiting)
    last = state.messages[-1] if state.messages else None
    if state.turn > 0 and last is not None and last.role == "assistant" and not state.calls:
        if agent.critic is None:
            return Complete(state.last_answer)
        if state.critic_turn != state.turn:
            return Critique(state.last_answer)
        # Judged, and either accepted or out of revisions (a revision adds a user message).
        return Complete(state.last_answer, flagged=not state.critic_accepted)
    # Each answered turn adds one assistant message. A turn without one was cut off before its
    # model answered (a crash during a retry back-off): ask again rather than count it as spent.
    answered = sum(1 for m in state.messages if m.role == "assistant")
    if answered < state.turn:
        return CallModel(state.turn)
    if state.turn >= agent.max_turns:
        return Fail("max_turns", f"no answer after {agent.max_turns} turns")
    return CallModel(state.turn + 1)
