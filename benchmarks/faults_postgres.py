"""PostgreSQL faults: runs driven while their backends are killed mid-transaction, then a restart.

The runs live in a database this script creates and drops (``agentledger_faults_<pid>``). In
the first phase a killer on a connection of its own calls ``pg_terminate_backend`` on the
backends of that database that are inside a transaction, again and again, while the runs go
on. In the second phase the server itself is restarted (``pg_ctl stop -m immediate``, the way a
crash stops it, then started again) while another batch of runs goes on. Every run is driven
like a service would: on a typed error it waits a moment and resumes the run
(``takeover=True``: the session that drove it is this one), until it ends.

The restart needs a server of our own: the script starts a private cluster (``initdb`` and
``pg_ctl`` from ``/usr/lib/postgresql/*/bin``, in a temporary directory, on a free port) and
runs both phases there. ``initdb`` refuses to run as root, so as root the cluster's processes
run as the unprivileged user ``nobody`` (said in the output). Without the binaries, or with
``--server DSN``, the kill phase runs on that server and the restart is skipped (said too).

Counted: runs completed; partial batches (an append whose events are in the log only in part:
0); acknowledged events missing afterwards (0); duplicate event ids, duplicate tool outcomes per
call and duplicate deliveries of the side-effecting tool (0); version and position gaps (0);
untyped errors seen by the driver (0); and the typed errors by kind, with the asyncpg errors
behind them.

    python benchmarks/faults_postgres.py [--runs N] [--kills N] [--server DSN] [--no-restart]
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    EngineError,
    ModelReply,
    ModelRequest,
    Price,
    Reconciled,
    RunExistsError,
    ToolContext,
    tool,
)
from agentledger.engine.testing import (
    FakeClock,
    ScriptedModel,
    SequentialIds,
    call,
    check_tool_results_paired,
    reply,
)
from agentledger.events import (
    EventStoreError,
    PostgresEventStore,
    RecordedEvent,
    StreamAppend,
    Usage,
)

ENDED = frozenset({"completed", "failed", "cancelled", "budget_exceeded"})
OUTCOMES = frozenset({"tool_call_succeeded", "tool_result_reused", "tool_outcome_unknown"})

# -- the world, the agent, and the store that remembers what it was asked ------------------------


class Query(BaseModel):
    q: str


class Parcel(BaseModel):
    to: str


@dataclass
class World:
    """The delivery service outside the store: deliveries made, by idempotency key."""

    delivered: Counter[str] = field(default_factory=Counter)

    def tools(self) -> list[Any]:
        @tool
        async def lookup(args: Query, ctx: ToolContext) -> str:
            """Look something up."""
            return f"{args.q}: the facts"

        @tool(side_effect=True)
        async def deliver(args: Parcel, ctx: ToolContext) -> dict[str, str]:
            """Deliver a parcel (a side effect that must happen once)."""
            assert ctx.idempotency_key is not None
            self.delivered[ctx.idempotency_key] += 1
            return {"delivered_to": args.to}

        @deliver.reconciler
        async def delivered_already(args: Parcel, ctx: ToolContext) -> Reconciled:
            assert ctx.idempotency_key is not None
            if self.delivered[ctx.idempotency_key]:
                return Reconciled.done({"delivered_to": args.to})
            return Reconciled.not_done()

        return [lookup, deliver]


def _model() -> ScriptedModel:
    # A pure function of the request, so a resumed run is answered as the first try was.
    def script(request: ModelRequest) -> ModelReply:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        usage = Usage(input_tokens=100 + 10 * len(request.messages), output_tokens=20)
        if turn == 0:
            return reply(tool_calls=[call("lookup", {"q": "address"}, id="c1")], usage=usage)
        if turn == 1:
            return reply(tool_calls=[call("deliver", {"to": "ann"}, id="c2")], usage=usage)
        if turn == 2:
            calls = [
                call("lookup", {"q": "receipt"}, id="c3"),
                call("deliver", {"to": "bob"}, id="c4"),
            ]
            return reply(tool_calls=calls, usage=usage)
        return reply("Both parcels are delivered.", usage=usage)

    price = Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("4"))
    return ScriptedModel(script, name="scripted", price=price)


class RecordingStore(PostgresEventStore):
    """The store, remembering every append it was asked for and every event it acknowledged."""

    def __init__(self, dsn: str, **options: Any) -> None:
        super().__init__(dsn, **options)
        self.requested: list[list[str]] = []
        self.acknowledged: list[RecordedEvent] = []

    async def append(self, *appends: StreamAppend) -> list[RecordedEvent]:
        self.requested.append([new.event_id for a in appends for new in a.events])
        recorded = await super().append(*appends)
        self.acknowledged.extend(recorded)
        return recorded


# -- driving runs through faults --------------------------------------------------------------


@dataclass
class Tally:
    """What the drivers saw."""

    completed: int = 0
    other_endings: Counter[str] = field(default_factory=Counter)
    typed: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    untyped: list[str] = field(default_factory=list)
    gave_up: int = 0


async def _drive(engine: Engine, agent: Agent, run_id: str, tally: Tally, deadline: float) -> None:
    """Run ``run_id`` to its end, resuming after every typed error, as a service would."""
    while time.monotonic() < deadline:
        try:
            if await engine.store.stream_version(f"run-{run_id}") == 0:
                try:
                    result = await engine.run(agent, "Deliver both.", user_id="u", run_id=run_id)
                except RunExistsError:  # its first write committed after all: resume it
                    continue
            else:
                result = await engine.resume(run_id, takeover=True)
            if result.status == "completed":
                tally.completed += 1
                return
            if result.status in ENDED:
                tally.other_endings[result.status] += 1
                return
        except (EventStoreError, EngineError) as exc:
            tally.typed[type(exc).__name__] += 1
            cause = exc.__cause__
            if cause is not None:
                tally.causes[type(cause).__name__] += 1
        except Exception as exc:  # what this benchmark exists to find
            tally.untyped.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
        await anyio.sleep(random.uniform(0.01, 0.05))
    tally.gave_up += 1


async def _drive_all(
    engine: Engine, agent: Agent, run_ids: Sequence[str], tally: Tally, concurrency: int
) -> None:
    limiter = anyio.CapacityLimiter(concurrency)
    deadline = time.monotonic() + 300

    async def one(run_id: str) -> None:
        async with limiter:
            await _drive(engine, agent, run_id, tally, deadline)

    async with anyio.create_task_group() as tg:
        for run_id in run_ids:
            tg.start_soon(one, run_id)


async def _killer(admin_dsn: str, database: str, kills: int, done: anyio.Event) -> dict[str, int]:
    """Terminate backends of ``database`` that are inside a transaction, ``kills`` times."""
    conn = await asyncpg.connect(admin_dsn)
    made = sweeps = 0
    try:
        while made < kills and not done.is_set():
            await anyio.sleep(random.uniform(0.005, 0.03))
            sweeps += 1
            made += await conn.fetchval(
                """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM (
                       SELECT pid FROM pg_stat_activity
                       WHERE datname = $1 AND pid <> pg_backend_pid()
                         AND xact_start IS NOT NULL
                       ORDER BY random() LIMIT 1) AS victim""",
                database,
            )
    finally:
        await conn.close()
    return {"backends_terminated": made, "sweeps": sweeps}


# -- checking the log afterwards --------------------------------------------------------------


async def _audit(
    dsn: str, store: RecordingStore, world: World, run_ids: Sequence[str]
) -> dict[str, int]:
    async with PostgresEventStore(dsn, listen=False) as healthy:
        events: list[RecordedEvent] = []
        while page := await healthy.read_all(after=events[-1].position if events else 0):
            events.extend(page)
        for event in events:
            event.event  # noqa: B018 - every event decodes and matches its checksum
        unpaired = 0
        for run_id in run_ids:
            try:
                await check_tool_results_paired(healthy, run_id)
            except AssertionError:
                unpaired += 1
    ids = Counter(e.event_id for e in events)
    stored = set(ids)
    partial = sum(
        1 for batch in store.requested if 0 < len(stored.intersection(batch)) < len(batch)
    )
    lost = sum(1 for e in store.acknowledged if e.event_id not in stored)
    versions: dict[str, list[int]] = {}
    for e in events:
        versions.setdefault(e.stream_id, []).append(e.version)
    version_gaps = sum(1 for v in versions.values() if v != list(range(1, len(v) + 1)))
    position_gaps = int([e.position for e in events] != list(range(1, len(events) + 1)))
    outcomes = Counter(
        (e.stream_id, e.event.call_id)  # type: ignore[union-attr]
        for e in events
        if e.type in OUTCOMES
    )
    terminal = Counter(
        e.stream_id for e in events if e.type in {"run_completed", "run_failed", "run_cancelled"}
    )
    return {
        "events_in_database": len(events),
        "appends_requested": len(store.requested),
        "partial_batches": partial,
        "acknowledged_lost": lost,
        "duplicate_event_ids": sum(n - 1 for n in ids.values()),
        "duplicate_tool_outcomes": sum(n - 1 for n in outcomes.values()),
        "duplicate_terminal_events": sum(n - 1 for n in terminal.values()),
        "duplicate_deliveries": sum(n - 1 for n in world.delivered.values() if n > 1),
        "deliveries": sum(world.delivered.values()),
        "version_gaps": version_gaps,
        "position_gaps": position_gaps,
        "unpaired_tool_calls": unpaired,
    }


class _Counting(logging.Handler):
    """Counts what asyncpg's pool logs (it retries its background reconnects and says so)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records[record.getMessage()[:80]] += 1


# -- a private cluster ------------------------------------------------------------------------


@dataclass
class Cluster:
    """A PostgreSQL server of our own in a temporary directory."""

    bindir: Path
    root: Path
    port: int
    run_as: list[str]
    user: str

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        command = [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60"
        )
        self._ctl("-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    def crash_stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_cluster() -> tuple[Cluster | None, str]:
    """A started private cluster, or ``None`` and why not."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        return None, "no initdb under /usr/lib/postgresql/*/bin"
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="agentledger_faults_"))
    run_as: list[str] = []
    user = os.environ.get("USER") or "current user"
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root: the cluster's processes run as nobody.
        shutil.chown(root, "nobody", "nogroup")
        run_as = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        user = "nobody (initdb refuses to run as root)"
    cluster = Cluster(bindir, root, _free_port(), run_as, user)
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        cluster.start()
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"cannot start a private cluster: {exc}"
    return cluster, ""


# -- the phases -------------------------------------------------------------------------------


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


async def _phase(
    dsn: str,
    prefix: str,
    runs: int,
    concurrency: int,
    fault: Any,
) -> dict[str, Any]:
    """Drive ``runs`` runs while ``fault(done, store)`` does its damage; audit the log after."""
    world = World()
    agent = Agent(name="courier", model=_model(), tools=world.tools(), max_turns=6)
    store = RecordingStore(dsn, max_size=8, command_timeout=10)
    tally = Tally()
    run_ids = [f"{prefix}{n}" for n in range(runs)]
    pool_log = _Counting()
    logger = logging.getLogger("asyncpg.pool")
    logger.addHandler(pool_log)
    logger.propagate = False
    started = time.monotonic()
    done = anyio.Event()
    report: dict[str, Any] = {}
    async with store, Engine(store, clock=FakeClock(), ids=SequentialIds(prefix)) as engine:

        async def damage() -> None:
            report.update(await fault(done, store))

        async with anyio.create_task_group() as tg:
            tg.start_soon(damage)
            await _drive_all(engine, agent, run_ids, tally, concurrency)
            done.set()
    seconds = time.monotonic() - started
    logger.removeHandler(pool_log)
    logger.propagate = True
    audit = await _audit(dsn, store, world, run_ids)
    return {
        "runs": runs,
        "runs_completed": tally.completed,
        "runs_ended_otherwise": dict(tally.other_endings),
        "runs_given_up": tally.gave_up,
        **report,
        "typed_errors": dict(tally.typed),
        "typed_error_causes": dict(tally.causes),
        "untyped_errors": len(tally.untyped),
        "untyped_error_samples": tally.untyped[:5],
        "asyncpg_pool_warnings": dict(pool_log.records),
        **audit,
        "seconds": round(seconds, 2),
    }


async def measure(
    *,
    runs: int = 150,
    kills: int = 200,
    concurrency: int = 8,
    restart: bool = True,
    server: str | None = None,
) -> dict[str, Any]:
    """Both phases; ``server`` (an admin DSN) skips the private cluster and the restart."""
    cluster, why_not = (None, "a server was given") if server else start_cluster()
    admin = cluster.dsn if cluster is not None else server or ""
    database = f"agentledger_faults_{os.getpid()}"
    figures: dict[str, Any] = {
        "server": "private cluster" if cluster else admin.rpartition("@")[2],
        "cluster_user": cluster.user if cluster else None,
        "database": database,
    }
    try:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        dsn = _with_database(admin, database)

        async def kill(done: anyio.Event, store: RecordingStore) -> dict[str, int]:
            return await _killer(admin, database, kills, done)

        figures["kills"] = await _phase(dsn, "k", runs, concurrency, kill)
        if restart and cluster is not None:

            async def crash_and_start(done: anyio.Event, store: RecordingStore) -> dict[str, Any]:
                # Mid-way: once about a third of the runs' appends are in.
                while len(store.acknowledged) < runs * 9 and not done.is_set():  # noqa: ASYNC110
                    await anyio.sleep(0.005)
                began = time.monotonic()
                await anyio.to_thread.run_sync(cluster.crash_stop)
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(cluster.start)
                return {"restarts": 1, "outage_seconds": round(time.monotonic() - began, 2)}

            figures["restart"] = await _phase(dsn, "r", runs, concurrency, crash_and_start)
        else:
            figures["restart"] = f"skipped: {why_not or 'not asked for'}"
    finally:
        try:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()
        finally:
            if cluster is not None:
                cluster.stop()
                shutil.rmtree(cluster.root, ignore_errors=True)
    phases = [p for p in (figures["kills"], figures["restart"]) if isinstance(p, dict)]
    figures["totals"] = {
        name: sum(p[name] for p in phases)
        for name in (
            "runs",
            "runs_completed",
            "partial_batches",
            "acknowledged_lost",
            "duplicate_event_ids",
            "duplicate_tool_outcomes",
            "duplicate_deliveries",
            "version_gaps",
            "position_gaps",
            "untyped_errors",
        )
    }
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=150, help="runs per phase (default: 150)")
    parser.add_argument("--kills", type=int, default=200, help="backends to kill (default: 200)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server", help="an admin DSN to use instead of a private cluster")
    parser.add_argument("--no-restart", action="store_true", help="skip the restart phase")
    options = parser.parse_args(argv)
    figures = anyio.run(
        lambda: measure(
            runs=options.runs,
            kills=options.kills,
            concurrency=options.concurrency,
            restart=not options.no_restart,
            server=options.server,
        )
    )
    json.dump(figures, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
