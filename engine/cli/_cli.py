"""``agentledger``: the command line. Run the demo, list runs, show a run, follow the log.

Every value from the log is printed with its control characters escaped (``_escape``); ``tail``
stays exact JSON. A damaged event (``CorruptEventError``) does not stop a listing: its run is
shown as ``parked`` with the reason. Errors are one line on stderr and exit status 1, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anyio
import orjson

from agentledger.engine._engine import Engine
from agentledger.engine._errors import EngineError
from agentledger.engine._sink import event_line
from agentledger.events import (
    CorruptEventError,
    EventStore,
    EventStoreError,
    RecordedEvent,
    SqliteEventStore,
)
from agentledger.projections import (
    CriticStatsRows,
    ParkedStream,
    ProjectionError,
    ProjectionRunner,
    RunIndex,
    RunSummary,
    SpendIndex,
    accept_rate,
    check_pass_rates,
    list_runs,
    parked_runs,
    run_stream,
    spend_by_day,
)

from ._escape import safe_json, safe_text

DEFAULT_DB = "agentledger.db"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[safe_text(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(row.rstrip() for row in [line, rule, *body])


def _summary(recorded: RecordedEvent) -> str:
    event = recorded.event
    match event.type:
        case "run_started":
            return f"agent={event.agent} user={event.user_id} task={event.task!r}"
        case "model_call_responded":
            calls = ", ".join(c.name for c in event.tool_calls)
            return f"{event.model}: " + (f"calls {calls}" if calls else repr(event.text[:60]))
        case "tool_arguments_rejected":
            issues = "; ".join(e.message for e in event.errors)
            return f"{event.tool_name}: {event.error_type}: {issues}"[:100]
        case "tool_tier_failed":
            return f"{event.tool_name}[{event.tier}]: {event.message}"[:100]
        case "tool_call_succeeded":
            return f"{event.tool_name}[{event.tier}] ok"
        case "tool_result_reused":
            return f"{event.tool_name}: reused, not executed again"
        case "tool_tier_skipped":
            return (
                f"{event.tool_name}[{event.tier}]: breaker open "
                f"({event.failures_in_a_row} failures in a row)"
            )
        case "tool_call_claimed":
            return f"{event.tool_name}: in doubt, claimed to {event.method}"
        case "tool_call_reconciled":
            return f"{event.tool_name}: reconcile hook found {event.found}"
        case "model_call_interrupted":
            return f"{event.model}: attempt {event.attempt} cut off, asked again"
        case "run_completed":
            return repr(event.output[:80]) + (" (flagged)" if event.flagged else "")
        case "budget_reserved":
            return f"{event.amount_usd} USD for {event.model}"
        case "budget_settled":
            return f"{event.actual_usd} USD (reserved {event.reserved_usd})"
        case "critic_verdict":
            failed = [c.name for c in event.checks if not c.passed]
            return f"{event.method}: " + ("accepted" if event.accepted else f"failed {failed}")
        case "revision_requested":
            return "; ".join(event.issues)[:100]
        case "run_failed":
            return f"{event.error_type}: {event.message}"[:100]
    return ""


def _timeline_row(recorded: RecordedEvent) -> tuple[object, ...]:
    try:
        event = recorded.event
    except CorruptEventError as exc:
        return (recorded.version, "?", "(corrupt)", exc.reason)
    return (recorded.version, event.at.strftime("%H:%M:%S.%f")[:-3], event.type, _summary(recorded))


def _timeline(events: Sequence[RecordedEvent]) -> str:
    return _table(["#", "time", "event", "detail"], [_timeline_row(e) for e in events])


def _row(recorded: RecordedEvent) -> str:
    """One event as a fixed-width line, for output that grows while a person watches."""
    time = recorded.event.at.strftime("%H:%M:%S.%f")[:-3]
    line = f"{recorded.version:>3}  {time}  {recorded.event.type:<24} {_summary(recorded)}"
    return safe_text(line.rstrip())


def _run_cells(row: RunSummary, parked: ParkedStream | None) -> tuple[object, ...]:
    return (
        row.run_id,
        row.agent,
        row.user_id,
        "parked" if parked is not None else row.status,
        row.turns,
        row.cost_usd,
        f"{row.started_at:%Y-%m-%d %H:%M:%S}",
    )


async def _damage_in(store: EventStore, run_id: str) -> ParkedStream | None:
    """The first damaged event of a run's stream, if any (reads and decodes the whole run)."""
    for recorded in await store.read_stream(run_stream(run_id)):
        try:
            recorded.event  # noqa: B018 - decoding is the check
        except CorruptEventError as exc:
            return ParkedStream.of(exc)
    return None


async def _runs_table(store: EventStore, user: str | None, status: str | None, limit: int) -> str:
    """The runs table, newest first; parked runs show as ``parked`` and get a line each below
    it saying why (a run whose very start is damaged has no other columns to show).

    The run index names the runs whose damage it met while folding; a row damaged after it
    was folded is found by reading the stream of each run considered for the listing (with a
    ``--status`` filter, every run until ``limit`` match), so what is shown is checked against
    the log as it is now.
    """
    async with ProjectionRunner(store, RunIndex()) as runner:
        await runner.catch_up()
        parked = parked_runs(runner.parked)
        rows = list_runs(runner.rows, user_id=user, limit=None, newest_first=True)
    cells: list[tuple[object, ...]] = []
    for row in rows:
        if len(cells) >= limit:
            break
        if row.run_id not in parked:
            damage = await _damage_in(store, row.run_id)
            if damage is not None:
                parked[row.run_id] = damage
        cell = _run_cells(row, parked.get(row.run_id))
        if status is None or cell[3] == status:
            cells.append(cell)
    if user is None and status in (None, "parked"):
        known = {row.run_id for row in rows}
        unlisted = sorted(parked.keys() - known)
        cells += [(run_id, "?", "?", "parked", "?", "?", "?") for run_id in unlisted]
    cells = cells[: max(limit, 0)]
    table = _table(["run", "agent", "user", "status", "turns", "cost (USD)", "started"], cells)
    notes = [
        f"parked {safe_text(run_id)}: {safe_text(parked[str(run_id)].describe())}"
        for run_id, *_ in cells
        if str(run_id) in parked
    ]
    return "\n".join([table, *(["", *notes] if notes else [])])


async def _demo(db: Path) -> int:
    from ._demo import DEMO_BUDGETS, demo_agent

    agent = demo_agent()
    task = "Plan my weekend in Lisbon"
    print(f"agentledger demo: the event log is {db} (SQLite)")
    reused = sent = 0
    async with SqliteEventStore(db) as store, Engine(store, budgets=DEMO_BUDGETS) as engine:
        for attempt in (1, 2):
            print(f"\nRun {attempt}: {task!r} for user ada, events as they commit:")
            async for recorded in engine.stream(agent, task, user_id="ada", surface="demo"):
                event = recorded.event
                reused += event.type == "tool_result_reused"
                sent += event.type == "tool_call_succeeded" and event.tool_name == "send_itinerary"
                print(f"  {_row(recorded)}", flush=True)
        print(
            f"\nEmails sent: {sent}; sends answered from the idempotency ledger instead: "
            f"{reused}.\n\nRuns in the log, newest first:"
        )
        print(await _runs_table(store, None, None, 10))
    print(f"\nNext: agentledger --db {db} show RUN_ID | spend ada | critic {agent.name} | tail")
    return 0


async def _show(db: Path, run_id: str) -> int:
    async with SqliteEventStore(db) as store:
        events = await store.read_stream(run_stream(run_id))
    if not events:
        print(safe_text(f"agentledger: no run {run_id!r} in {db}"), file=sys.stderr)
        return 1
    print(_timeline(events))
    for recorded in events:
        try:
            recorded.event  # noqa: B018 - decoding is the check
        except CorruptEventError as exc:
            print(f"\nparked {safe_text(run_id)}: {safe_text(ParkedStream.of(exc).describe())}")
            break
    return 0


async def _runs(db: Path, user: str | None, status: str | None, limit: int) -> int:
    async with SqliteEventStore(db) as store:
        print(await _runs_table(store, user, status, limit))
    return 0


async def _spend(db: Path, user: str) -> int:
    async with SqliteEventStore(db) as store, ProjectionRunner(store, SpendIndex()) as runner:
        await runner.catch_up()
        days = spend_by_day(runner.rows, user)
    if not days:
        print(f"agentledger: no budget ledger for user {user!r} in {db}", file=sys.stderr)
        return 1
    print(_table(["day", "settled (USD)"], [(day.isoformat(), amount) for day, amount in days]))
    return 0


async def _critic(db: Path, agent: str) -> int:
    async with SqliteEventStore(db) as store, ProjectionRunner(store, CriticStatsRows()) as runner:
        await runner.catch_up()
        rate = accept_rate(runner.rows, agent)
        checks = check_pass_rates(runner.rows, agent)
    if rate is None:
        print(f"agentledger: no critic verdicts for agent {agent!r} in {db}", file=sys.stderr)
        return 1
    print(f"accept rate of {agent}: {float(rate):.1%}\n")
    print(
        _table(
            ["check (worst first)", "runs", "passed", "pass rate"],
            [(c.check, c.runs, c.passed, f"{float(c.rate):.1%}") for c in checks],
        )
    )
    return 0


def _tail_line(recorded: RecordedEvent) -> bytes:
    """The event's JSON line; for a damaged event, its envelope and ``corrupt`` (the reason)
    instead of ``event``, and a one-line note on stderr."""
    try:
        return safe_json(event_line(recorded))
    except CorruptEventError as exc:
        print(safe_text(f"agentledger: {ParkedStream.of(exc).describe()}"), file=sys.stderr)
        return safe_json(
            orjson.dumps(
                {
                    "stream_id": recorded.stream_id,
                    "version": recorded.version,
                    "position": recorded.position,
                    "event_id": recorded.event_id,
                    "recorded_at": recorded.recorded_at,
                    "schema_version": recorded.schema_version,
                    "corrupt": exc.reason,
                }
            )
            + b"\n"
        )


async def _tail(db: Path, after: int, follow: bool) -> int:
    async with SqliteEventStore(db) as store:
        if not follow:
            position = after
            while batch := await store.read_all(after=position, limit=1000):
                for recorded in batch:
                    sys.stdout.buffer.write(_tail_line(recorded))
                position = batch[-1].position
            return 0
        async for recorded in store.subscribe(after=after):
            sys.stdout.buffer.write(_tail_line(recorded))
            sys.stdout.buffer.flush()
    return 0


def _parser() -> argparse.ArgumentParser:
    try:
        installed = version("agentledger")
    except PackageNotFoundError:  # running from a checkout that is not installed
        installed = "unknown"
    parser = argparse.ArgumentParser(
        prog="agentledger",
        description="An event-sourced engine for LLM agents: every step is an event in a log.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed}")
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(DEFAULT_DB),
        help=f"SQLite event log (default: {DEFAULT_DB})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="run the demo agent (scripted model, no network)")
    runs = commands.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--user", help="only this user's runs")
    runs.add_argument(
        "--status", help="only runs with this status (e.g. completed, paused, parked)"
    )
    runs.add_argument("--limit", type=int, default=20, help="at most this many (default: 20)")
    show = commands.add_parser("show", help="show one run's events as a timeline")
    show.add_argument("run_id", help="the run id")
    spend = commands.add_parser("spend", help="a user's settled spend per day")
    spend.add_argument("user", help="the user id")
    critic = commands.add_parser("critic", help="an agent's critic accept rate, per check")
    critic.add_argument("agent", help="the agent name")
    tail = commands.add_parser("tail", help="print the log as JSON lines")
    tail.add_argument("--after", type=int, default=0, help="start after this global position")
    tail.add_argument("-f", "--follow", action="store_true", help="keep waiting for new events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentledger`` command."""
    options = _parser().parse_args(argv)
    db: Path = options.db
    try:
        match options.command:
            case "demo":
                return anyio.run(_demo, db)
            case "runs":
                return anyio.run(_runs, db, options.user, options.status, options.limit)
            case "show":
                return anyio.run(_show, db, options.run_id)
            case "spend":
                return anyio.run(_spend, db, options.user)
            case "critic":
                return anyio.run(_critic, db, options.agent)
            case _:
                return anyio.run(_tail, db, options.after, options.follow)
    except KeyboardInterrupt:
        return 130
    except (EventStoreError, EngineError, ProjectionError, OSError) as exc:
        # What a user can act on (a damaged or locked database, a bad path) is one line.
        print(safe_text(f"agentledger: error: {exc}"), file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``agentledger tail | head``): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
