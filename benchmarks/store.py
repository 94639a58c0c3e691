"""Event-store throughput on an SQLite file (WAL, synchronous=NORMAL), against plain baselines.

- ``append_events_per_s_1_writer`` / ``_100_writers``: tasks that each await one small event at a
  time through ``SqliteEventStore.append`` (group commit batches the concurrent ones). Event
  ids come from the engine's own id source (``RandomIds``), in the baseline too.
- ``baseline_sqlite3_commit_per_event_per_s``: plain ``sqlite3``, one commit per event, the same
  rows into the same table.
- ``read_fold_events_per_s``: read N events back with ``read_all`` pages, decode them into typed
  events and fold them into the run index (``ProjectionRunner.catch_up``, nothing saved).
- ``baseline_orjson_fold_per_s``: plain ``sqlite3`` reading the same rows, ``orjson.loads`` into
  dicts and the same fold over dicts.

    python benchmarks/store.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import orjson

from agentledger.engine import RandomIds
from agentledger.events import (
    Event,
    EventCodec,
    ModelCallRequested,
    ModelCallResponded,
    NewEvent,
    RunCompleted,
    RunStarted,
    SqliteEventStore,
    StreamAppend,
    ToolCall,
    ToolCallIntended,
    ToolCallSucceeded,
    TurnStarted,
    Usage,
)
from agentledger.projections import ProjectionRunner, RunIndex

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run_events(n: int) -> list[Event]:
    """The ten events of a small run: two turns, one tool call, an answer."""
    run, at = f"run-{n}", T0 + timedelta(seconds=n)
    common: dict[str, Any] = {"run_id": run, "at": at}
    usage = Usage(input_tokens=250, output_tokens=40)
    call = ToolCall(id="c1", name="lookup", arguments='{"city":"Paris"}')
    return [
        RunStarted(**common, span_id=run, agent="bench", model="m", task="Weather?", user_id="u"),
        TurnStarted(**common, span_id="t1", parent_span_id=run, turn=1),
        ModelCallRequested(**common, span_id="m1", parent_span_id="t1", call_id="m1", model="m"),
        ModelCallResponded(
            **common,
            span_id="m1",
            call_id="m1",
            model="m",
            tool_calls=(call,),
            usage=usage,
            cost_usd=Decimal("0.000061"),
        ),
        ToolCallIntended(**common, span_id="k1", call_id="c1", tool_name="lookup"),
        ToolCallSucceeded(
            **common, span_id="k1", call_id="c1", tool_name="lookup", result={"sky": "sunny"}
        ),
        TurnStarted(**common, span_id="t2", parent_span_id=run, turn=2),
        ModelCallRequested(**common, span_id="m2", parent_span_id="t2", call_id="m2", model="m"),
        ModelCallResponded(
            **common,
            span_id="m2",
            call_id="m2",
            model="m",
            text="It is sunny.",
            usage=usage,
            cost_usd=Decimal("0.000061"),
        ),
        RunCompleted(**common, span_id=run, output="It is sunny.", turns=2),
    ]


SMALL = TurnStarted(run_id="r", span_id="s", at=T0, turn=1)


async def append_rate(path: Path, writers: int, per_writer: int) -> float:
    ids = RandomIds()  # the engine's own event ids
    async with SqliteEventStore(path) as store:
        counter = 0

        async def writer(index: int) -> None:
            nonlocal counter
            stream = f"w-{index}"
            for version in range(per_writer):
                counter += 1
                new = NewEvent(SMALL, ids.new_id())
                await store.append(StreamAppend(stream, [new], expected_version=version))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(writers):
                tg.start_soon(writer, index)
        elapsed = time.perf_counter() - started
    return writers * per_writer / elapsed


def baseline_commit_rate(path: Path, schema_from: Path, count: int) -> float:
    """Plain sqlite3, one transaction per event, into the store's own table layout."""
    source = sqlite3.connect(schema_from)
    schema = [row[0] for row in source.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL")]
    source.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in schema:
        conn.execute(statement)
    data = EventCodec.encode(SMALL)
    ids = RandomIds()
    started = time.perf_counter()
    for n in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO events (position, stream_id, version, event_id, type, schema_version, "
            "recorded_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (n + 1, f"w-{n % 100}", n // 100 + 1, ids.new_id(), "turn_started", 1, 0, data),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


async def fill(path: Path, runs: int) -> int:
    async with SqliteEventStore(path) as store:
        batch: list[StreamAppend] = []
        for n in range(runs):
            events = [NewEvent(e, f"{n}-{i}") for i, e in enumerate(run_events(n))]
            batch.append(StreamAppend(f"run-{n}", events, expected_version=0))
            if len(batch) == 500:
                await store.append(*batch)
                batch = []
        if batch:
            await store.append(*batch)
        return await store.head_position()


async def typed_read_fold(path: Path) -> tuple[float, int]:
    async with (
        SqliteEventStore(path) as store,
        ProjectionRunner(store, RunIndex(), page_size=5_000) as runner,
    ):
        started = time.perf_counter()
        folded = await runner.catch_up(save=False)
        elapsed = time.perf_counter() - started
        assert len(runner.rows) > 0
    return folded / elapsed, folded


def orjson_read_fold(path: Path) -> tuple[float, int]:
    """The same rows, raw: sqlite3 pages, ``orjson.loads`` into dicts, a dict run index."""
    conn = sqlite3.connect(path)
    rows: dict[str, dict[str, Any]] = {}
    count = 0
    position = 0
    started = time.perf_counter()
    while True:
        page = conn.execute(
            "SELECT position, stream_id, type, data FROM events WHERE position > ? "
            "ORDER BY position LIMIT 5000",
            (position,),
        ).fetchall()
        if not page:
            break
        position = page[-1][0]
        for _position, _stream, kind, data in page:
            event = orjson.loads(data)
            count += 1
            run_id = event["run_id"]
            if kind == "run_started":
                rows[run_id] = {
                    "agent": event["agent"],
                    "user": event["user_id"],
                    "status": "running",
                    "started": event["at"],
                    "turns": 0,
                    "cost": Decimal(0),
                    "tokens": 0,
                }
            elif kind == "turn_started":
                rows[run_id]["turns"] = event["turn"]
            elif kind == "model_call_responded":
                row = rows[run_id]
                row["cost"] += Decimal(event["cost_usd"])
                row["tokens"] += event["usage"]["input_tokens"] + event["usage"]["output_tokens"]
            elif kind == "run_completed":
                rows[run_id]["status"] = "completed"
                rows[run_id]["ended"] = event["at"]
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed, count


async def main(quick: bool) -> dict[str, object]:
    appends_1 = 2_000 if quick else 10_000
    appends_100 = 50 if quick else 200  # per writer
    baseline_commits = 5_000 if quick else 20_000
    runs = 10_000 if quick else 100_000  # ten events each
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = await append_rate(root / "one.db", 1, appends_1)
        hundred = await append_rate(root / "hundred.db", 100, appends_100)
        baseline = baseline_commit_rate(root / "baseline.db", root / "one.db", baseline_commits)
        total = await fill(root / "log.db", runs)
        gc.collect()
        typed, typed_count = await typed_read_fold(root / "log.db")
        gc.collect()
        raw, raw_count = orjson_read_fold(root / "log.db")
    assert typed_count == raw_count == total
    return {
        "benchmark": "store",
        "store": "sqlite (file, WAL, synchronous=NORMAL)",
        "quick": quick,
        "append_events_per_s_1_writer": round(one),
        "append_events_per_s_100_writers": round(hundred),
        "baseline_sqlite3_commit_per_event_per_s": round(baseline),
        "append_100_writers_vs_baseline": round(hundred / baseline, 2),
        "read_fold_events": total,
        "read_fold_events_per_s": round(typed),
        "baseline_orjson_fold_per_s": round(raw),
        "read_fold_vs_orjson": round(typed / raw, 2),
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke check")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, options.quick)))
