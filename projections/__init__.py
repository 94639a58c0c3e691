"""Projections: pure folds of the event log, and the runner that keeps persistent ones saved.

``fold(projection, events)`` folds a ``Projection`` (or a ``KeyedProjection``, whose state is
``{key: row}``) without I/O. ``ProjectionRunner`` keeps a ``KeyedProjection`` saved in the event
store by global position. ``RunIndex`` is one summary row per run; query its rows with
``get_run`` and ``list_runs``, or select runs with a ``RunFilter`` (``find_runs`` reads a
store's). The conversation messages a model is sent live here too, and
the folds the engine decides from: a run's state, a key's ledger, the tools' health.
"""

from ._critic_runs import AgentCriticRuns, CriticRun, CriticRuns, critic_runs_of
from ._critic_stats import (
    CheckPassRate,
    CriticStats,
    CriticStatsRows,
    Tally,
    accept_rate,
    check_pass_rates,
)
from ._damage import ParkedStream, fold_around_damage, parked_runs
from ._keys import KeyRecord, fold_key
from ._memory_view import CompactionPlan, MemoryPolicy, memory_view, plan_compaction
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
from ._run_filter import RunFilter, RunFilterError, find_runs
from ._run_index import RunIndex, RunStatus, RunSummary, get_run, list_runs
from ._run_state import (
    CriticProgress,
    ModelCallState,
    RunState,
    RunStateProjection,
    ToolCallState,
    evolve_run,
    fold_run,
)
from ._runner import ProjectionRunner
from ._spend import (
    LedgerState,
    SpendIndex,
    SpendRow,
    fold_ledger,
    spend_by_day,
    spend_for_run,
    spend_for_user_day,
    spend_rows_by_day,
)
from ._stream_folds import StreamFolds
from ._streams import day_stream, key_stream, run_stream
from ._tool_health import (
    ToolHealth,
    ToolHealthProjection,
    ToolHealthRows,
    ToolHealthView,
    circuit_open_until,
)

__all__ = [
    "AccumulatingProjection",
    "AgentCriticRuns",
    "AssistantMessage",
    "BatchProjection",
    "CheckPassRate",
    "CompactionPlan",
    "CriticProgress",
    "CriticRun",
    "CriticRuns",
    "CriticStats",
    "CriticStatsRows",
    "KeyRecord",
    "KeyedFold",
    "KeyedProjection",
    "LedgerState",
    "MemoryPolicy",
    "Message",
    "ModelCallState",
    "ParkedStream",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "RowDecodeError",
    "RunFilter",
    "RunFilterError",
    "RunIndex",
    "RunState",
    "RunStateProjection",
    "RunStatus",
    "RunSummary",
    "RunnerClosedError",
    "SpendIndex",
    "SpendRow",
    "StreamFolds",
    "SystemMessage",
    "Tally",
    "ToolCallState",
    "ToolHealth",
    "ToolHealthProjection",
    "ToolHealthRows",
    "ToolHealthView",
    "ToolResultMessage",
    "UserMessage",
    "accept_rate",
    "check_pass_rates",
    "circuit_open_until",
    "critic_runs_of",
    "day_stream",
    "evolve_run",
    "find_runs",
    "fold",
    "fold_around_damage",
    "fold_key",
    "fold_ledger",
    "fold_rows",
    "fold_run",
    "get_run",
    "key_stream",
    "list_runs",
    "memory_view",
    "parked_runs",
    "plan_compaction",
    "run_stream",
    "spend_by_day",
    "spend_for_run",
    "spend_for_user_day",
    "spend_rows_by_day",
]
