"""A worker process for ``test_crash_resume``: drives a fixed set of runs to completion.

Each run asks, over three turns, for three deliveries through a side-effecting tool; the fake
delivery service is a separate SQLite file that counts deliveries by idempotency key. The test
kills this process with SIGKILL at random points and starts it again until it finishes; every
start resumes the runs the last one left behind.

    python tests/crash_worker.py EVENTS_DB SERVICE_DB RUNS
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import anyio
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    ModelReply,
    ModelRequest,
    Price,
    Reconciled,
    RunNotFoundError,
    ToolContext,
    tool,
)
from agentledger.engine.testing import call, reply
from agentledger.events import SqliteEventStore

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


@tool(side_effect=True, key_scope="run")
async def deliver(args: Delivery, ctx: ToolContext) -> dict[str, object]:
    """Deliver a message (the fake service counts every delivery by key)."""
    conn = _service()
    try:
        conn.execute(
            "INSERT INTO deliveries (key, count) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET count = count + 1",
            (ctx.idempotency_key,),
        )
    finally:
        conn.close()
    return {"delivered": True, "recipient": args.recipient}


@deliver.reconciler
async def delivered_already(args: Delivery, ctx: ToolContext) -> Reconciled:
    conn = _service()
    try:
        row = conn.execute(
            "SELECT count FROM deliveries WHERE key = ?", (ctx.idempotency_key,)
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return Reconciled.not_done()
    return Reconciled.done({"delivered": True, "recipient": args.recipient})


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


class ScriptModel:
    name = "scripted"
    price = Price.free()

    async def complete(self, request: ModelRequest) -> ModelReply:
        return script(request)


AGENT = Agent(name="courier", model=ScriptModel(), tools=[deliver])


async def drive(events_db: str, runs: int) -> None:
    async with SqliteEventStore(events_db) as store, Engine(store, agents=[AGENT]) as engine:
        print("READY", flush=True)
        limiter = anyio.CapacityLimiter(4)

        async def one(index: int) -> None:
            async with limiter:
                run_id = f"r{index:04d}"
                try:
                    await engine.load(run_id)
                except RunNotFoundError:
                    await engine.run(AGENT, f"task {index}", run_id=run_id, user_id="u")
                else:
                    # The only other process that drove these runs was killed: take them over
                    # at once rather than wait out the time limits of its deliveries.
                    await engine.resume(run_id, takeover=True)

        async with anyio.create_task_group() as tg:
            for index in range(runs):
                tg.start_soon(one, index)
    print("DONE", flush=True)


if __name__ == "__main__":
    anyio.run(drive, sys.argv[1], int(sys.argv[3]))
