"""Deltas: the pieces of a streamed model reply, as a run's listeners receive them.

A delta is not an event: it is never recorded. The log records the whole reply once it is
complete (``ModelCallResponded``), so replay and resume never see deltas; a delta names the call
(``call_id``, as in ``ModelCallRequested``) so a listener can match it to the event that ends
the call, and throw away what a failed attempt had streamed (``ModelCallFailed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentledger.engine.models._model import DeltaSink, ModelDelta
from agentledger.events import ModelCallRequested, ModelPurpose


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of a model's reply while it streams: of run ``run_id``, of model call
    ``call_id`` (attempt ``attempt`` of its request), the piece itself in ``delta``.

    Every attempt has its own ``call_id``: the deltas of a call that ends in ``ModelCallFailed``
    belong to a failed attempt, and the retry streams again under a new id. ``purpose`` says
    whose words they are: the agent's (``"agent"``), a memory summary's or the critic's judge's
    (a chat service shows only the agent's).
    """

    run_id: str
    call_id: str
    attempt: int
    delta: ModelDelta
    purpose: ModelPurpose = "agent"


DeltaRoute = Callable[[ModelCallRequested], DeltaSink | None]
"""Where the deltas of a requested call go: a sink to stream to, or ``None`` not to stream."""
