"""Events, their envelope and codec, the ``EventStore`` protocol and its backends.

The catalog (``Event`` and its classes) is the wire contract of the whole engine. Stores:
``MemoryEventStore`` (tests), ``SqliteEventStore`` (the embedded default) and
``PostgresEventStore`` (many processes and hosts; needs the ``postgres`` extra).
"""

from typing import TYPE_CHECKING

from ._catalog import (
    EVENT_TYPES,
    TERMINAL_EVENT_TYPES,
    BudgetExceeded,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    CheckResult,
    ConfirmationApproved,
    ConfirmationDenied,
    ConfirmationRequested,
    ConversationContinued,
    ConversationJoined,
    CriticVerdict,
    Event,
    EventBase,
    Exchange,
    FieldIssue,
    MemoryCompacted,
    ModelCallFailed,
    ModelCallInterrupted,
    ModelCallRequested,
    ModelCallResponded,
    ModelCallRetried,
    ModelFellBack,
    ModelPurpose,
    RevisionRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunResumed,
    RunStarted,
    ToolArgumentsRejected,
    ToolCall,
    ToolCallClaimed,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallReconciled,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolRejection,
    ToolResultReused,
    ToolTierFailed,
    ToolTierSkipped,
    TurnStarted,
    Usage,
)
from ._checksum import event_checksum
from ._codec import EventCodec, Upcaster, default_codec
from ._envelope import NewEvent, RecordedEvent, StreamAppend
from ._errors import (
    ConcurrencyError,
    CorruptEventError,
    DecodeError,
    DuplicateEventError,
    EncodeError,
    EventStoreError,
    SchemaVersionError,
    StorageFullError,
    StoreClosedError,
    StoreUnavailableError,
    UnknownEventTypeError,
)
from ._lines import event_line
from ._memory import MemoryEventStore
from ._sqlite import SqliteEventStore
from ._store import Checkpoint, EventStore
from ._time import Clock, utc_now

if TYPE_CHECKING:
    from ._postgres import PostgresEventStore


def __getattr__(name: str) -> object:
    # asyncpg is the optional ``postgres`` extra: it is imported only when this store is asked for.
    if name == "PostgresEventStore":
        from ._postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVENT_TYPES",
    "TERMINAL_EVENT_TYPES",
    "BudgetExceeded",
    "BudgetReleased",
    "BudgetReserved",
    "BudgetSettled",
    "CheckResult",
    "Checkpoint",
    "Clock",
    "ConcurrencyError",
    "ConfirmationApproved",
    "ConfirmationDenied",
    "ConfirmationRequested",
    "ConversationContinued",
    "ConversationJoined",
    "CorruptEventError",
    "CriticVerdict",
    "DecodeError",
    "DuplicateEventError",
    "EncodeError",
    "Event",
    "EventBase",
    "EventCodec",
    "EventStore",
    "EventStoreError",
    "Exchange",
    "FieldIssue",
    "MemoryCompacted",
    "MemoryEventStore",
    "ModelCallFailed",
    "ModelCallInterrupted",
    "ModelCallRequested",
    "ModelCallResponded",
    "ModelCallRetried",
    "ModelFellBack",
    "ModelPurpose",
    "NewEvent",
    "PostgresEventStore",
    "RecordedEvent",
    "RevisionRequested",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunPaused",
    "RunResumed",
    "RunStarted",
    "SchemaVersionError",
    "SqliteEventStore",
    "StorageFullError",
    "StoreClosedError",
    "StoreUnavailableError",
    "StreamAppend",
    "ToolArgumentsRejected",
    "ToolCall",
    "ToolCallClaimed",
    "ToolCallDegraded",
    "ToolCallIntended",
    "ToolCallReconciled",
    "ToolCallSucceeded",
    "ToolOutcomeUnknown",
    "ToolRejection",
    "ToolResultReused",
    "ToolTierFailed",
    "ToolTierSkipped",
    "TurnStarted",
    "UnknownEventTypeError",
    "Upcaster",
    "Usage",
    "default_codec",
    "event_checksum",
    "event_line",
    "utc_now",
]
