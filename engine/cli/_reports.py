"""``spend USER`` (settled spend per day) and ``critic AGENT`` (accept rate per run, per check)."""

from __future__ import annotations

import argparse

from agentledger.projections import (
    CriticRuns,
    ProjectionRunner,
    SpendIndex,
    critic_runs_of,
    spend_rows_by_day,
)

from ._errors import NotFoundError
from ._output import Output
from ._store import open_store


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


async def spend(options: argparse.Namespace, out: Output) -> int:
    """A user's settled spend per day, oldest first, from the spend projection, with the
    overshoots of each day (calls that cost more than reserved: how many, by how much)."""
    async with open_store(options.db) as store, ProjectionRunner(store, SpendIndex()) as runner:
        await runner.catch_up()
        days = spend_rows_by_day(runner.rows, options.user)
    if not days:
        raise NotFoundError(f"no budget ledger for user {options.user!r} in this log")
    if options.json:
        out.json(
            [
                {
                    "day": day.isoformat(),
                    "settled_usd": str(row.settled_usd),
                    "overshoots": row.overshoots,
                    "overshot_usd": str(row.overshot_usd),
                }
                for day, row in days
            ]
        )
        return 0
    out.table(
        ["day", "settled (USD)", "overshoots", "over by (USD)"],
        [
            (day.isoformat(), row.settled_usd, row.overshoots or "", row.overshot_usd or "")
            for day, row in days
        ],
        right=(1, 2, 3),
    )
    if any(row.overshoots for _, row in days):
        out.line()
        out.line(
            "an overshoot is a call that cost more than its reservation (a server ignored the "
            "output limit); it closed that day to capped calls",
            "red",
        )
    return 0


async def critic(options: argparse.Namespace, out: Output) -> int:
    """An agent's critic results counted per run (not per verdict: a run revised twice is one
    run), and each check's pass rate over the runs it ran in, worst first."""
    async with open_store(options.db) as store, ProjectionRunner(store, CriticRuns()) as runner:
        await runner.catch_up()
        record = critic_runs_of(runner.rows, options.agent)
    if not record.runs:
        raise NotFoundError(f"no critic verdicts for agent {options.agent!r} in this log")
    if options.json:
        out.json(
            {
                "agent": record.agent,
                "runs": record.runs,
                "accepted": record.accepted,
                "accepted_first_answer": record.first_accepted,
                "flagged": record.runs - record.accepted,
                "checks": [
                    {"check": name, "runs": ran, "passed": passed}
                    for name, ran, passed in record.checks
                ],
            }
        )
        return 0
    runs = record.runs
    out.line(
        f"accept rate of {record.agent}: {_percent(record.accepted, runs)} "
        f"({record.accepted} of {runs} runs ended accepted; {record.first_accepted} on the first "
        f"answer, {runs - record.accepted} flagged)"
    )
    out.line()
    out.table(
        ["check (worst first)", "runs", "passed", "pass rate"],
        [(name, ran, passed, _percent(passed, ran)) for name, ran, passed in record.checks],
        right=(1, 2, 3),
    )
    out.line()
    out.line("a check passed in a run when it never failed there (revisions included)", "dim")
    return 0
