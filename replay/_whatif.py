"""What-if over many runs: each recorded run forked with a changed agent, run live, compared.

The orchestration is here (which runs start, how many at once, when the money runs out); how a
run is forked and driven is handed in by the engine, so this package never imports it. Old and
new are read from the log alone: ``RunOutcome.of`` folds a run's events.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from agentledger.events import CriticVerdict, ModelCallResponded, RecordedEvent, RunStarted
from agentledger.projections._run_state import fold_run

from ._batch import in_order
from ._divergence import ReplayError

_DIFF_LINES = 40
"""At most this many lines of an output's diff go in the report."""


class WhatIfError(ReplayError):
    """Raised when a what-if cannot start: bad arguments, or an agent with side-effecting tools
    without ``allow_side_effects=True``."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a run did, folded from its events: its status and answer, what its model calls cost,
    its turns, the tool calls its model asked for, and the critic's verdicts."""

    status: str
    output: str | None
    cost_usd: Decimal
    turns: int
    tool_calls: int
    critic_accepted: int
    critic_rejected: int
    flagged: bool
    error: str | None = None

    @classmethod
    def of(cls, events: Sequence[RecordedEvent]) -> RunOutcome:
        """The outcome of a run's recorded stream (or a prefix of it)."""
        state = fold_run(list(events))
        tool_calls = accepted = rejected = 0
        for recorded in events:
            event = recorded.event
            if isinstance(event, ModelCallResponded) and event.purpose == "agent":
                tool_calls += len(event.tool_calls)
            elif isinstance(event, CriticVerdict):
                if event.accepted:
                    accepted += 1
                else:
                    rejected += 1
        return cls(
            status=state.status,
            output=state.output,
            cost_usd=state.cost_usd,
            turns=state.turn,
            tool_calls=tool_calls,
            critic_accepted=accepted,
            critic_rejected=rejected,
            flagged=state.flagged,
            error=state.error,
        )

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-able values (money as a decimal string)."""
        return {
            "status": self.status,
            "output": self.output,
            "cost_usd": str(self.cost_usd),
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "critic_accepted": self.critic_accepted,
            "critic_rejected": self.critic_rejected,
            "flagged": self.flagged,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class WhatIfRun:
    """One recorded run and its fork, side by side.

    ``new`` describes the whole fork (the copied prefix included, so both sides are whole
    conversations); ``new_spend_usd`` is what the fork's own model calls cost, the money the
    what-if spent on it. ``similarity`` is difflib's ratio of the two outputs (1.0: the same),
    ``diff`` a short unified diff of them (empty when they are the same).
    """

    run_id: str
    fork_id: str
    old: RunOutcome
    new: RunOutcome
    new_spend_usd: Decimal
    similarity: float
    diff: str

    @property
    def output_changed(self) -> bool:
        """Whether the fork answered differently."""
        return self.old.output != self.new.output

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-able values."""
        return {
            "run_id": self.run_id,
            "fork_id": self.fork_id,
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "new_spend_usd": str(self.new_spend_usd),
            "output_changed": self.output_changed,
            "similarity": self.similarity,
            "diff": self.diff,
        }


@dataclass(frozen=True, slots=True)
class WhatIfSkip:
    """A run the what-if did not compare: ``reason`` is ``budget`` (the money ran out before it
    started) or ``error`` (``message`` says what; ``fork_id`` is set if the fork was made)."""

    run_id: str
    reason: Literal["budget", "error"]
    message: str = ""
    fork_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-able values."""
        return {
            "run_id": self.run_id,
            "reason": self.reason,
            "message": self.message,
            "fork_id": self.fork_id,
        }


@dataclass(frozen=True, slots=True)
class WhatIfProgress:
    """Handed to a progress callback after each run: ``done`` of ``total`` so far."""

    done: int
    total: int
    run_id: str
    outcome: Literal["compared", "budget", "error"]


@dataclass(frozen=True, slots=True)
class WhatIfReport:
    """Every compared run (in the order given), the runs skipped, and the totals."""

    runs: tuple[WhatIfRun, ...]
    skipped: tuple[WhatIfSkip, ...]
    budget_usd: Decimal | None

    @property
    def spent_usd(self) -> Decimal:
        """What the forks' own model calls cost in all."""
        return sum((r.new_spend_usd for r in self.runs), Decimal(0))

    @property
    def totals(self) -> dict[str, Any]:
        """Old and new summed over the compared runs (money as decimal strings)."""
        old = [r.old for r in self.runs]
        new = [r.new for r in self.runs]
        return {
            "runs": len(self.runs),
            "skipped": len(self.skipped),
            "skipped_for_budget": sum(1 for s in self.skipped if s.reason == "budget"),
            "outputs_changed": sum(1 for r in self.runs if r.output_changed),
            "spent_usd": str(self.spent_usd),
            "old": _sum(old),
            "new": _sum(new),
        }

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able values."""
        return {
            "budget_usd": None if self.budget_usd is None else str(self.budget_usd),
            "totals": self.totals,
            "runs": [r.to_dict() for r in self.runs],
            "skipped": [s.to_dict() for s in self.skipped],
        }


def _sum(outcomes: Sequence[RunOutcome]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    return {
        "statuses": statuses,
        "cost_usd": str(sum((o.cost_usd for o in outcomes), Decimal(0))),
        "turns": sum(o.turns for o in outcomes),
        "tool_calls": sum(o.tool_calls for o in outcomes),
        "critic_accepted": sum(o.critic_accepted for o in outcomes),
        "critic_rejected": sum(o.critic_rejected for o in outcomes),
        "flagged": sum(1 for o in outcomes if o.flagged),
    }


def compare(
    run_id: str, original: Sequence[RecordedEvent], fork_id: str, fork: Sequence[RecordedEvent]
) -> WhatIfRun:
    """The side-by-side of a recorded run and its fork, from their events."""
    started = fork[0].event if fork else None
    copied = (
        started.forked_at_version or 0
        if isinstance(started, RunStarted) and started.forked_from is not None
        else 0
    )
    own = [r for r in fork if r.version > copied]
    spend = sum(
        (r.event.cost_usd for r in own if isinstance(r.event, ModelCallResponded)), Decimal(0)
    )
    old, new = RunOutcome.of(original), RunOutcome.of(fork)
    before, after = old.output or "", new.output or ""
    return WhatIfRun(
        run_id=run_id,
        fork_id=fork_id,
        old=old,
        new=new,
        new_spend_usd=spend,
        similarity=round(difflib.SequenceMatcher(None, before, after).ratio(), 4),
        diff=_diff(before, after),
    )


def _diff(before: str, after: str) -> str:
    if before == after:
        return ""
    lines = list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "recorded", "what-if", lineterm="", n=1
        )
    )
    if len(lines) > _DIFF_LINES:
        lines = [*lines[:_DIFF_LINES], f"... {len(lines) - _DIFF_LINES} more lines"]
    return "\n".join(lines)


Read = Callable[[str], Awaitable[list[RecordedEvent]]]


async def run_whatif(
    run_ids: Iterable[str],
    *,
    read: Read,
    fork: Callable[[str], Awaitable[str]],
    go_on: Callable[[str], Awaitable[object]],
    at_version: int | None,
    concurrency: int = 4,
    budget_usd: Decimal | None = None,
    progress: Callable[[WhatIfProgress], None] | None = None,
) -> WhatIfReport:
    """Fork each run (``fork(run_id) -> fork_id``), drive the fork on (``go_on(fork_id)``), and
    compare; at most ``concurrency`` at once, in the order given.

    The budget: a run starts only if the money the forks spent so far, plus what the runs in
    flight and this one are expected to spend (what their recordings spent after the fork
    point), stays within ``budget_usd``; else it is skipped (``reason="budget"``). A fork that
    spends more than its recording did can still take the total past the budget; the report
    says what was spent.
    """
    if concurrency < 1:
        raise WhatIfError(f"concurrency must be at least 1, not {concurrency}")
    if budget_usd is not None and budget_usd < 0:
        raise WhatIfError(f"budget_usd must be 0 or more, not {budget_usd}")
    ids = list(dict.fromkeys(run_ids))
    compared: dict[str, WhatIfRun] = {}
    skipped: dict[str, WhatIfSkip] = {}
    spent = Decimal(0)
    expected_in_flight: dict[str, Decimal] = {}

    def report(run_id: str, outcome: Literal["compared", "budget", "error"]) -> None:
        if progress is not None:
            done = len(compared) + len(skipped)
            progress(WhatIfProgress(done, len(ids), run_id, outcome))

    class _OverBudget(Exception):
        pass

    async def attempt(run_id: str, forked: list[str]) -> WhatIfRun:
        nonlocal spent
        original = await read(run_id)
        expected = _expected_spend(original, at_version)
        if budget_usd is not None:
            committed = spent + sum(expected_in_flight.values(), Decimal(0))
            if committed + expected > budget_usd:
                raise _OverBudget(
                    f"expected {expected} more with {committed} committed of {budget_usd}"
                )
        expected_in_flight[run_id] = expected
        try:
            fork_id = await fork(run_id)
            forked.append(fork_id)
            failure: Exception | None = None
            try:
                await go_on(fork_id)
            except Exception as exc:
                failure = exc  # what the fork spent before it failed still counts
            result = compare(run_id, original, fork_id, await read(fork_id))
            spent += result.new_spend_usd
            if failure is not None:
                raise failure
            return result
        finally:
            del expected_in_flight[run_id]

    async def one(run_id: str) -> None:
        forked: list[str] = []
        try:
            compared[run_id] = await attempt(run_id, forked)
        except _OverBudget as exc:
            skipped[run_id] = WhatIfSkip(run_id, "budget", str(exc))
            report(run_id, "budget")
        except Exception as exc:
            # One run's trouble is its entry in the report; the others go on.
            message = f"{type(exc).__name__}: {_line(exc)}"
            skipped[run_id] = WhatIfSkip(run_id, "error", message, forked[0] if forked else None)
            report(run_id, "error")
        else:
            report(run_id, "compared")

    # Runs start in the order given (the budget favours the first), ``concurrency`` at once.
    await in_order(ids, one, concurrency)
    return WhatIfReport(
        runs=tuple(compared[i] for i in ids if i in compared),
        skipped=tuple(skipped[i] for i in ids if i in skipped),
        budget_usd=budget_usd,
    )


def _expected_spend(original: Sequence[RecordedEvent], at_version: int | None) -> Decimal:
    """What the recording spent after the fork point: the guess for what its fork will spend."""
    after = 1 if at_version is None else at_version
    return sum(
        (
            r.event.cost_usd
            for r in original
            if r.version > after and isinstance(r.event, ModelCallResponded)
        ),
        Decimal(0),
    )


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
