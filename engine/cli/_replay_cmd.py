"""``replay``, ``fork`` and ``whatif``: the recorded runs again, from their logs.

``replay`` runs each selected run's agent against its own log (no model called, no tool run,
nothing written) and exits 1 when any run diverges or cannot be replayed, so it can gate a
deploy. ``fork`` copies a run up to a version into a new run (``--resume`` continues it live).
``whatif`` forks many runs with a changed agent, runs the forks live and prints old and new
side by side. The agents come from ``--agents`` (``_agents``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from rich.text import Text

from agentledger.engine._engine import Engine
from agentledger.events import EventStore, RunStarted
from agentledger.projections import RunFilter, run_stream
from agentledger.replay import ReplayBatch, WhatIfReport

from ._agents import Loaded, load
from ._details import clip, money
from ._errors import EXIT_NOT_FOUND, EXIT_OK, NotFoundError, UsageError
from ._output import Output, plural, text
from ._progress import progress_bar
from ._runs import resolve_run, status_text
from ._store import open_store
from ._values import positive_int, when


def add_selection(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``RUN...`` or ``--all`` with filters: which runs a command goes over."""
    parser.add_argument("runs", nargs="*", metavar="RUN", help=f"runs to {what} (ids or prefixes)")
    parser.add_argument("--all", action="store_true", help=f"{what} every run matching the filters")
    parser.add_argument("--agent", dest="agent_name", metavar="NAME", help="only this agent's runs")
    parser.add_argument("--user", help="only this user's runs")
    parser.add_argument("--since", type=when, help="started at or after (ISO time, or 2h, 7d)")
    parser.add_argument(
        "--agents",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="your Agent(s) or Budgets, e.g. myapp.agents:support (default: the demo's)",
    )
    parser.add_argument("--concurrency", type=positive_int, default=4, help="runs at once (4)")


async def _selected(
    store: EventStore, options: argparse.Namespace, *, forks: bool | None = None
) -> RunFilter | list[str]:
    """The run ids given (resolved from prefixes), or the filter ``--all`` stands for."""
    if options.runs and options.all:
        raise UsageError("give RUN ids or --all, not both")
    if options.runs:
        return [await resolve_run(store, run) for run in options.runs]
    if not options.all:
        raise UsageError("name the runs (RUN ids or prefixes) or pass --all")
    return RunFilter(
        agent=options.agent_name, user_id=options.user, started_since=options.since, forks=forks
    )


def _engine(store: EventStore, loaded: Loaded) -> Engine:
    return Engine(store, agents=list(loaded.agents.values()), budgets=loaded.budgets)


def _render_batch(out: Output, batch: ReplayBatch) -> None:
    for divergence in batch.divergent:
        where = "" if divergence.version is None else f" at v{divergence.version}"
        out.print(
            Text.assemble(
                text("diverged ", "bold red"),
                text(f"{divergence.run_id} ({divergence.agent}){where}: {divergence.reason}"),
            )
        )
        for label, value in (("recorded", divergence.recorded), ("replayed", divergence.replayed)):
            if value is not None:
                out.line(f"  {label}: {clip(_compact(value), 300)}")
    for error in batch.errors:
        out.print(
            Text.assemble(
                text(f"{error.kind} ", "bold red"), text(f"{error.run_id}: {error.message}")
            )
        )
    summary = (
        f"replayed {plural(batch.total, 'run')}: {len(batch.identical)} identical, "
        f"{len(batch.divergent)} divergent, {len(batch.errors)} not replayed"
    )
    out.line(summary, "green" if batch.ok else "bold red")


def _compact(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def replay(options: argparse.Namespace, out: Output) -> int:
    """Replay runs from their logs; exit 1 when any diverges or cannot be replayed."""
    loaded = load(options.agents)
    async with open_store(options.db) as store:
        runs = await _selected(store, options)
        async with _engine(store, loaded) as engine:
            with progress_bar("replaying") as bar:
                batch = await engine.replay_all(runs, concurrency=options.concurrency, progress=bar)
    if batch.total == 0:
        raise NotFoundError("no runs matched: nothing was replayed")
    if options.json:
        out.json(batch.to_dict())
    else:
        _render_batch(out, batch)
    return EXIT_OK if batch.ok else EXIT_NOT_FOUND


async def _check_agent(store: EventStore, run_id: str, loaded: Loaded) -> None:
    """Before a fork is copied to go on live: the agent it would go on with is there."""
    first = await store.read_stream(run_stream(run_id), limit=1)
    started = first[0].event if first else None
    if isinstance(started, RunStarted) and started.agent not in loaded.agents:
        raise UsageError(
            f"run {run_id} is of agent {started.agent!r}: load it with --agents MODULE:NAME "
            "to continue the fork (or --copy-only)"
        )


async def fork(options: argparse.Namespace, out: Output) -> int:
    """Copy a run up to ``--at`` into a new run and continue it live (``--copy-only``: not)."""
    loaded = load(options.agents)
    agent = loaded.pick(options.agent_name) if options.agents else None
    async with open_store(options.db) as store:
        run_id = await resolve_run(store, options.run_id)
        if agent is None and not options.copy_only:
            await _check_agent(store, run_id, loaded)
        async with _engine(store, loaded) as engine:
            new_id = await engine.fork(
                run_id,
                at_version=options.at,
                agent=agent,
                new_run_id=options.new_run_id,
                user_id=options.user,
                surface=options.surface,
            )
            result = None if options.copy_only else await engine.resume(new_id, agent=agent)
    if options.json:
        fields: dict[str, Any] = {"run_id": run_id, "at_version": options.at, "fork_id": new_id}
        if result is not None:
            fields |= {"status": result.status, "output": result.output, "error": result.error}
        out.json(fields)
        return 0
    out.line(f"forked {run_id} at v{options.at} into {new_id}")
    if result is None:
        out.line(f"copied only: Engine.resume({new_id!r}) continues it", "dim")
        return 0
    out.print(Text.assemble(text("the fork ended "), status_text(result.status)))
    if result.output is not None:
        out.line(f"output: {result.output}")
    if result.error is not None:
        out.line(f"error: {result.error}", "red")
    out.line(f"agentledger show {new_id} shows it", "dim")
    return 0


def _budget(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"--budget takes an amount of USD such as 0.50, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise UsageError(f"--budget must be a positive amount of USD, not {value!r}")
    return amount


def _arrow(old: object, new: object) -> str:
    return f"{old}" if old == new else f"{old} -> {new}"


def _render_whatif(out: Output, report: WhatIfReport) -> None:
    rows: list[Sequence[object]] = []
    for run in report.runs:
        old, new = run.old, run.new
        rows.append(
            (
                run.run_id,
                run.fork_id,
                _arrow(old.status, new.status),
                _arrow(money(old.cost_usd), money(new.cost_usd)),
                _arrow(old.turns, new.turns),
                _arrow(old.tool_calls, new.tool_calls),
                _arrow(
                    f"{old.critic_accepted}/{old.critic_rejected}",
                    f"{new.critic_accepted}/{new.critic_rejected}",
                ),
                "same" if not run.output_changed else f"changed ({run.similarity:.0%} alike)",
            )
        )
    out.table(
        ["run", "fork", "status", "cost", "turns", "tool calls", "critic ok/no", "output"], rows
    )
    for run in report.runs:
        if run.output_changed and run.diff:
            out.line()
            out.line(f"{run.run_id} -> {run.fork_id}:", "bold")
            for line in run.diff.splitlines():
                style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
                out.line(f"  {line}", style)
    for skip in report.skipped:
        out.line(f"skipped {skip.run_id}: {skip.reason} {skip.message}".rstrip(), "yellow")
    totals = report.totals
    out.line()
    out.line(
        f"{plural(totals['runs'], 'run')} compared, {totals['outputs_changed']} outputs changed, "
        f"{totals['skipped']} skipped; the forks spent {money(report.spent_usd)}"
        + ("" if report.budget_usd is None else f" of a {money(report.budget_usd)} budget")
    )


async def whatif(options: argparse.Namespace, out: Output) -> int:
    """Fork runs with another agent, run the forks live, and compare old and new."""
    if not options.agents:
        raise UsageError("whatif needs the changed agent: --agents MODULE:NAME")
    loaded = load(options.agents)
    agent = loaded.pick(options.with_agent)
    assert agent is not None
    budget = _budget(options.budget)
    effects = sorted(t.name for t in agent.tools if t.side_effect)
    if effects and not options.allow_side_effects:
        raise UsageError(
            f"agent {agent.name!r} has side-effecting tools ({', '.join(effects)}): the forks "
            "run live and would run them for real; pass --allow-side-effects to let them"
        )
    async with open_store(options.db) as store:
        # --all leaves out earlier forks: a what-if asks about what really happened.
        runs = await _selected(store, options, forks=False)
        async with _engine(store, loaded) as engine:
            with progress_bar("what if") as bar:
                report = await engine.whatif(
                    runs,
                    agent,
                    at_version=options.at,
                    concurrency=options.concurrency,
                    budget_usd=budget,
                    allow_side_effects=options.allow_side_effects,
                    user_id=options.fork_user,
                    progress=bar,
                )
    if options.json:
        out.json(report.to_dict())
    else:
        _render_whatif(out, report)
    if not report.runs and not report.skipped:
        raise NotFoundError("no runs matched: nothing was forked")
    return 0
