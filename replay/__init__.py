"""Replay of recorded runs: tapes of what a run was answered, the replayer, divergence reports.

``Replayer`` drives a recorded run again with every port (models, tools, breakers, ledgers, the
clock) answered from the run's own log, stopping and resuming it where the recorded run was
interrupted; the engine hands in how a run is driven (``RunDriver``), so this package never
imports the engine. When the replayed run asks for something the recording does not hold next,
the ``ReplayReport`` says where (recorded version, expected, actual); ``check()`` raises
``NondeterminismError`` for it.

``export_history`` writes runs as a JSON-lines history file and ``import_history`` appends one
to any store, idempotent by event id (the file format is described in ``_history``).
"""

from ._answers import ReplayIds, ScratchStore, TapeAnswers
from ._divergence import (
    Divergence,
    NondeterminismError,
    ReplayError,
    first_divergence,
    stable_fields,
)
from ._history import (
    ExportReport,
    HistoryConflictError,
    HistoryError,
    HistoryFormatError,
    HistoryRunNotFoundError,
    ImportReport,
    export_history,
    find_runs,
    history_line,
    import_history,
)
from ._replayer import Replayer, ReplayReport, RunDriver
from ._tape import Interruption, ModelAttempt, Tape

__all__ = [
    "Divergence",
    "ExportReport",
    "HistoryConflictError",
    "HistoryError",
    "HistoryFormatError",
    "HistoryRunNotFoundError",
    "ImportReport",
    "Interruption",
    "ModelAttempt",
    "NondeterminismError",
    "ReplayError",
    "ReplayIds",
    "ReplayReport",
    "Replayer",
    "RunDriver",
    "ScratchStore",
    "Tape",
    "TapeAnswers",
    "export_history",
    "find_runs",
    "first_divergence",
    "history_line",
    "import_history",
    "stable_fields",
]
