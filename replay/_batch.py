"""Replay of many runs: each run replayed on its own, the outcomes gathered in one report.

One run's trouble (a damaged event, an agent nobody knows, a run id with no run) is that run's
entry in the report, never the end of the batch; a divergence is reported with the run, the
recorded version, what the log holds next and what the code asked for instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import anyio
from pydantic import BaseModel

from agentledger.events import CorruptEventError, RecordedEvent, RunStarted

from ._divergence import Divergence, ReplayError

Outcome = Literal["identical", "divergent", "error"]


class Replayed(Protocol):
    """What a batch needs of one run's replay (a ``ReplayReport``)."""

    @property
    def recorded(self) -> Sequence[RecordedEvent]: ...

    @property
    def divergence(self) -> Divergence | None: ...


ReplayOne = Callable[[str], Awaitable[Replayed]]
ErrorKind = Literal["not_found", "parked", "unknown_agent", "error"]


class UnknownAgentError(ReplayError):
    """Raised (by a ``driver_for``) when no agent is known by the name a recorded run names."""


class UnknownRunError(ReplayError):
    """Raised when a run id names no run in the store."""


@dataclass(frozen=True, slots=True)
class RunDivergence:
    """Where one run of a batch parted from its recording.

    ``version`` is the recorded stream version (``None``: the replay went on past the end);
    ``recorded`` is what the log holds there (stable fields), ``replayed`` what the replayed
    code asked for or wrote instead (``None`` when one side has nothing there).
    """

    run_id: str
    agent: str
    version: int | None
    reason: str
    recorded: Mapping[str, Any] | None
    replayed: Mapping[str, Any] | None

    @classmethod
    def of(cls, run_id: str, agent: str, divergence: Divergence) -> RunDivergence:
        """The batch entry for ``divergence`` of run ``run_id``."""
        return cls(
            run_id=run_id,
            agent=agent,
            version=divergence.version,
            reason=divergence.reason,
            recorded=divergence.expected,
            replayed=divergence.actual,
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-able values."""
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "version": self.version,
            "reason": self.reason,
            "recorded": jsonable(self.recorded),
            "replayed": jsonable(self.replayed),
        }


@dataclass(frozen=True, slots=True)
class RunReplayError:
    """A run of a batch that could not be replayed: ``kind`` says why, ``message`` in one line."""

    run_id: str
    kind: ErrorKind
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-able values."""
        return {"run_id": self.run_id, "kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Handed to a progress callback after each run of a batch: ``done`` of ``total`` so far."""

    done: int
    total: int
    run_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    """The outcome of replaying many runs, in the order the runs were given."""

    total: int
    identical: tuple[str, ...]
    divergent: tuple[RunDivergence, ...]
    errors: tuple[RunReplayError, ...]

    @property
    def ok(self) -> bool:
        """Whether every run replayed exactly as recorded."""
        return not self.divergent and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able values (``json.dumps`` takes it as it is)."""
        return {
            "ok": self.ok,
            "total": self.total,
            "identical": len(self.identical),
            "identical_runs": list(self.identical),
            "divergent": [d.to_dict() for d in self.divergent],
            "errors": [e.to_dict() for e in self.errors],
        }


async def replay_batch(
    run_ids: Iterable[str],
    replay_one: ReplayOne,
    *,
    concurrency: int = 4,
    progress: Callable[[ReplayProgress], None] | None = None,
) -> ReplayBatch:
    """Replay every run of ``run_ids`` with ``replay_one`` (``run_id -> Awaitable[ReplayReport]``),
    at most ``concurrency`` at once, and gather the outcomes."""
    if concurrency < 1:
        raise ReplayError(f"concurrency must be at least 1, not {concurrency}")
    ids = list(dict.fromkeys(run_ids))  # a run named twice is replayed once
    outcomes: dict[str, RunDivergence | RunReplayError | None] = {}

    async def one(run_id: str) -> None:
        outcome = await _replay_one(run_id, replay_one)
        outcomes[run_id] = outcome
        if progress is not None:
            kind: Outcome = (
                "identical"
                if outcome is None
                else "divergent"
                if isinstance(outcome, RunDivergence)
                else "error"
            )
            progress(ReplayProgress(len(outcomes), len(ids), run_id, kind))

    await in_order(ids, one, concurrency)
    return ReplayBatch(
        total=len(ids),
        identical=tuple(i for i in ids if outcomes[i] is None),
        divergent=tuple(o for i in ids if isinstance(o := outcomes[i], RunDivergence)),
        errors=tuple(o for i in ids if isinstance(o := outcomes[i], RunReplayError)),
    )


async def in_order(
    items: Sequence[str], work: Callable[[str], Awaitable[None]], concurrency: int
) -> None:
    """``work(item)`` for each item, started in order, at most ``concurrency`` at once.

    A few workers take the items in turn: a batch holds one task per worker, not per item (and
    nothing of an item once its work is done).
    """
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, len(items))):
            tg.start_soon(worker)


async def _replay_one(run_id: str, replay_one: ReplayOne) -> RunDivergence | RunReplayError | None:
    try:
        report = await replay_one(run_id)
    except CorruptEventError as exc:
        return RunReplayError(run_id, "parked", _line(exc))
    except UnknownAgentError as exc:
        return RunReplayError(run_id, "unknown_agent", _line(exc))
    except UnknownRunError as exc:
        return RunReplayError(run_id, "not_found", _line(exc))
    except Exception as exc:
        # Anything else one run raises is that run's entry: the batch goes on (cancellation
        # and the replay's own signals are BaseExceptions and are not caught here).
        return RunReplayError(run_id, "error", f"{type(exc).__name__}: {_line(exc)}")
    if report.divergence is None:
        return None
    started = report.recorded[0].event
    agent = started.agent if isinstance(started, RunStarted) else ""
    return RunDivergence.of(run_id, agent, report.divergence)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def jsonable(value: Any) -> Any:
    """``value`` with every event field made JSON-able: models as their JSON dump, money and
    times as strings, tuples as lists."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)
