"""Projections: pure folds of the event log, and the runner that keeps persistent ones saved.

``fold(projection, events)`` folds a ``Projection`` (or a ``KeyedProjection``, whose state is
``{key: row}``) without I/O. ``ProjectionRunner`` keeps a ``KeyedProjection`` saved in the event
store by global position. ``RunIndex`` is one summary row per run; query its rows with
``get_run`` and ``list_runs``. The conversation messages a model is sent live here too.
"""

from ._critic_stats import (
    CheckPassRate,
    CriticStats,
    CriticStatsRows,
    Tally,
    accept_rate,
    check_pass_rates,
)
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
from ._run_index import RunIndex, RunStatus, RunSummary, get_run, list_runs
from ._run_state import RunState, RunStateProjection, ToolCallState, fold_run
from ._runner import ProjectionRunner
from ._spend import (
    LedgerState,
    SpendIndex,
    SpendRow,
    fold_ledger,
    spend_by_day,
    spend_for_run,
    spend_for_user_day,
)
from ._tool_health import ToolHealth, ToolHealthProjection, ToolHealthRows, circuit_open_until

__all__ = [
    "AccumulatingProjection",
    "AssistantMessage",
    "BatchProjection",
    "CheckPassRate",
    "CompactionPlan",
    "CriticStats",
    "CriticStatsRows",
    "KeyedFold",
    "KeyedProjection",
    "LedgerState",
    "MemoryPolicy",
    "Message",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "RowDecodeError",
    "RunIndex",
    "RunState",
    "RunStateProjection",
    "RunStatus",
    "RunSummary",
    "RunnerClosedError",
    "SpendIndex",
    "SpendRow",
    "SystemMessage",
    "Tally",
    "ToolCallState",
    "ToolHealth",
    "ToolHealthProjection",
    "ToolHealthRows",
    "ToolResultMessage",
    "UserMessage",
    "accept_rate",
    "check_pass_rates",
    "circuit_open_until",
    "fold",
    "fold_ledger",
    "fold_rows",
    "fold_run",
    "get_run",
    "list_runs",
    "memory_view",
    "plan_compaction",
    "spend_by_day",
    "spend_for_run",
    "spend_for_user_day",
]
