"""A worker process for the two-process crash figure: drives a fixed set of runs to their end.

Two of these run at once on one SQLite file and are killed with SIGKILL at random moments and
started again; each takes any run that is not over (starting it or resuming it) and leaves it
when the other is driving it. The tool delivers through a fake service (a separate SQLite file
that counts deliveries by idempotency key), whose reconcile hook says whether a delivery landed.
The primary model fails some requests for good (the call falls back to the backup model) and
the backup fails some once (a retry). Every event the store acknowledged is noted in ACK_FILE
by the engine's sink, so a checker can look each one up afterwards.

    python tests/crash_pair_worker.py EVENTS_DB SERVICE_DB RUNS ACK_FILE
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import sys
from pathlib import Path
from typing import IO

import anyio
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    EngineError,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    Reconciled,
    RetryPolicy,
    RunNotFoundError,
    ToolContext,
    tool,
)
from agentledger.engine.testing import call, reply
from agentledger.events import RecordedEvent, SqliteEventStore

SERVICE_DB = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("service.db")


class Delivery(BaseModel):
    recipient: str
    body: str


def _service() -> sqlite3.Connection:
    conn = sqlite3.connect(SERVICE_DB, timeout=30, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, count INTEGER NOT NULL)"
    )
    return conn


@tool(side_effect=True)
async def deliver(args: Delivery, ctx: ToolContext) -> dict[str, object]:
    """Deliver a message."""
    await anyio.sleep(0.05)  # a slow service: kills land while deliveries are in flight
    conn = _service()
    try:
        conn.execute(
            "INSERT INTO deliveries (key, count) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET count = count + 1",
            (ctx.idempotency_key,),
        )
    finally:
        conn.close()
    return {"delivered": args.recipient}


@deliver.reconciler
async def delivered_already(args: Delivery, ctx: ToolContext) -> Reconciled:
    conn = _service()
    try:
        row = conn.execute(
            "SELECT count FROM deliveries WHERE key = ?", (ctx.idempotency_key,)
        ).fetchone()
    finally:
        conn.close()
    return Reconciled.not_done() if row is None else Reconciled.done({"delivered": args.recipient})


def _bucket(request: ModelRequest) -> int:
    text = "".join(m.content for m in request.messages)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 4


def script(request: ModelRequest) -> ModelReply:
    """Turn 1: two deliveries at once; turn 2: one more; turn 3: the answer."""
    results = [m for m in request.messages if m.role == "tool"]
    task = next(m.content for m in request.messages if m.role == "user")
    if not results:
        return reply(
            tool_calls=[
                call("deliver", {"recipient": "ada", "body": task}, id="c1"),
                call("deliver", {"recipient": "bob", "body": task}, id="c2"),
            ]
        )
    if len(results) == 2:
        return reply(tool_calls=[call("deliver", {"recipient": "cy", "body": task}, id="c3")])
    return reply(f"delivered {len(results)} messages for {task}")


class Primary:
    """Fails a quarter of the requests for good, whatever the attempt: the call falls back."""

    name = "primary"
    price = Price.free()

    async def complete(self, request: ModelRequest) -> ModelReply:
        if _bucket(request) == 0:
            raise ModelServerError("primary", "overloaded", status_code=503)
        return script(request)


def _first_failure(request: ModelRequest) -> bool:
    """Whether this request is one the backup fails, for the first time (noted in the service)."""
    text = "".join(m.content for m in request.messages)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if int(digest[8:16], 16) % 3:
        return False
    conn = _service()
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS backup_failures (digest TEXT PRIMARY KEY)")
        added = conn.execute(
            "INSERT INTO backup_failures (digest) VALUES (?) ON CONFLICT DO NOTHING", (digest,)
        )
        return added.rowcount == 1
    finally:
        conn.close()


class Backup:
    """Fails a third of the requests once (a retry), else answers like the primary.

    Once, not at random: a run whose retries all failed would end ``failed``, which is the
    engine working, not a crash losing something."""

    name = "backup"
    price = Price.free()

    async def complete(self, request: ModelRequest) -> ModelReply:
        if _first_failure(request):
            raise ModelServerError("backup", "overloaded", status_code=503)
        return script(request)


AGENT = Agent(
    name="courier",
    model=Primary(),
    fallback_models=[Backup()],
    tools=[deliver],
    tool_timeout=0.5,  # a delivery cut off by a kill is in doubt 1.5 s later
    retry=RetryPolicy(max_attempts=4, base_delay=0.01),
)


class AckFile:
    """The engine's sink: notes every event the store acknowledged."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the process

    def __call__(self, recorded: RecordedEvent) -> None:
        self._file.write(recorded.event_id + "\n")
        self._file.flush()


async def drive(events_db: str, runs: int, ack_file: str) -> None:
    async with (
        SqliteEventStore(events_db) as store,
        Engine(store, agents=[AGENT], sink=AckFile(ack_file)) as engine,
    ):
        print("READY", flush=True)
        limiter = anyio.CapacityLimiter(2)
        left = set(range(runs))

        async def one(index: int) -> None:
            run_id = f"r{index:04d}"
            async with limiter:
                try:
                    state = await engine.load(run_id)
                except RunNotFoundError:
                    result = await engine.run(AGENT, f"task {index}", run_id=run_id, user_id="u")
                else:
                    result = state if state.is_terminal else await engine.resume(run_id)
            if result.status in ("completed", "failed", "cancelled", "budget_exceeded"):
                left.discard(index)

        while left:
            async with anyio.create_task_group() as tg:
                for index in sorted(left, key=lambda _: random.random()):

                    async def attempt(index: int = index) -> None:
                        try:
                            await one(index)
                        except EngineError:  # the other worker has it (conflict, busy, exists)
                            await anyio.sleep(0.05)

                    tg.start_soon(attempt)
    print("DONE", flush=True)


if __name__ == "__main__":
    anyio.run(drive, sys.argv[1], int(sys.argv[3]), sys.argv[4])
