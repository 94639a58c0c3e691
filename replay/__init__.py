"""Replay of recorded runs: tapes of what a run was answered, and divergence reports.

The engine's ``Engine.replay`` drives the normal loop with a model and tools that answer from a
``Tape``; when the engine asks for something the recording does not hold next, that is a
``NondeterminismError`` carrying a ``Divergence`` (recorded version, expected, actual).
"""

from ._divergence import (
    Divergence,
    NondeterminismError,
    ReplayError,
    decisions,
    first_divergence,
    stable_fields,
)
from ._tape import ModelAttempt, Tape

__all__ = [
    "Divergence",
    "ModelAttempt",
    "NondeterminismError",
    "ReplayError",
    "Tape",
    "decisions",
    "first_divergence",
    "stable_fields",
]
