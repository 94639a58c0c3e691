"""The commands ``decide`` names: one step of a run each, performed with at most one I/O.

Commands are made for one step and read once, so they are plain (not frozen) dataclasses: a
frozen one costs a checked attribute write per field, on every step of every run.

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


@dataclass(slots=True)
class Command:
    """A step of a run."""

    io: ClassVar[bool] = False
    executes: ClassVar[bool] = False
    """Whether a tool or a reconcile hook runs (intents and claims must be durable first)."""


# -- the run and its turns ---------------------------------------------------------------------


@dataclass(slots=True)
class StartTurn(Command):
    """Begin turn ``turn``."""

    turn: int


@dataclass(slots=True)
class Compact(Command):
    """Record the turn's memory compaction (a summary, or the marked truncation fallback)."""

    fields: CompactionFields


@dataclass(slots=True)
class Complete(Command):
    """The answer stands: end the run with it (``flagged`` if the critic never accepted it)."""

    output: str
    flagged: bool = False


@dataclass(slots=True)
class Fail(Command):
    """The run cannot go on."""

    error_type: str
    message: str


@dataclass(slots=True)
class Pause(Command):
    """Wait for a person to approve or deny these calls."""

    call_ids: tuple[str, ...]


@dataclass(slots=True)
class Stop(Command):
    """Nothing to do: the run has ended or waits for something outside it."""


# -- model calls ---------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestModel(Command):
    """Attempt ``attempt`` of a ``purpose`` call to ``model``, not before ``not_before`` (a
    back-off): record the request and send it, or, when a budget applies, record it with the
    reservation of its worst-case cost (its one I/O), to be sent by ``SendRequest``."""

    io: ClassVar[bool] = True
    purpose: ModelPurpose
    model: Model
    attempt: int
    not_before: datetime | None = None


@dataclass(slots=True)
class SendRequest(Command):
    """Send ``requested``, recorded with its reservation, to ``model`` and record the answer."""

    io: ClassVar[bool] = True
    requested: ModelCallRequested
    model: Model


@dataclass(slots=True)
class AbandonRequest(Command):
    """A recorded request whose session stopped before the answer: close it (it is made again)."""

    requested: ModelCallRequested


@dataclass(slots=True)
class Retry(Command):
    """Try the same model again after ``delay`` seconds."""

    failure: ModelCallFailed
    attempt: int
    delay: float


@dataclass(slots=True)
class FallBack(Command):
    """Give up on the failing model for this call and move to ``to``."""

    failure: ModelCallFailed
    to: Model


# -- the critic ----------------------------------------------------------------------------------


@dataclass(slots=True)
class CheckOutput(Command):
    """Validate the turn's answer against the agent's output type (before the critic)."""

    answer: str


@dataclass(slots=True)
class CheckAnswer(Command):
    """Run the critic's code checks on the turn's answer."""

    answer: str


@dataclass(slots=True)
class Judge(Command):
    """Record the judge's verdict from its reply (``None``: the judge could not be reached)."""

    reply: ModelCallResponded | None


# -- tool calls ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Reject(Command):
    """Refuse a call before anything runs; the errors go back to the model."""

    call: ToolCallState
    rejection: RejectedCall


@dataclass(slots=True)
class AskConfirmation(Command):
    """A ``confirm=True`` call waits for a person's yes or no."""

    call: ToolCallState
    valid: ValidCall[Any]


@dataclass(slots=True)
class CheckKey(Command):
    """Read a side effect's key ledger: reuse, refuse, report in doubt, or intend it."""

    io: ClassVar[bool] = True
    call: ToolCallState
    valid: ValidCall[Any]
    key: str


@dataclass(slots=True)
class TierJob:
    """The next tier of one call: an intended one, or one without side effects that this step
    clears (``cleared``: its validated arguments, recorded as its intent first)."""

    call: ToolCallState
    tool: Tool[Any]
    tier: str
    args: Any
    cleared: ValidCall[Any] | None = None


@dataclass(slots=True)
class RunTiers(Command):
    """Run the next tier of each of these calls, at once (each may be skipped by its breaker),
    recording first the intents of the calls it clears."""

    io: ClassVar[bool] = True
    executes: ClassVar[bool] = True
    jobs: tuple[TierJob, ...]


@dataclass(slots=True)
class Degrade(Command):
    """Every tier of a call failed or was skipped: tell the model the tool is unavailable."""

    call: ToolCallState
    tool: Tool[Any]


@dataclass(slots=True)
class Claim(Command):
    """Take over a side effect in doubt, to reconcile it or (``retry_safe``) run it again."""

    call: ToolCallState
    tool: Tool[Any]
    method: Literal["reconcile", "rerun"]


@dataclass(slots=True)
class Reconcile(Command):
    """Ask a claimed call's reconcile hook whether the side effect happened."""

    io: ClassVar[bool] = True
    executes: ClassVar[bool] = True
    call: ToolCallState
    args: Any


@dataclass(slots=True)
class GiveUp(Command):
    """A side effect in doubt that nothing can settle: the model is told its outcome is unknown."""

    call: ToolCallState
    reason: str
