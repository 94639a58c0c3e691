"""Impolite tools: do timeouts hold, do other runs stall, does anything leak, is memory bounded?

Each scenario runs a tool that misbehaves for ``HOLD`` seconds against a tier timeout of
``TIMEOUT`` seconds, on a SQLite file store, while a ticker task (standing for every other run
of the process) sleeps 10 ms at a time and records its longest gap:

- ``ignores_cancellation``: an ``async`` tool that swallows every ``CancelledError``;
- ``shields_cancellation``: an ``async`` tool in a shielded cancel scope;
- ``blocks_in_loop``: an ``async`` tool calling ``time.sleep`` (it holds the event loop);
- ``blocks_in_thread``: the same ``time.sleep`` in a plain ``def`` with ``isolation="thread"``;
- ``hangs_in_process``: a plain ``def`` that never returns, with ``isolation="process"``.

Per scenario: the outcome recorded (``timed_out``: a ``ToolTierFailed`` with ``TimeoutError``,
and no ``ToolCallSucceeded``), the overshoot past the timeout (ms, p50 and max over the runs:
the tier's recorded duration minus the timeout), the longest stall of the ticker (ms), whether
the watchdog logged a loop-block warning, and what is left once the engine closed: asyncio
tasks, tool threads (at close, and once the function returned), child processes and open file
descriptors (the store's connections included). Then the memory a run takes when its tool
returns a 100 MB text, which the engine cuts to the size limit: the growth of the process's
peak RSS (``ru_maxrss``, the text itself included), and the peak of Python allocations
(tracemalloc) in a second run. Last, what an instant tool call costs in a task of its own
(the price of the timeouts above) against one awaited in the caller's task.

    python benchmarks/faults_tools.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from agentledger.engine import Agent, Engine, ModelReply, ModelRequest, Tool, ToolContext, tool
from agentledger.engine.loop._tool_tasks import ToolTasks
from agentledger.engine.testing import ScriptedModel, call, reply
from agentledger.engine.tools._isolation import tool_threads
from agentledger.events import SqliteEventStore, ToolCallSucceeded, ToolTierFailed

TIMEOUT = 0.5
HOLD = 2.0
BIG_RESULT = 100 * 1024 * 1024


class Hold(BaseModel):
    seconds: float


@tool
async def ignores_cancellation(args: Hold, ctx: ToolContext) -> dict[str, bool]:
    """Waits, and swallows every cancellation on the way."""
    end = time.monotonic() + args.seconds
    while (left := end - time.monotonic()) > 0:
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(left)
    return {"done": True}


@tool
async def shields_cancellation(args: Hold, ctx: ToolContext) -> dict[str, bool]:
    """Waits in a shielded scope."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(args.seconds)
    return {"done": True}


@tool
async def blocks_in_loop(args: Hold, ctx: ToolContext) -> dict[str, bool]:
    """Blocks the event loop."""
    time.sleep(args.seconds)  # noqa: ASYNC251 - the misbehaviour under test
    return {"done": True}


@tool(isolation="thread")
def blocks_in_thread(args: Hold, ctx: ToolContext) -> dict[str, bool]:
    """Blocks, in a thread of its own."""
    time.sleep(args.seconds)
    return {"done": True}


@tool(isolation="process")
def hangs_in_process(args: Hold, ctx: ToolContext) -> dict[str, bool]:
    """Never returns, in a process of its own."""
    time.sleep(3600)
    return {"done": True}


class Size(BaseModel):
    size: int


@tool
async def huge_result(args: Size, ctx: ToolContext) -> str:
    """Returns a very large text."""
    return "x" * args.size


SCENARIOS: dict[str, Tool[Any]] = {
    "ignores_cancellation": ignores_cancellation,
    "shields_cancellation": shields_cancellation,
    "blocks_in_loop": blocks_in_loop,
    "blocks_in_thread": blocks_in_thread,
    "hangs_in_process": hangs_in_process,
}


def one_call_model(name: str, arguments: dict[str, Any]) -> ScriptedModel:
    """A model that calls ``name`` once, then answers."""

    def answer(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("done")
        return reply(tool_calls=[call(name, arguments, id="c1")])

    return ScriptedModel(answer)


class WarningCounter(logging.Handler):
    """Counts the loop watchdog's warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.loop_blocked = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "agentledger.engine.loop":
            self.loop_blocked += 1


def child_processes() -> int:
    """Live children of this process (Linux ``/proc``)."""
    me, count = os.getpid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                count += 1
    return count


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def ticker(gaps: list[float], stop: anyio.Event) -> None:
    """Sleeps 10 ms at a time; records how late each wake-up was."""
    while not stop.is_set():
        before = time.monotonic()
        await anyio.sleep(0.01)
        gaps.append(time.monotonic() - before - 0.01)


async def one_run(tmp: Path, index: int, bad: Tool[Any]) -> dict[str, Any]:
    agent = Agent(
        name=f"bench-{bad.name}",
        model=one_call_model(bad.name, {"seconds": HOLD}),
        tools=[bad],
        tool_timeout=TIMEOUT,
    )
    fds_before, threads_before = open_fds(), threading.active_count()
    tasks_before = len(asyncio.all_tasks())
    gaps: list[float] = []
    stop = anyio.Event()
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, gaps, stop)
        path = tmp / f"{bad.name}-{index}.db"
        async with SqliteEventStore(path) as store, Engine(store, loop_block_warning=0.2) as engine:
            result = await engine.run(agent, "go")
            events = [r.event for r in await store.read_stream(f"run-{result.run_id}")]
        stop.set()
    at_close = {
        "tasks": len(asyncio.all_tasks()) - tasks_before,
        "tool_threads": len(tool_threads()),
        "child_processes": child_processes(),
        "open_fds": open_fds() - fds_before,
    }
    await anyio.sleep(max(0.0, started + HOLD + 0.2 - time.monotonic()))
    failed = [e for e in events if isinstance(e, ToolTierFailed)]
    return {
        "timed_out": bool(failed)
        and failed[0].error_type == "TimeoutError"
        and not any(isinstance(e, ToolCallSucceeded) for e in events),
        "overshoot_ms": failed[0].duration_ms - TIMEOUT * 1000 if failed else None,
        "stall_ms": max(gaps, default=0.0) * 1000,
        "at_close": at_close,
        "tool_threads_after_hold": len(tool_threads()),
        "threads_after_hold": threading.active_count() - threads_before,
    }


def summary(runs: list[dict[str, Any]], counter: WarningCounter) -> dict[str, Any]:
    overshoots = [r["overshoot_ms"] for r in runs if r["overshoot_ms"] is not None]
    stalls = [r["stall_ms"] for r in runs]

    def most(key: Callable[[dict[str, Any]], int]) -> int:
        return max(key(r) for r in runs)

    return {
        "runs": len(runs),
        "recorded_timed_out": sum(r["timed_out"] for r in runs),
        "overshoot_ms_p50": round(statistics.median(overshoots), 1) if overshoots else None,
        "overshoot_ms_max": round(max(overshoots), 1) if overshoots else None,
        "other_runs_stall_ms_max": round(max(stalls), 1),
        "loop_block_warnings": counter.loop_blocked,
        "left_at_close": {
            "tasks": most(lambda r: r["at_close"]["tasks"]),
            "tool_threads": most(lambda r: r["at_close"]["tool_threads"]),
            "child_processes": most(lambda r: r["at_close"]["child_processes"]),
            "open_fds": most(lambda r: r["at_close"]["open_fds"]),
        },
        "tool_threads_after_hold": most(lambda r: r["tool_threads_after_hold"]),
        "threads_after_hold": most(lambda r: r["threads_after_hold"]),
    }


async def big_result_peak(tmp: Path, size: int) -> dict[str, Any]:
    agent = Agent(
        name="bench-big", model=one_call_model("huge_result", {"size": size}), tools=[huge_result]
    )
    async with SqliteEventStore(tmp / "big.db") as store, Engine(store) as engine:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = await engine.run(agent, "go")
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        await engine.run(agent, "go")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        events = [r.event for r in await store.read_stream(f"run-{result.run_id}")]
    recorded = next(e for e in events if isinstance(e, ToolCallSucceeded))
    return {
        "result_mib": round(size / 2**20, 1),
        "limit_kib": engine.sizes.max_tool_result // 1024,
        "recorded_result_bytes": len(json.dumps(recorded.result)),
        "peak_python_alloc_mib": round(peak / 2**20, 1),
        "peak_rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
    }


async def call_overhead_us(calls: int = 20_000) -> dict[str, float]:
    """What a tool call pays for running in a task the engine can walk away from: an instant
    call under ``anyio.fail_after`` (as before) against the same call through ``ToolTasks``."""

    async def instant() -> int:
        return 1

    tasks = ToolTasks()
    best_direct = best_task = math.inf
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            with anyio.fail_after(30):
                await instant()
        best_direct = min(best_direct, time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(calls):
            await tasks.call(instant, seconds=30, label="instant")
        best_task = min(best_task, time.perf_counter() - started)
    return {
        "in_caller_task_us": round(best_direct / calls * 1e6, 1),
        "in_own_task_us": round(best_task / calls * 1e6, 1),
    }


async def main(runs: int) -> dict[str, Any]:
    counter = WarningCounter()
    logging.getLogger("agentledger").addHandler(counter)
    report: dict[str, Any] = {
        "benchmark": "faults_tools",
        "timeout_s": TIMEOUT,
        "hold_s": HOLD,
        "loop_block_warning_s": 0.2,
    }
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # A first store and run start what a process keeps (the thread pool's worker), so it
        # is not counted as left over by the first scenario.
        await big_result_peak(tmp, 10)
        for label, bad in SCENARIOS.items():
            counter.loop_blocked = 0
            results = [await one_run(tmp, i, bad) for i in range(runs)]
            report[label] = summary(results, counter)
        report["big_result"] = await big_result_peak(tmp, BIG_RESULT)
    report["tool_call_overhead"] = await call_overhead_us()
    report["python"] = sys.version.split()[0]
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 runs per scenario")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, 2 if options.quick else options.runs)))
