"""A worker process for ``test_two_processes_resuming_one_run_deliver_once``.

It waits for a start signal (a file appearing), then resumes run ``r1`` of the events database
and prints how that ended. Its one tool delivers a message to a fake service, a
separate SQLite file that counts deliveries by idempotency key; the reconcile hook asks it.

    python tests/resume_worker.py EVENTS_DB SERVICE_DB GO_FILE
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    ModelReply,
    ModelRequest,
    Reconciled,
    RunBusyError,
    RunConflictError,
    ToolContext,
    tool,
)
from agentledger.engine.testing import call, reply
from agentledger.events import SqliteEventStore

SERVICE_DB = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("service.db")


class Delivery(BaseModel):
    recipient: str


def _service() -> sqlite3.Connection:
    conn = sqlite3.connect(SERVICE_DB, timeout=30, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, count INTEGER NOT NULL)"
    )
    return conn


@tool(side_effect=True)
async def deliver(args: Delivery, ctx: ToolContext) -> dict[str, object]:
    """Deliver a message."""
    await anyio.sleep(0.2)  # a slow service: the other process has time to try too
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


class Courier:
    name = "scripted"

    def __init__(self) -> None:
        from agentledger.engine import Price

        self.price = Price.free()

    async def complete(self, request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("Delivered.")
        return reply(tool_calls=[call("deliver", {"recipient": "ada"}, id="c1")])


AGENT = Agent(name="courier", model=Courier(), tools=[deliver])


def _wait_for(go_file: Path) -> None:
    while not go_file.exists():
        time.sleep(0.001)  # spin: both processes should start at the same moment


async def resume(events_db: str, go_file: Path) -> str:
    async with SqliteEventStore(events_db) as store, Engine(store, agents=[AGENT]) as engine:
        _wait_for(go_file)
        try:
            return (await engine.resume("r1")).status
        except RunConflictError:
            return "conflict"
        except RunBusyError:
            return "busy"


if __name__ == "__main__":
    print(anyio.run(resume, sys.argv[1], Path(sys.argv[3])), flush=True)
