"""``agentledger runs``: the run index, filtered, newest first; and finding a run by id prefix.

A damaged event (``CorruptEventError``) does not stop the listing: its run shows as ``parked``
with the reason. The run index names the runs whose damage it met while folding; a row damaged
after it was folded is found by reading the stream of each run considered for the listing, so
what is shown is checked against the log as it is now.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text

from agentledger.engine._conversations import conversation_view
from agentledger.events import CorruptEventError, EventStore
from agentledger.projections import (
    ParkedStream,
    ProjectionRunner,
    RunFilter,
    RunIndex,
    RunSummary,
    parked_runs,
    run_stream,
)

from ._errors import NotFoundError, UsageError
from ._output import Output, text
from ._store import open_store

STATUSES = ("running", "paused", "completed", "failed", "cancelled", "budget_exceeded", "parked")
"""What ``--status`` accepts: the run index's statuses, and ``parked`` (a damaged run)."""

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "budget_exceeded": "red",
    "cancelled": "yellow",
    "paused": "yellow",
    "running": "cyan",
    "parked": "bold red",
}


@dataclass(frozen=True)
class RunRow:
    """One run as listed: its index row (``None`` when even its start is damaged) and, for a
    parked run, where and why."""

    run_id: str
    summary: RunSummary | None
    parked: ParkedStream | None

    @property
    def status(self) -> str:
        """The index's status, or ``parked``."""
        if self.parked is not None or self.summary is None:
            return "parked"
        return self.summary.status


async def run_index(store: EventStore) -> tuple[Mapping[str, RunSummary], dict[str, ParkedStream]]:
    """The run index caught up to the log's head, and its parked runs ``{run_id: where}``."""
    async with ProjectionRunner(store, RunIndex()) as runner:
        await runner.catch_up()
        return dict(runner.rows), parked_runs(runner.parked)


async def damage_in(store: EventStore, run_id: str) -> ParkedStream | None:
    """The first damaged event of a run's stream, if any (reads and decodes the whole run)."""
    for recorded in await store.read_stream(run_stream(run_id)):
        try:
            recorded.event  # noqa: B018 - decoding is the check
        except CorruptEventError as exc:
            return ParkedStream.of(exc)
    return None


async def resolve_run(store: EventStore, run_id: str) -> str:
    """The run ``run_id`` names: itself if its stream exists, else the one run whose id starts
    with it, else the one whose id ends with it (the engine's ids share a long prefix per
    process and differ at the end). ``NotFoundError`` when none does, ``UsageError`` when
    several do."""
    if await store.stream_version(run_stream(run_id)) > 0:
        return run_id
    rows, parked = await run_index(store)
    known = sorted(rows.keys() | parked.keys())
    matches = [r for r in known if r.startswith(run_id)] or [r for r in known if r.endswith(run_id)]
    if not matches or not run_id:
        raise NotFoundError(f"no run {run_id!r} in this log (`agentledger runs` lists them)")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UsageError(f"{run_id!r} matches {len(matches)} run ids: {shown}")
    return matches[0]


async def select_runs(
    store: EventStore,
    wanted: RunFilter,
    *,
    status: str | None = None,
    prefix: str = "",
    limit: int = 20,
    only: Collection[str] | None = None,
) -> list[RunRow]:
    """The runs ``wanted`` keeps (agent, user, start window), newest first, at most ``limit``,
    with ``status`` (``parked`` included: a damaged run, whatever the index says), an id
    starting with ``prefix`` and, given ``only``, in it."""
    rows, parked = await run_index(store)
    candidates = replace(wanted, newest_first=True, limit=None).select(rows)
    selected: list[RunRow] = []
    for summary in candidates:
        if len(selected) >= limit:
            break
        if not summary.run_id.startswith(prefix) or (
            only is not None and summary.run_id not in only
        ):
            continue
        damage = parked.get(summary.run_id) or await damage_in(store, summary.run_id)
        row = RunRow(summary.run_id, summary, damage)
        if status is None or row.status == status:
            selected.append(row)
    if wanted == RunFilter() and status in (None, "parked"):
        # A run whose very first event is damaged is not in the index at all.
        for run_id in sorted(parked.keys() - rows.keys()):
            if run_id.startswith(prefix) and (only is None or run_id in only):
                selected.append(RunRow(run_id, None, parked[run_id]))
    return selected[:limit]


def run_json(row: RunRow) -> dict[str, Any]:
    """One listed run for ``--json``: the index row's fields, money as a decimal string."""
    summary = row.summary
    fields: dict[str, Any] = {"run_id": row.run_id, "status": row.status}
    if summary is not None:
        fields |= {
            "agent": summary.agent,
            "user_id": summary.user_id,
            "surface": summary.surface,
            "model": summary.model,
            "index_status": summary.status,
            "started_at": summary.started_at.isoformat(),
            "ended_at": None if summary.ended_at is None else summary.ended_at.isoformat(),
            "turns": summary.turns,
            "cost_usd": str(summary.cost_usd),
            "input_tokens": summary.input_tokens,
            "output_tokens": summary.output_tokens,
            "flagged": summary.flagged,
            "forked_from": summary.forked_from,
        }
    fields["parked"] = None if row.parked is None else row.parked.describe()
    return fields


def status_text(status: str) -> Text:
    """A status, coloured by how it ended (on a terminal)."""
    return text(status, _STATUS_STYLE.get(status, ""))


def render_runs(out: Output, rows: list[RunRow]) -> None:
    """The runs table, then one line per parked run saying why."""
    cells: list[tuple[object, ...]] = []
    for row in rows:
        s = row.summary
        if s is None:
            cells.append((row.run_id, "?", "?", status_text("parked"), "?", "?", "?"))
            continue
        started = f"{s.started_at:%Y-%m-%d %H:%M:%S}"
        cells.append(
            (row.run_id, s.agent, s.user_id, status_text(row.status), s.turns, s.cost_usd, started)
        )
    headers = ["run", "agent", "user", "status", "turns", "cost (USD)", "started"]
    out.table(headers, cells, right=(4, 5), styles=("cyan",))
    notes = [row for row in rows if row.parked is not None]
    if notes:
        out.line()
    for row in notes:
        assert row.parked is not None
        out.line(f"parked {row.run_id}: {row.parked.describe()}")


async def command(options: argparse.Namespace, out: Output) -> int:
    """``runs``: list runs (see ``RunFilter``), as a table or ``--json``."""
    wanted = RunFilter(
        agent=options.agent,
        user_id=options.user,
        started_since=options.since,
        started_until=options.until,
    )
    async with open_store(options.db) as store:
        only = None
        if options.conversation is not None:
            convo = await conversation_view(store, options.conversation)
            if convo is None:
                raise NotFoundError(f"no conversation {options.conversation!r} in this log")
            only = {run.run_id for run in convo.runs}
        rows = await select_runs(
            store,
            wanted,
            status=options.status,
            prefix=options.prefix or "",
            limit=options.limit,
            only=only,
        )
    if options.json:
        out.json([run_json(row) for row in rows])
    else:
        render_runs(out, rows)
    return 0
