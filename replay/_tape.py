"""A recorded run as a tape: every answer its ports gave, in the order the run consumed them.

Model attempts are played in order (each must match the recorded request's model and
fingerprint); tool tiers, breaker skips and reconcile findings are answered by tool call id and
tier, in order per call; reads of other streams (a user's day ledger before a reservation, a
key's ledger before a side effect) are answered by folding that stream as it stood, in the
store, when the recorded decision was made. Asking for anything the tape does not hold next is
a divergence. The tape also knows where the recorded run was interrupted (a crash, a
cancellation), so a replay can stop at the same points.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentledger.events import (
    BudgetExceeded,
    BudgetReserved,
    ModelCallFailed,
    ModelCallInterrupted,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunCancelled,
    RunPaused,
    RunResumed,
    SubAgentEnded,
    SubAgentStarted,
    ToolArgumentsRejected,
    ToolCallIntended,
    ToolCallReconciled,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
    ToolTierFailed,
    ToolTierSkipped,
    TurnStarted,
)

from ._divergence import Divergence, stable_fields


@dataclass(frozen=True, slots=True)
class ModelAttempt:
    """One recorded attempt at a model call: the request and what came back."""

    request: ModelCallRequested
    outcome: ModelCallResponded | ModelCallFailed
    version: int


@dataclass(frozen=True, slots=True)
class Interruption:
    """Where the recorded run was interrupted: a crash (the log stood at ``version`` when the
    next session began) or a cancellation (the run had reached ``version``)."""

    kind: str
    version: int
    reason: str = ""


class Diverged(BaseException):
    """Raised by the tape when the replayed run asks for what the recording does not hold.

    A ``BaseException``, so no ``except Exception`` in the engine (or anywhere between the port
    and the replayer) can take it for a failure of a model or a tool and record it.
    """

    def __init__(self, divergence: Divergence) -> None:
        self.divergence = divergence
        super().__init__(str(divergence))


class Interrupted(BaseException):
    """Raised to stop a replayed session where the recorded one crashed."""


@dataclass
class Tape:
    """The answers of a recorded run, handed out in the order the run consumed them."""

    events: list[RecordedEvent] = field(default_factory=list)
    attempts: deque[ModelAttempt] = field(default_factory=deque)
    tiers: dict[tuple[str, str], deque[ToolCallSucceeded | ToolTierFailed]] = field(
        default_factory=dict
    )
    tier_versions: dict[str, deque[int]] = field(default_factory=dict)
    """Per tool call id: the versions of its recorded tier outcomes not played yet."""
    skips: dict[tuple[str, str], deque[ToolTierSkipped]] = field(default_factory=dict)
    reconciles: dict[str, deque[ToolCallReconciled]] = field(default_factory=dict)
    key_reads: dict[str, deque[int]] = field(default_factory=dict)
    """Per tool call id: positions of the decisions that read its key's ledger."""
    ledger_reads: deque[int] = field(default_factory=deque)
    """Positions of the decisions that read a day ledger (reservations and refusals)."""
    interruptions: deque[Interruption] = field(default_factory=deque)
    children: dict[str, deque[SubAgentEnded | None]] = field(default_factory=dict)
    """Per sub-agent call id: how its child run ended, or ``None`` where it paused."""

    @classmethod
    def from_events(cls, events: Sequence[RecordedEvent], *, copied: int = 0) -> Tape:
        """The tape of a run's recorded stream.

        The first ``copied`` versions were copied from another run (a fork's prefix): the
        replay copies them too, so they hold no answers to play, only the state they leave.
        """
        tape = cls(events=list(events))
        requests: dict[str, tuple[ModelCallRequested, int]] = {}
        intended: set[str] = set()  # calls of the current turn with an intent
        delegated: set[str] = set()  # sub-agent calls whose child has not ended
        for recorded in events:
            event = recorded.event
            if recorded.version <= copied:
                # Only what a later answer needs to be matched: the turn's intents.
                if isinstance(event, TurnStarted):
                    intended.clear()
                elif isinstance(event, ToolCallIntended):
                    intended.add(event.call_id)
                continue
            if _reads_key(event, intended):
                call_id = getattr(event, "call_id", "")
                tape.key_reads.setdefault(call_id, deque()).append(recorded.position)
            if isinstance(event, TurnStarted):
                intended.clear()
            elif isinstance(event, ToolCallIntended):
                intended.add(event.call_id)
            if isinstance(event, ModelCallRequested):
                requests[event.call_id] = (event, recorded.version)
            elif isinstance(event, ModelCallResponded | ModelCallFailed):
                request, version = requests.pop(event.call_id)
                tape.attempts.append(ModelAttempt(request, event, version))
            elif isinstance(event, ModelCallInterrupted):
                requests.pop(event.call_id, None)  # asked again in the next session
            elif isinstance(event, ToolCallSucceeded | ToolTierFailed):
                if not (isinstance(event, ToolCallSucceeded) and event.tier == "reconciled"):
                    tape.tiers.setdefault((event.call_id, event.tier), deque()).append(event)
                    tape.tier_versions.setdefault(event.call_id, deque()).append(recorded.version)
            elif isinstance(event, ToolTierSkipped):
                tape.skips.setdefault((event.call_id, event.tier), deque()).append(event)
            elif isinstance(event, ToolCallReconciled):
                tape.reconciles.setdefault(event.call_id, deque()).append(event)
            elif isinstance(event, BudgetReserved | BudgetExceeded):
                tape.ledger_reads.append(recorded.position)
            elif isinstance(event, SubAgentStarted):
                delegated.add(event.call_id)
            elif isinstance(event, SubAgentEnded):
                delegated.discard(event.call_id)
                tape.children.setdefault(event.call_id, deque()).append(event)
            elif isinstance(event, RunPaused):
                for call_id in delegated.intersection(event.call_ids):
                    tape.children.setdefault(call_id, deque()).append(None)
            elif isinstance(event, RunResumed) and event.reason == "interrupted":
                tape.interruptions.append(Interruption("crash", recorded.version - 1))
            elif isinstance(event, RunCancelled) and event.after_version is not None:
                tape.interruptions.append(Interruption("cancel", event.after_version, event.reason))
        # Requests never answered were cut off by a crash or a cancellation: nothing to play.
        return tape

    def next_attempt(self, model: str, digest: str) -> ModelAttempt:
        """The recorded attempt the run's next model request must match."""
        if not self.attempts:
            raise Diverged(
                Divergence(None, None, {"model": model}, "a model call the recording lacks")
            )
        attempt = self.attempts.popleft()
        if attempt.request.model != model or attempt.request.request_digest != digest:
            raise Diverged(
                Divergence(
                    attempt.version,
                    stable_fields(attempt.request),
                    {"model": model, "request_digest": digest},
                    "the model was sent another request than recorded",
                )
            )
        return attempt

    def tier_outcome(self, call_id: str, tier: str) -> ToolCallSucceeded | ToolTierFailed:
        """What tier ``tier`` did for tool call ``call_id`` when it was recorded."""
        queue = self.tiers.get((call_id, tier))
        versions = self.tier_versions.get(call_id)
        if not queue:
            # Report the outcome the recording holds next for this call, if any.
            version = versions[0] if versions else None
            expected = stable_fields(self.events[version - 1].event) if version else None
            raise Diverged(
                Divergence(
                    version,
                    expected,
                    {"call_id": call_id, "tier": tier},
                    f"tier {tier!r} of tool call {call_id!r} was run, which the recording lacks",
                )
            )
        outcome = queue.popleft()
        if versions:
            versions.popleft()
        return outcome

    def skip(self, call_id: str, tier: str) -> ToolTierSkipped | None:
        """The recorded breaker skip of this tier of this call, if it was skipped."""
        queue = self.skips.get((call_id, tier))
        return queue.popleft() if queue else None

    def reconciled(self, call_id: str) -> ToolCallReconciled:
        """What the reconcile hook found for ``call_id`` when it was recorded."""
        queue = self.reconciles.get(call_id)
        if not queue:
            raise Diverged(
                Divergence(None, None, {"call_id": call_id}, "a reconcile the recording lacks")
            )
        return queue.popleft()

    def child_outcome(self, call_id: str) -> SubAgentEnded | None:
        """How the child run of sub-agent call ``call_id`` ended when recorded (``None``: it
        waited for a person there)."""
        queue = self.children.get(call_id)
        if not queue:
            raise Diverged(
                Divergence(None, None, {"call_id": call_id}, "a sub-agent run the recording lacks")
            )
        return queue.popleft()

    def key_read(self, call_id: str) -> int:
        """The position before which ``call_id``'s key ledger is read as it stood."""
        queue = self.key_reads.get(call_id)
        if not queue:
            raise Diverged(
                Divergence(None, None, {"call_id": call_id}, "a side effect the recording lacks")
            )
        return queue.popleft()

    def ledger_read(self) -> int:
        """The position before which the next day-ledger read is read as it stood."""
        if not self.ledger_reads:
            raise Diverged(Divergence(None, None, None, "a budget reservation the recording lacks"))
        return self.ledger_reads.popleft()


def _reads_key(event: object, intended: set[str]) -> bool:
    """Whether ``event`` records a decision made on what a key's ledger held: an intent, a
    reuse, a conflict, or "another call holds this key" (an outcome-unknown for a call not
    intended yet; one written for an intended call settles a call in doubt instead)."""
    if isinstance(event, ToolCallIntended | ToolResultReused):
        return event.idempotency_key is not None
    if isinstance(event, ToolOutcomeUnknown):
        return event.idempotency_key is not None and event.call_id not in intended
    return isinstance(event, ToolArgumentsRejected) and event.error_type == "idempotency_conflict"
