"""A recorded run as a tape: the answers its model calls and tool calls got, in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentledger.events import (
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    ToolCallSucceeded,
    ToolTierFailed,
)

from ._divergence import Divergence, NondeterminismError, stable_fields


@dataclass(frozen=True, slots=True)
class ModelAttempt:
    """One recorded attempt at a model call: the request's fingerprint and what came back."""

    request: ModelCallRequested
    outcome: ModelCallResponded | ModelCallFailed
    version: int


@dataclass
class Tape:
    """The answers of a recorded run, handed out in the order the run consumed them.

    Model attempts are played in order; tool tiers are answered by tool call id and tier, in
    order per call. Asking for anything else raises ``NondeterminismError``.
    """

    attempts: deque[ModelAttempt] = field(default_factory=deque)
    tiers: dict[tuple[str, str], deque[ToolCallSucceeded | ToolTierFailed]] = field(
        default_factory=dict
    )

    @classmethod
    def from_events(cls, events: Sequence[RecordedEvent]) -> Tape:
        """The tape of a run's recorded stream."""
        tape = cls()
        requests: dict[str, tuple[ModelCallRequested, int]] = {}
        for recorded in events:
            event = recorded.event
            if isinstance(event, ModelCallRequested):
                requests[event.call_id] = (event, recorded.version)
            elif isinstance(event, ModelCallResponded | ModelCallFailed):
                request, version = requests.pop(event.call_id)
                tape.attempts.append(ModelAttempt(request, event, version))
            elif isinstance(event, ToolCallSucceeded | ToolTierFailed):
                if isinstance(event, ToolCallSucceeded) and event.tier == "reconciled":
                    continue  # settled by a reconcile hook after a crash, not by a tier
                tape.tiers.setdefault((event.call_id, event.tier), deque()).append(event)
        # Requests never answered were cut off by a crash; the resumed run asked again.
        return tape

    def next_attempt(self, model: str, digest: str) -> ModelAttempt:
        """The recorded attempt the run's next model request must match."""
        if not self.attempts:
            raise NondeterminismError(
                Divergence(None, None, {"model": model}, "a model call the recording lacks")
            )
        attempt = self.attempts.popleft()
        if attempt.request.model != model or attempt.request.request_digest != digest:
            raise NondeterminismError(
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
        if not queue:
            raise NondeterminismError(
                Divergence(
                    None,
                    None,
                    {"call_id": call_id, "tier": tier},
                    "a tool call the recording lacks",
                )
            )
        return queue.popleft()
