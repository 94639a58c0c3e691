"""Critic results per run: did the run's answer pass, at once or after revisions, and which
checks failed along the way.

``CriticStatsRows`` counts verdicts: a run whose first answer is rejected and whose revision is
accepted counts as one rejection and one acceptance, so "accept rate" there is per answer. What a
person asks about an agent is per run (how many runs ended accepted, how many needed a
revision), which this projection answers: one row per run with a verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction

import orjson

from agentledger.events import CriticVerdict, RecordedEvent

from ._streams import is_run_stream


@dataclass(frozen=True, slots=True)
class CriticRun:
    """One run's critic record.

    ``accepted`` is the latest verdict's (a run that ends flagged was never accepted);
    ``first_accepted`` is whether every verdict on the first answer (revision 0) accepted it.
    ``checks`` are the checks that ran in the run, ``failed`` those that failed at least once.
    """

    agent: str
    verdicts: int
    accepted: bool
    first_accepted: bool
    checks: frozenset[str]
    failed: frozenset[str]


def _after(row: CriticRun | None, verdict: CriticVerdict) -> CriticRun:
    ran = frozenset(c.name for c in verdict.checks)
    failed = frozenset(c.name for c in verdict.checks if not c.passed)
    first = verdict.accepted if verdict.revision == 0 else True
    if row is None:
        return CriticRun(verdict.agent, 1, verdict.accepted, first, ran, failed)
    return replace(
        row,
        verdicts=row.verdicts + 1,
        accepted=verdict.accepted,
        first_accepted=row.first_accepted and first,
        checks=row.checks | ran,
        failed=row.failed | failed,
    )


class CriticRuns:
    """A ``KeyedProjection``: one ``CriticRun`` per run with a verdict, key its run id."""

    def __init__(self, *, name: str = "critic_runs") -> None:
        self.name = name

    def key(self, recorded: RecordedEvent) -> str | None:
        """The run id of a verdict in a run stream, else ``None``."""
        if recorded.type != "critic_verdict" or not is_run_stream(recorded.stream_id):
            return None
        return recorded.event.run_id

    def evolve_row(self, row: CriticRun | None, recorded: RecordedEvent) -> CriticRun | None:
        """The run's record after ``recorded``."""
        event = recorded.event
        return _after(row, event) if isinstance(event, CriticVerdict) else row

    def encode_row(self, row: CriticRun) -> bytes:
        """The row as JSON (check names sorted, so equal rows encode equally)."""
        return orjson.dumps(
            {
                "agent": row.agent,
                "verdicts": row.verdicts,
                "accepted": row.accepted,
                "first_accepted": row.first_accepted,
                "checks": sorted(row.checks),
                "failed": sorted(row.failed),
            }
        )

    def decode_row(self, data: bytes) -> CriticRun:
        """A row back from ``encode_row`` bytes."""
        raw = orjson.loads(data)
        return CriticRun(
            agent=str(raw["agent"]),
            verdicts=int(raw["verdicts"]),
            accepted=bool(raw["accepted"]),
            first_accepted=bool(raw["first_accepted"]),
            checks=frozenset(str(c) for c in raw["checks"]),
            failed=frozenset(str(c) for c in raw["failed"]),
        )


@dataclass(frozen=True, slots=True)
class AgentCriticRuns:
    """An agent's runs as the critic saw them; ``checks`` maps each check to
    ``(runs it ran in, runs where it never failed)``, worst pass rate first."""

    agent: str
    runs: int
    accepted: int
    first_accepted: int
    checks: tuple[tuple[str, int, int], ...]

    @property
    def accept_rate(self) -> Fraction | None:
        """Runs whose answer ended accepted, of all runs judged."""
        return Fraction(self.accepted, self.runs) if self.runs else None


def critic_runs_of(rows: Mapping[str, CriticRun], agent: str) -> AgentCriticRuns:
    """``agent``'s runs in ``rows`` (a ``CriticRuns`` state), counted per run."""
    mine = [row for row in rows.values() if row.agent == agent]
    tallies: dict[str, list[int]] = {}
    for row in mine:
        for check in row.checks:
            tally = tallies.setdefault(check, [0, 0])
            tally[0] += 1
            tally[1] += check not in row.failed
    checks = sorted(
        ((name, ran, passed) for name, (ran, passed) in tallies.items()),
        key=lambda c: (Fraction(c[2], c[1]), -c[1], c[0]),
    )
    return AgentCriticRuns(
        agent=agent,
        runs=len(mine),
        accepted=sum(row.accepted for row in mine),
        first_accepted=sum(row.first_accepted for row in mine),
        checks=tuple(checks),
    )
