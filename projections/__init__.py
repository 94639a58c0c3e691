"""Projections: pure folds of the event log, and the runner that keeps persistent ones saved.

``fold(projection, events)`` folds a ``Projection`` (or a ``KeyedProjection``, whose state is
``{key: row}``) without I/O. ``ProjectionRunner`` keeps a ``KeyedProjection`` saved in the event
store by global position. ``RunIndex`` is one summary row per run; query its rows with
``get_run`` and ``list_runs``. The conversation messages a model is sent live here too.
"""

from ._messages import AssistantMessage, Message, SystemMessage, ToolResultMessage, UserMessage
from ._projection import (
    AccumulatingProjection,
    BatchProjection,
    KeyedFold,
    KeyedProjection,
    Projection,
    ProjectionError,
    RowDecodeError,
    RunnerClosedError,
    fold,
    fold_rows,
)
from ._run_index import RunIndex, RunStatus, RunSummary, get_run, list_runs
from ._runner import ProjectionRunner

__all__ = [
    "AccumulatingProjection",
    "AssistantMessage",
    "BatchProjection",
    "KeyedFold",
    "KeyedProjection",
    "Message",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "RowDecodeError",
    "RunIndex",
    "RunStatus",
    "RunSummary",
    "RunnerClosedError",
    "SystemMessage",
    "ToolResultMessage",
    "UserMessage",
    "fold",
    "fold_rows",
    "get_run",
    "list_runs",
]
