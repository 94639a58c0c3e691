"""Run histories: export and import throughput, SQLite to SQLite and SQLite to PostgreSQL.

Records ``--runs`` runs of a small scripted agent (a rate limit retried, a tool whose first
tier fails, a side effect with an idempotency key, a budget: every run writes its stream, a day
ledger and a key ledger) into an SQLite file, then measures:

- ``export_events_per_s``: ``export_history`` of every run to a file;
- ``import_events_per_s``: ``import_history`` of that file into an empty SQLite file;
- ``reimport_events_per_s``: the same file again into that store (every event already there:
  each is looked up and compared, nothing is appended);
- ``postgres_import_events_per_s`` / ``postgres_reimport_events_per_s``: the same into a fresh
  PostgreSQL schema (``AGENTLEDGER_PG_DSN``; ``null`` when no server answers).

The imported store is checked to hold exactly the exported events (streams, versions, ids,
content) before any figure is printed.

    python benchmarks/histories.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelRateLimitedError,
    ModelReply,
    ModelRequest,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import EventStore, SqliteEventStore, Usage
from agentledger.replay import export_history, import_history

PG_DSN = os.environ.get("AGENTLEDGER_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets({"default": BudgetPolicy(per_run_usd=Decimal("1"))})


class City(BaseModel):
    city: str


@tool
async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
    """Weather for a city."""
    raise ConnectionError("weather API down")


@weather.tier("cache")
async def cached(args: City, ctx: ToolContext) -> dict[str, str]:
    return {"city": args.city, "sky": "clear"}


@tool(side_effect=True)
async def note(args: City, ctx: ToolContext) -> str:
    """Note a city down."""
    return "noted"


def agent() -> Agent:
    asked: set[str] = set()

    def script(request: ModelRequest) -> ModelReply | Exception:
        if not any(m.role == "assistant" for m in request.messages):
            if request.messages[-1].content not in asked:  # the first attempt is rate limited
                asked.add(request.messages[-1].content)
                return ModelRateLimitedError("primary", "slow down", retry_after=1.0)
            calls = [
                call("weather", {"city": "Oslo"}, id="c1"),
                call("note", {"city": "Oslo"}, id="c2"),
            ]
            return reply(tool_calls=calls, usage=Usage(input_tokens=120, output_tokens=30))
        return reply("Clear in Oslo.", usage=Usage(input_tokens=200, output_tokens=12))

    model = ScriptedModel(script, name="primary", price=PRICE)  # type: ignore[arg-type]
    return Agent(name="bench", model=model, system_prompt="You forecast.", tools=[weather, note])


async def record(store: EventStore, runs: int) -> list[str]:
    run_ids = [f"r{n}" for n in range(runs)]
    async with Engine(store, clock=FakeClock(T0), ids=SequentialIds("b"), budgets=BUDGETS) as e:
        for n, run_id in enumerate(run_ids):
            await e.run(agent(), f"Oslo? ({n})", run_id=run_id, user_id=f"u{n % 10}")
    return run_ids


async def everything(store: EventStore) -> list[tuple[str, int, str, str]]:
    events = await store.read_all(limit=10_000_000)
    return [(r.stream_id, r.version, r.event_id, r.event.model_dump_json()) for r in events]


async def timed_imports(store: EventStore, file: Path, want: list[Any]) -> tuple[float, float]:
    start = time.perf_counter()
    first = await import_history(store, file)
    imported = time.perf_counter() - start
    assert first.events_imported == len(want), first
    assert await everything(store) == want, "the import differs from the export"
    start = time.perf_counter()
    again = await import_history(store, file)
    reimported = time.perf_counter() - start
    assert (again.events_imported, again.events_already_there) == (0, len(want)), again
    return len(want) / imported, len(want) / reimported


async def postgres(file: Path, want: list[Any]) -> tuple[float, float] | None:
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (ImportError, OSError, Exception):
        return None
    from agentledger.events import PostgresEventStore

    schema = f"bench_hist_{os.getpid()}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        async with PostgresEventStore(PG_DSN, schema=schema) as store:
            return await timed_imports(store, file, want)
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def measure(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        file = folder / "history.jsonl"
        async with SqliteEventStore(folder / "source.db") as source:
            run_ids = await record(source, runs)
            want = await everything(source)
            start = time.perf_counter()
            exported = await export_history(source, run_ids, file)
            export_s = time.perf_counter() - start
        assert exported.events == len(want)
        async with SqliteEventStore(folder / "target.db") as target:
            sqlite_in, sqlite_again = await timed_imports(target, file, want)
        pg = await postgres(file, want)
        return {
            "runs": runs,
            "events": exported.events,
            "file_bytes": file.stat().st_size,
            "export_events_per_s": round(exported.events / export_s),
            "import_events_per_s": round(sqlite_in),
            "reimport_events_per_s": round(sqlite_again),
            "postgres_import_events_per_s": round(pg[0]) if pg else None,
            "postgres_reimport_events_per_s": round(pg[1]) if pg else None,
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs to record and move")
    options = parser.parse_args()
    print(json.dumps(anyio.run(measure, options.runs)))
