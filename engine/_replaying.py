"""The engine's side of replay: how ``agentledger.replay`` drives a run with its own ports.

The replayer owns replay (the tape, the tape-answered ports, the divergence report); it is
handed this driver, which runs the engine's loop, the very loop of live runs, with the tape's
ports in place of the live ones. The agent is used as it is: its models and tools are never
called, because every port answers from the tape.
"""

from __future__ import annotations

from agentledger.events import ConversationContinued, EventStore, RunStarted
from agentledger.projections._run_state import RunState, fold_run
from agentledger.projections._streams import run_stream
from agentledger.replay import TapeAnswers

from ._agent import Agent
from .loop._driver import cancel_run, drive
from .loop._perform_run import run_resumed, run_started
from .loop._ports import Ports
from .loop._recorder import EventFilter, Recorder
from .policies._budget import Budgets


class ReplayDriver:
    """Drives a replayed run of ``agent`` (with the engine's ``budgets``) for the replayer."""

    def __init__(self, agent: Agent, budgets: Budgets | None, admit: EventFilter | None) -> None:
        self._agent = agent
        self._budgets = budgets
        self._admit = admit

    async def start(self, store: EventStore, answers: TapeAnswers, started: RunStarted) -> None:
        """Start the run as recorded (same id, task, user and surface) and drive it."""
        recorder = self._recorder(store, answers, RunState(run_id=started.run_id))
        opening = run_started(
            self._agent,
            started.run_id,
            started.task,
            user_id=started.user_id,
            surface=started.surface,
            at=answers.clock.now(),
            conversation_id=started.conversation_id,
            follows=started.follows,
        )
        answers.check_start(opening)
        # A conversation's history is what the recording read from the run it follows: it
        # is taken as recorded (like a port's answer), so the replay needs no other run, and
        # the conversation's stream is not the replay's to join.
        recorded = answers.tape.events
        history = recorded[1].event if len(recorded) > 1 else None
        if isinstance(history, ConversationContinued):
            recorder.stage([opening, history])
        else:
            recorder.stage([opening])
        await drive(recorder, self._agent, _ports(answers), self._budgets)

    async def resume(self, store: EventStore, answers: TapeAnswers) -> None:
        """Begin a new session where the replayed run stands, and drive it on."""
        recorder = self._recorder(store, answers, await _load(store, answers))
        await recorder.commit([run_resumed(recorder.state, answers.clock)])
        await drive(recorder, self._agent, _ports(answers), self._budgets)

    async def cancel(self, store: EventStore, answers: TapeAnswers, reason: str) -> None:
        """Record the cancellation of the replayed run as it stands."""
        recorder = self._recorder(store, answers, await _load(store, answers))
        await cancel_run(recorder, answers.clock, answers.ids, reason)

    def _recorder(self, store: EventStore, answers: TapeAnswers, state: RunState) -> Recorder:
        # The events pass the engine's filter as they did when recorded, so they compare.
        return Recorder(store, answers.ids, state, lambda recorded: None, self._admit)


def _ports(answers: TapeAnswers) -> Ports:
    return Ports(
        clock=answers.clock,
        ids=answers.ids,
        models=answers.models,
        tools=answers.tools,
        health=answers.health,
        ledgers=answers.ledgers,
        keys=answers.keys,
        gate=answers.gate,
    )


async def _load(store: EventStore, answers: TapeAnswers) -> RunState:
    return fold_run(await store.read_stream(run_stream(answers.run_id)))
