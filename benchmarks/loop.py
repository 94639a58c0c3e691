"""Agent-loop throughput on the durable SQLite store: microseconds per turn.

Each run is the smallest real agent run: the model asks for one tool call, the tool answers, the
model answers (two turns, i.e. two model calls). The model is an instant scripted one, so what is
measured is the engine and its durable log. Sequential runs, then 100 runs at a time.

    python benchmarks/loop.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

from agentledger.engine import Agent, Engine, ModelReply, ModelRequest, Price, ToolContext, tool
from agentledger.engine.testing import call, reply
from agentledger.events import SqliteEventStore

TURNS_PER_RUN = 2


class Query(BaseModel):
    city: str


@tool
async def lookup(args: Query, ctx: ToolContext) -> dict[str, str]:
    """Look a city up."""
    return {"city": args.city, "weather": "sunny"}


class InstantModel:
    """Answers at once: a tool call first, then the answer."""

    name = "instant"
    price = Price.free()

    async def complete(self, request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("It is sunny.")
        return reply(tool_calls=[call("lookup", {"city": "Paris"}, id="c1")])


AGENT = Agent(name="bench", model=InstantModel(), tools=[lookup])


async def _sequential(engine: Engine, runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        await engine.run(AGENT, "Weather?")
    return time.perf_counter() - started


async def _concurrent(engine: Engine, runs: int, width: int) -> float:
    started = time.perf_counter()
    per_worker = runs // width

    async def worker() -> None:
        for _ in range(per_worker):
            await engine.run(AGENT, "Weather?")

    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(worker)
    return time.perf_counter() - started


async def main(quick: bool) -> dict[str, object]:
    sequential_runs = 300 if quick else 2_000
    concurrent_runs = 1_000 if quick else 10_000
    width = 100
    with tempfile.TemporaryDirectory() as tmp:
        async with SqliteEventStore(Path(tmp) / "loop.db") as store, Engine(store) as engine:
            await _sequential(engine, 20)  # warm up imports, caches and the file
            seq = await _sequential(engine, sequential_runs)
            conc = await _concurrent(engine, concurrent_runs, width)
            total_events = await store.head_position()
            total_runs = 20 + sequential_runs + concurrent_runs
            appends = store.stats.appends
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "benchmark": "loop",
        "store": "sqlite (file, WAL, synchronous=NORMAL)",
        "quick": quick,
        "sequential_runs": sequential_runs,
        "concurrent_runs": concurrent_runs,
        "concurrency": width,
        "turns_per_run": TURNS_PER_RUN,
        "us_per_turn_sequential": round(seq / (sequential_runs * TURNS_PER_RUN) * 1e6, 1),
        "us_per_turn_concurrent_100": round(conc / (concurrent_runs * TURNS_PER_RUN) * 1e6, 1),
        "events_per_run": round(total_events / total_runs, 2),
        "appends_per_run": round(appends / total_runs, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, options.quick)))
