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

import inspect
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
    Claim,
    Command,
    Compact,
    Complete,
    Degrade,
    Fail,
    FallBack,
    GiveUp,
    Intend,
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
    intend,
    reconcile,
    reject,
    run_tiers,
)
from ._ports import Clock, IdSource, Ports
from ._recorder import Recorder
from ._step import Step

Performer = Callable[[Any, Step, Recorder], Awaitable[None] | None]

_PERFORMERS: dict[type[Command], Performer] = {
    StartTurn: start_turn,
    Compact: compact,
    Complete: complete,
    Fail: fail,
    Pause: pause,
    RequestModel: request_model,
    SendRequest: send_request,
    AbandonRequest: abandon_request,
    Retry: retry,
    FallBack: fall_back,
    CheckAnswer: check_answer,
    Judge: judge,
    Reject: reject,
    AskConfirmation: ask_confirmation,
    Intend: intend,
    CheckKey: check_key,
    RunTiers: run_tiers,
    Degrade: degrade,
    Claim: claim,
    Reconcile: reconcile,
    GiveUp: give_up,
}

_KEY_RACE_ATTEMPTS = 5


async def drive(
    recorder: Recorder, agent: Agent, ports: Ports, budgets: Budgets | None
) -> RunState:
    """Perform steps until ``decide`` says stop; return the final state (all of it written)."""
    races = 0
    while True:
        state = recorder.state
        command = decide(state, agent)
        if isinstance(command, Stop):
            if await _flushed(recorder, ports, races, executes=None):
                return recorder.state
            races += 1
            continue
        if command.io:
            flush = recorder.must_flush(executes=command.executes)
            if flush and not await _flushed(recorder, ports, races, executes=command.executes):
                races += 1
                continue
            reason = await ports.gate.before_io(recorder.committed, state.version)
            if reason is not None:
                await cancel_run(recorder, ports.clock, ports.ids, reason)
                return recorder.state
        performed = _PERFORMERS[type(command)](
            command, Step(state, agent, ports, budgets), recorder
        )
        if inspect.isawaitable(performed):
            await performed


async def _flushed(recorder: Recorder, ports: Ports, races: int, *, executes: bool | None) -> bool:
    """Write what is staged (see ``Recorder.flush``); ``False`` if another run took one of the
    keys it intends meanwhile (nothing was written: the staged steps are dropped, to be decided
    again on fresh ledgers)."""
    try:
        await recorder.flush(executes=executes)
    except ConcurrencyError as exc:
        if not exc.stream_id.startswith(KEY_PREFIX):
            raise
        if races + 1 >= _KEY_RACE_ATTEMPTS:
            raise EngineError(
                f"run {recorder.state.run_id!r} could not intend a side effect: its idempotency "
                "key kept being taken by other runs"
            ) from exc
        ports.keys.forget(exc.stream_id[len(KEY_PREFIX) :])
        recorder.discard()
        return False
    return True


async def cancel_run(recorder: Recorder, clock: Clock, ids: IdSource, reason: str) -> None:
    """Record the run's cancellation (with everything still staged), unless it has ended."""
    state = recorder.state
    if state.is_terminal:
        return
    events, others = cancellation(state, clock, ids, reason)
    await recorder.commit(events, *others)
