"""Forks: a run's first events copied into a new run that records where it came from.

A fork's copy folds to the original's state at the fork's version, except its identity: the
new run id, and a ``RunStarted`` that names its lineage (``forked_from``, ``forked_at_version``)
and the agent that continues it. Every other copied event is the original fact with the new run
id; its time, spans (the run's own span renamed), tool call ids and results stay as recorded.

What the copy does not do, and why:

- It never touches another stream. A user's day ledger already holds the copied calls'
  reservations and settlements (under the original's reservation ids), so it is charged once;
  the fork's own model calls reserve in it as any run's do. The fork's run state counts the
  copied spend (its conversation cost that much), so its run cap covers the copy too.
- It cannot copy work in flight: a fork point may not have a model request without answer (its
  reservation is the original's to settle or release) nor a tool call between intent and
  outcome (a side effect in doubt is the original's to settle). Such a point raises
  ``ForkError``, as does a point after the run ended or past its last event.
- Side effects already done in the copy are history: they are not run again. Side effects the
  fork asks for after the copy are its own: a ``key_scope="run"`` key includes the run id, so a
  fork that makes the same call again executes it again under its own key; a ``"user"`` scope
  key is the original's, so the recorded result is reused without running the tool.
- A call awaiting a person's confirmation at the fork point awaits it in the fork too: the
  original's later approval is not copied; ``approve`` the fork's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentledger.events import Event, RecordedEvent, RunStarted
from agentledger.projections._run_state import RunState, fold_run

from ._divergence import ReplayError


class ForkError(ReplayError):
    """Raised when a run cannot be forked at the version asked (past its end, after it ended,
    or with a model request or a tool call in flight there)."""


def fork_state(recorded: Sequence[RecordedEvent], at_version: int) -> RunState:
    """The original run's state at ``at_version``; raises ``ForkError`` if the run cannot go on
    from there."""
    run_id = recorded[0].event.run_id if recorded else "?"
    if not 1 <= at_version <= len(recorded):
        raise ForkError(
            f"run {run_id!r} has versions 1 to {len(recorded)}; cannot fork at {at_version}"
        )
    state = fold_run(list(recorded[:at_version]))
    problem = _in_flight(state)
    if problem is not None:
        raise ForkError(f"cannot fork run {run_id!r} at version {at_version}: {problem}")
    return state


def _in_flight(state: RunState) -> str | None:
    if state.is_terminal:
        return f"the run has ended there ({state.status}); fork at an earlier version"
    call = state.model_call
    if call is not None and call.open is not None:
        return "a model request is waiting for its answer there; fork before or after it"
    if state.reservations:
        return "a budget reservation is open there; fork before or after its model call"
    busy = [i for i, c in state.calls.items() if c.status in ("intended", "claimed")]
    if busy:
        return f"tool call {busy[0]!r} is running there; fork before it or after its outcome"
    return None


def forked_events(
    recorded: Sequence[RecordedEvent], at_version: int, opening: RunStarted
) -> list[Event]:
    """The fork's events: ``opening`` (its own ``RunStarted``, with the new run id and its
    lineage), then the original's versions 2 to ``at_version`` moved to the new run id."""
    old_id = recorded[0].event.run_id
    new_id = opening.run_id
    events: list[Event] = [opening]
    for item in recorded[1:at_version]:
        event = item.event
        changes: dict[str, object] = {"run_id": new_id}
        # The run's own span is named after the run: the copy's trace hangs under the fork.
        if event.span_id == old_id:
            changes["span_id"] = new_id
        if event.parent_span_id == old_id:
            changes["parent_span_id"] = new_id
        events.append(event.model_copy(update=changes))
    return events


def lineage(started: RunStarted, *, forked_from: str, at_version: int) -> RunStarted:
    """``started`` marked as the start of a fork of ``forked_from`` at ``at_version``."""
    return started.model_copy(update={"forked_from": forked_from, "forked_at_version": at_version})
