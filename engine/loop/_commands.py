"""The commands ``decide`` names: one step of a run each, performed with at most one I/O.

``io`` says whether performing the command meets the world (a model, a tool, a ledger read, a
wait); a pure command only turns state into events. The recorder makes earlier answers durable
before any I/O, and a side effect's intent durable before the tool runs (``executes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from agentledger.engine.models._model import Model
from agentledger.engine.tools._tool_validation import RejectedCall, ValidCall
from agentledger.engine.tools._tools import Tool
from agentledger.events import ModelCallFailed, ModelCallRequested, ModelCallResponded, ModelPurpose
from agentledger.projections._memory_view import CompactionFields
from agentledger.projections._run_state import ToolCallState


@dataclass(frozen=True, slots=True)
class Command:
    """A step of a run."""

    io: ClassVar[bool] = False
    executes: ClassVar[bool] = False
    """Whether a tool or a reconcile hook runs (intents and claims must be durable first)."""


# -- the run and its turns ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTurn(Command):
    """Begin turn ``turn``."""

    turn: int


@dataclass(frozen=True, slots=True)
class Compact(Command):
    """Record the turn's memory compaction (a summary, or the marked truncation fallback)."""

    fields: CompactionFields


@dataclass(frozen=True, slots=True)
class Complete(Command):
    """The answer stands: end the run with it (``flagged`` if the critic never accepted it)."""

    output: str
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class Fail(Command):
    """The run cannot go on."""

    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Pause(Command):
    """Wait for a person to approve or deny these calls."""

    call_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stop(Command):
    """Nothing to do: the run has ended or waits for something outside it."""


# -- model calls ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestModel(Command):
    """Record attempt ``attempt`` of a ``purpose`` call to ``model``, not before ``not_before``
    (a back-off), reserving its worst-case cost first when a budget applies."""

    io: ClassVar[bool] = True
    purpose: ModelPurpose
    model: Model
    attempt: int
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class SendRequest(Command):
    """Send the recorded request ``requested`` to ``model`` and record its answer."""

    io: ClassVar[bool] = True
    requested: ModelCallRequested
    model: Model


@dataclass(frozen=True, slots=True)
class AbandonRequest(Command):
    """A recorded request whose session stopped before the answer: close it (it is made again)."""

    requested: ModelCallRequested


@dataclass(frozen=True, slots=True)
class Retry(Command):
    """Try the same model again after ``delay`` seconds."""

    failure: ModelCallFailed
    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class FallBack(Command):
    """Give up on the failing model for this call and move to ``to``."""

    failure: ModelCallFailed
    to: Model


# -- the critic ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckAnswer(Command):
    """Run the critic's code checks on the turn's answer."""

    answer: str


@dataclass(frozen=True, slots=True)
class Judge(Command):
    """Record the judge's verdict from its reply (``None``: the judge could not be reached)."""

    reply: ModelCallResponded | None


# -- tool calls ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reject(Command):
    """Refuse a call before anything runs; the errors go back to the model."""

    call: ToolCallState
    rejection: RejectedCall


@dataclass(frozen=True, slots=True)
class AskConfirmation(Command):
    """A ``confirm=True`` call waits for a person's yes or no."""

    call: ToolCallState
    valid: ValidCall[Any]


@dataclass(frozen=True, slots=True)
class Intend(Command):
    """Clear a call without side effects to run."""

    call: ToolCallState
    valid: ValidCall[Any]


@dataclass(frozen=True, slots=True)
class CheckKey(Command):
    """Read a side effect's key ledger: reuse, refuse, report in doubt, or intend it."""

    io: ClassVar[bool] = True
    call: ToolCallState
    valid: ValidCall[Any]
    key: str


@dataclass(frozen=True, slots=True)
class TierJob:
    """The next tier of one intended call."""

    call: ToolCallState
    tool: Tool[Any]
    tier: str
    args: Any


@dataclass(frozen=True, slots=True)
class RunTiers(Command):
    """Run the next tier of each of these calls, at once (each may be skipped by its breaker)."""

    io: ClassVar[bool] = True
    executes: ClassVar[bool] = True
    jobs: tuple[TierJob, ...]


@dataclass(frozen=True, slots=True)
class Degrade(Command):
    """Every tier of a call failed or was skipped: tell the model the tool is unavailable."""

    call: ToolCallState
    tool: Tool[Any]


@dataclass(frozen=True, slots=True)
class Claim(Command):
    """Take over a side effect in doubt, to reconcile it or (``retry_safe``) run it again."""

    call: ToolCallState
    tool: Tool[Any]
    method: Literal["reconcile", "rerun"]


@dataclass(frozen=True, slots=True)
class Reconcile(Command):
    """Ask a claimed call's reconcile hook whether the side effect happened."""

    io: ClassVar[bool] = True
    executes: ClassVar[bool] = True
    call: ToolCallState
    args: Any


@dataclass(frozen=True, slots=True)
class GiveUp(Command):
    """A side effect in doubt that nothing can settle: the model is told its outcome is unknown."""

    call: ToolCallState
    reason: str
