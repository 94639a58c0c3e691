"""Replay of recorded runs: tapes of what a run was answered, the replayer, divergence reports.

``Replayer`` drives a recorded run again with every port (models, tools, breakers, ledgers, the
clock) answered from the run's own log, stopping and resuming it where the recorded run was
interrupted; the engine hands in how a run is driven (``RunDriver``), so this package never
imports the engine. When the replayed run asks for something the recording does not hold next,
the ``ReplayReport`` says where (recorded version, expected, actual); ``check()`` raises
``NondeterminismError`` for it.

``export_history`` writes runs as a JSON-lines history file and ``import_history`` appends one
to any store, idempotent by event id (the file format is described in ``_history``).

Over many runs: ``Replayer.replay_all`` replays a batch into one ``ReplayBatch`` (identical,
divergent, errors). Forks: ``fork_state`` checks a fork point and ``forked_events`` makes the
copy (see ``_fork`` for what a copy means for budgets, side effects and confirmations); a
what-if (``run_whatif``) forks many runs with a changed agent and compares old and new
(``WhatIfReport``). The engine's ``replay_all``, ``fork`` and ``whatif`` are the usual way in.
"""

from ._answers import ReplayIds, ScratchStore, TapeAnswers
from ._batch import (
    ReplayBatch,
    ReplayProgress,
    RunDivergence,
    RunReplayError,
    UnknownAgentError,
    UnknownRunError,
    jsonable,
)
from ._divergence import (
    Divergence,
    NondeterminismError,
    ReplayError,
    first_divergence,
    stable_fields,
)
from ._fork import ForkError, fork_state, forked_events, lineage
from ._history import (
    ExportReport,
    HistoryConflictError,
    HistoryError,
    HistoryFormatError,
    HistoryRunNotFoundError,
    ImportReport,
    export_history,
    import_history,
)
from ._replayer import Replayer, ReplayReport, RunDriver
from ._tape import Interruption, ModelAttempt, Tape
from ._whatif import (
    RunOutcome,
    WhatIfError,
    WhatIfProgress,
    WhatIfReport,
    WhatIfRun,
    WhatIfSkip,
    compare,
    run_whatif,
)

__all__ = [
    "Divergence",
    "ExportReport",
    "ForkError",
    "HistoryConflictError",
    "HistoryError",
    "HistoryFormatError",
    "HistoryRunNotFoundError",
    "ImportReport",
    "Interruption",
    "ModelAttempt",
    "NondeterminismError",
    "ReplayBatch",
    "ReplayError",
    "ReplayIds",
    "ReplayProgress",
    "ReplayReport",
    "Replayer",
    "RunDivergence",
    "RunDriver",
    "RunOutcome",
    "RunReplayError",
    "ScratchStore",
    "Tape",
    "TapeAnswers",
    "UnknownAgentError",
    "UnknownRunError",
    "WhatIfError",
    "WhatIfProgress",
    "WhatIfReport",
    "WhatIfRun",
    "WhatIfSkip",
    "compare",
    "export_history",
    "first_divergence",
    "fork_state",
    "forked_events",
    "import_history",
    "jsonable",
    "lineage",
    "run_whatif",
    "stable_fields",
]
