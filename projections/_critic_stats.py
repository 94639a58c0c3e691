"""Critic stats (pattern 6): how often each agent's answers, and each of its checks, pass.

A low accept rate points at the prompt, not at the output, so users need to see it per agent and
per check. Fed by ``CriticVerdict`` events in run streams (ids starting with ``run-``): a copy of
a verdict elsewhere (an export, a scratch stream) is not a second verdict.

With an LLM judge an answer can get two verdicts: the code checks' (``deterministic``) and, if
they pass, the judge's (``llm``). Rates are therefore kept per method as well: the
``deterministic`` rate is the share of answers passing the code checks, the ``llm`` rate the
judge's share among those. Every rate is an exact ``Fraction``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Literal, NamedTuple

import orjson

from agentledger.events import CriticVerdict, RecordedEvent

from ._streams import is_run_stream

CriticMethod = Literal["deterministic", "llm"]
"""How a verdict was reached: by code checks or by an LLM judge."""


@dataclass(frozen=True, slots=True)
class Tally:
    """How many times something was judged (``runs``) and how many of those passed."""

    runs: int = 0
    passed: int = 0

    @property
    def rate(self) -> Fraction | None:
        """``passed / runs`` exactly, or ``None`` before the first run."""
        return Fraction(self.passed, self.runs) if self.runs else None

    def add(self, passed: bool) -> Tally:
        """The tally after one more run."""
        return Tally(self.runs + 1, self.passed + passed)


_NONE = Tally()


def _no_checks() -> Mapping[str, Tally]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CriticStats:
    """One agent's critic record: verdicts per method and results per check name."""

    agent: str
    deterministic: Tally = _NONE
    llm: Tally = _NONE
    checks: Mapping[str, Tally] = field(default_factory=_no_checks)

    @property
    def verdicts(self) -> Tally:
        """Every verdict of either method (``passed``: accepted)."""
        return Tally(
            self.deterministic.runs + self.llm.runs, self.deterministic.passed + self.llm.passed
        )

    def method(self, method: CriticMethod) -> Tally:
        """The verdicts reached by ``method``."""
        return self.deterministic if method == "deterministic" else self.llm


def _after(row: CriticStats | None, verdict: CriticVerdict) -> CriticStats:
    current = CriticStats(agent=verdict.agent) if row is None else row
    checks = dict(current.checks)
    for result in verdict.checks:
        checks[result.name] = checks.get(result.name, _NONE).add(result.passed)
    if verdict.method == "output":  # the output type's validation: a check, not a verdict
        return replace(current, checks=MappingProxyType(checks))
    if verdict.method == "llm":
        return replace(
            current, llm=current.llm.add(verdict.accepted), checks=MappingProxyType(checks)
        )
    return replace(
        current,
        deterministic=current.deterministic.add(verdict.accepted),
        checks=MappingProxyType(checks),
    )


class CriticStatsRows:
    """Critic stats as a ``KeyedProjection``: one row per agent, key ``agent:<agent>``, as JSON.

    One row holds the agent's verdicts and its per-check tallies together, because a keyed
    projection gives each event a single row and one verdict updates both. Query the rows with
    ``accept_rate`` and ``check_pass_rates``.
    """

    def __init__(self, *, name: str = "critic_stats") -> None:
        self.name = name

    def key(self, recorded: RecordedEvent) -> str | None:
        """``"agent:<agent>"`` for a verdict in a run stream, else ``None``."""
        # The tag is compared first: it is the cheap test and almost every event fails it.
        if recorded.type != "critic_verdict" or not is_run_stream(recorded.stream_id):
            return None
        event = recorded.event
        assert isinstance(event, CriticVerdict)
        return agent_key(event.agent)

    def evolve_row(self, row: CriticStats | None, recorded: RecordedEvent) -> CriticStats | None:
        """The agent's stats after ``recorded``."""
        event = recorded.event
        if not isinstance(event, CriticVerdict):
            return row
        return _after(row, event)

    def encode_row(self, row: CriticStats) -> bytes:
        """The row as JSON, checks sorted by name so equal rows encode equally."""
        return orjson.dumps(
            {
                "agent": row.agent,
                "deterministic": [row.deterministic.runs, row.deterministic.passed],
                "llm": [row.llm.runs, row.llm.passed],
                "checks": {name: [t.runs, t.passed] for name, t in sorted(row.checks.items())},
            }
        )

    def decode_row(self, data: bytes) -> CriticStats:
        """A row back from ``encode_row`` bytes (the runner reports a bad one with its key)."""
        raw = orjson.loads(data)
        return CriticStats(
            agent=str(raw["agent"]),
            deterministic=_tally(raw["deterministic"]),
            llm=_tally(raw["llm"]),
            checks=MappingProxyType({str(k): _tally(v) for k, v in raw["checks"].items()}),
        )


def _tally(raw: object) -> Tally:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError(f"a tally is [runs, passed], not {raw!r}")
    runs, passed = (int(n) for n in raw)
    if not 0 <= passed <= runs:
        raise ValueError(f"a tally cannot pass {passed} of {runs} runs")
    return Tally(runs, passed)


def agent_key(agent: str) -> str:
    """The key of an agent's row in ``CriticStatsRows``."""
    return f"agent:{agent}"


class CheckPassRate(NamedTuple):
    """One check of one agent: how often it ran and passed, and the exact rate."""

    check: str
    runs: int
    passed: int
    rate: Fraction


def accept_rate(
    rows: Mapping[str, CriticStats], agent: str, *, method: CriticMethod | None = None
) -> Fraction | None:
    """The share of ``agent``'s verdicts that accepted (of one ``method``, or of both).

    ``None`` when the agent has no such verdict yet.
    """
    row = rows.get(agent_key(agent))
    if row is None:
        return None
    return (row.verdicts if method is None else row.method(method)).rate


def check_pass_rates(rows: Mapping[str, CriticStats], agent: str) -> list[CheckPassRate]:
    """Every check of ``agent`` with its pass rate, worst first.

    Ties go to the check with more runs (the better evidence), then by name.
    """
    row = rows.get(agent_key(agent))
    if row is None:
        return []
    rates = [
        CheckPassRate(name, t.runs, t.passed, Fraction(t.passed, t.runs))
        for name, t in row.checks.items()
        if t.runs
    ]
    return sorted(rates, key=lambda r: (r.rate, -r.runs, r.check))
