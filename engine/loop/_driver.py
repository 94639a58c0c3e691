"""The loop: ``decide`` on the folded state, perform the step, stage what it yields, again.

    state   = fold(evolve, initial, events)     # the recorder keeps it, staged events included
    command = decide(state)                     # pure
    events  = await perform(command, ports)     # at most one I/O
    stage(events); state = fold(state, events)

Before any I/O the recorder makes durable what must be (see ``_recorder``), then the gate is
consulted (replay stops or cancels a run there, where the recorded run was interrupted). The
loop ends when ``decide`` says stop: the run has ended or waits for a person; what is still
staged is written then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agentledger.engine._agent import Agent
from agentledger.engine._errors import EngineError
from agentledger.engine.policies._budget import Budgets
from agentledger.events import ConcurrencyError
from agentledger.projections._run_state import RunState
from agentledger.projections._streams import KEY_PREFIX

from ._commands import (
    AbandonRequest,
    AskConfirmation,
    CheckAnswer,
    CheckKey,
    CheckOutput,
    Claim,
    Command,
    Compact,
    Complete,
    Degrade,
    Fail,
    FallBack,
    GiveUp,
    Judge,
    Pause,
    Reconcile,
    Reject,
    RequestModel,
    Retry,
    RunTiers,
    SendRequest,
    StartTurn,
    Stop,
)
from ._decide import decide
from ._perform_model import abandon_request, fall_back, request_model, retry, send_request
from ._perform_run import (
    cancellation,
    check_answer,
    check_output,
    compact,
    complete,
    fail,
    judge,
    pause,
    start_turn,
)
from ._perform_tools import (
    ask_confirmation,
    check_key,
    claim,
    degrade,
    give_up,
    reconcile,
    reject,
    run_tiers,
)
from ._ports import Clock, IdSource, Ports
from ._recorder import Recorder
from ._step import Step

_PURE: dict[type[Command], Callable[[Any, Step, Recorder], None]] = {
    StartTurn: start_turn,
    Compact: compact,
    Complete: complete,
    Fail: fail,
    Pause: pause,
    AbandonRequest: abandon_request,
    Retry: retry,
    FallBack: fall_back,
    CheckOutput: check_output,
    CheckAnswer: check_answer,
    Judge: judge,
    Reject: reject,
    AskConfirmation: ask_confirmation,
    Degrade: degrade,
    Claim: claim,
    GiveUp: give_up,
}
"""Performers of the steps that only turn state into events."""

_IO: dict[type[Command], Callable[[Any, Step, Recorder], Awaitable[None]]] = {
    RequestModel: request_model,
    SendRequest: send_request,
    CheckKey: check_key,
    RunTiers: run_tiers,
    Reconcile: reconcile,
}
"""Performers of the steps that meet the world (each with at most one I/O)."""

_KEY_RACE_ATTEMPTS = 5


async def drive(
    recorder: Recorder, agent: Agent, ports: Ports, budgets: Budgets | None
) -> RunState:
    """Perform steps until ``decide`` says stop; return the final state (all of it written)."""
    races = 0
    while True:
        state = recorder.state
        command = decide(state, agent)
        stop = isinstance(command, Stop)
        if stop or command.io:
            executes = None if stop else command.executes
            if recorder.must_flush(executes=executes):
                try:
                    await recorder.flush(executes=executes)
                except ConcurrencyError as exc:
                    races += 1
                    _lost_key_race(exc, recorder, ports, races)
                    continue  # nothing was written: decide again on fresh ledgers
            if stop:
                return recorder.state
            reason = ports.gate.before_io(recorder.committed, state.version)
            if reason is not None:
                await cancel_run(recorder, ports.clock, ports.ids, reason)
                return recorder.state
            await _IO[type(command)](command, Step(state, agent, ports, budgets), recorder)
        else:
            _PURE[type(command)](command, Step(state, agent, ports, budgets), recorder)


def _lost_key_race(exc: ConcurrencyError, recorder: Recorder, ports: Ports, races: int) -> None:
    """Another run took one of the keys the staged steps intend, so nothing was written: drop
    them (raise ``exc`` again if it is about another stream, or if this keeps happening)."""
    if not exc.stream_id.startswith(KEY_PREFIX):
        raise exc
    if races >= _KEY_RACE_ATTEMPTS:
        raise EngineError(
            f"run {recorder.state.run_id!r} could not intend a side effect: its idempotency key "
            "kept being taken by other runs"
        ) from exc
    ports.keys.forget(exc.stream_id[len(KEY_PREFIX) :])
    recorder.discard()


async def cancel_run(recorder: Recorder, clock: Clock, ids: IdSource, reason: str) -> None:
    """Record the run's cancellation (with everything still staged), unless it has ended."""
    state = recorder.state
    if state.is_terminal:
        return
    events, others = cancellation(state, clock, ids, reason)
    await recorder.commit(events, *others)
