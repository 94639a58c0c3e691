"""A testing kit for agents built on agentledger: doubles, invariant checkers, injected faults.

- Doubles: ``ScriptedModel`` (a list of replies or a function of the request), ``FakeClock``,
  ``SequentialIds``, and ``call``/``reply`` to write scripts; ``ScriptedRun`` is a whole run's
  script as data.
- Invariants: ``check_invariants(engine, run_id, agent=...)`` checks that a run's result is the
  fold of its log, it ended or paused within its turn limit, versions are gapless, tool calls
  and results pair up, no side effect happened twice, spend kept its caps and a replay
  reproduces it without calling anything; each ``check_*`` is there on its own too.
- Faults: ``FaultyStore(store, fail=Fault("append", at=3))`` wraps any ``EventStore`` and fails
  chosen operations with the store's typed errors or a ``SimulatedCrash``.
- Hypothesis strategies live in ``agentledger.engine.testing.strategies`` (install
  ``agentledger[testing]``); this module does not need Hypothesis.
"""

from ._doubles import FakeClock, Script, ScriptedModel, SequentialIds, call, reply
from ._faults import (
    ErrorSource,
    Fault,
    FaultTarget,
    FaultyStore,
    Injected,
    OperationKind,
    SimulatedCrash,
)
from ._invariants import (
    check_invariants,
    check_replay_reproduces,
    check_run_ended,
    check_side_effects_once,
    check_spend_within_caps,
    check_state_matches_log,
    check_tool_results_paired,
    check_versions_gapless,
    read_everything,
)
from ._scripted import CallOutcome, FailureKind, ModelFailure, ScriptedRun, ScriptedTurn
from ._tripwire import UnexpectedCall, tripwired

__all__ = [
    "CallOutcome",
    "ErrorSource",
    "FailureKind",
    "FakeClock",
    "Fault",
    "FaultTarget",
    "FaultyStore",
    "Injected",
    "ModelFailure",
    "OperationKind",
    "Script",
    "ScriptedModel",
    "ScriptedRun",
    "ScriptedTurn",
    "SequentialIds",
    "SimulatedCrash",
    "UnexpectedCall",
    "call",
    "check_invariants",
    "check_replay_reproduces",
    "check_run_ended",
    "check_side_effects_once",
    "check_spend_within_caps",
    "check_state_matches_log",
    "check_tool_results_paired",
    "check_versions_gapless",
    "read_everything",
    "reply",
    "tripwired",
]
