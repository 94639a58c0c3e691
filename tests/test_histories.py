"""Run histories: export from one store, import into another (SQLite and PostgreSQL both ways),
idempotent by event id, old schema versions lifted by upcasters, and clear errors for files that
are not histories."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from conftest import PG_DSN, _drop_pg_schema, _fresh_pg_schema, _postgres_reachable
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelRateLimitedError,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    EventCodec,
    EventStore,
    MemoryEventStore,
    NewEvent,
    RunStarted,
    SqliteEventStore,
    StreamAppend,
    TurnStarted,
    Usage,
)
from agentledger.projections import RunFilter, find_runs
from agentledger.replay import (
    HistoryConflictError,
    HistoryFormatError,
    HistoryRunNotFoundError,
    export_history,
    import_history,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets({"free": BudgetPolicy(per_run_usd=Decimal("1"), per_user_day_usd=Decimal("5"))})


class City(BaseModel):
    city: str


class Note(BaseModel):
    text: str


@tool
async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
    """Weather for a city."""
    raise ConnectionError("weather API down")


@weather.tier("cache")
async def cached(args: City, ctx: ToolContext) -> dict[str, str]:
    return {"city": args.city, "sky": "clear"}


@tool(side_effect=True, key_scope="user")
async def remember(args: Note, ctx: ToolContext) -> str:
    """Write a note (a side effect with an idempotency key per user)."""
    return "noted"


def make_agent(city: str = "Oslo") -> Agent:
    primary = ScriptedModel(
        [
            ModelRateLimitedError("primary", "slow down", retry_after=2.0),
            reply(
                tool_calls=[
                    call("weather", {"city": city}, id="c1"),
                    call("remember", {"text": city}, id="c2"),
                ],
                usage=Usage(input_tokens=120, output_tokens=30),
            ),
            reply(f"Clear skies in {city}.", usage=Usage(input_tokens=200, output_tokens=12)),
        ],
        name="primary",
        price=PRICE,
    )
    return Agent(
        name="forecaster", model=primary, system_prompt="You forecast.", tools=[weather, remember]
    )


async def record(store: EventStore, run_id: str, user: str = "ada", city: str = "Oslo") -> Agent:
    agent = make_agent(city)
    engine = Engine(store, clock=FakeClock(T0), ids=SequentialIds(run_id), budgets=BUDGETS)
    async with engine:
        result = await engine.run(agent, f"{city}?", run_id=run_id, user_id=user, surface="free")
    assert result.status == "completed"
    return make_agent(city)


async def everything(store: EventStore) -> list[tuple[str, int, str, str]]:
    events = await store.read_all(limit=100_000)
    return [(r.stream_id, r.version, r.event_id, r.event.model_dump_json()) for r in events]


async def replays_identically(store: EventStore, run_id: str, agent: Agent) -> None:
    async with Engine(store, budgets=BUDGETS) as engine:
        report = await engine.replay(run_id, agent=agent)
    assert report.divergence is None, report.divergence
    assert report.recorded_spend_usd == report.replayed_spend_usd > 0


@asynccontextmanager
async def sqlite_store(path: Path) -> AsyncIterator[EventStore]:
    async with SqliteEventStore(path) as store:
        yield store


@asynccontextmanager
async def postgres_store() -> AsyncIterator[EventStore]:
    if not await _postgres_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} and CI=true")
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}")
    from agentledger.events import PostgresEventStore

    schema = await _fresh_pg_schema()
    try:
        async with PostgresEventStore(PG_DSN, schema=schema) as store:
            yield store
    finally:
        await _drop_pg_schema(schema)


# -- export and import --------------------------------------------------------------------------


async def test_a_run_moves_to_an_empty_store_whole_and_replays_there(tmp_path: Path) -> None:
    file = tmp_path / "run.jsonl"
    async with sqlite_store(tmp_path / "a.db") as source:
        agent = await record(source, "r1")
        exported = await export_history(source, ["r1"], file)
        run_events = await source.read_stream("run-r1")
        original = await everything(source)
    # The run's stream, its day ledger entries and its key ledger entries: nothing else exists.
    assert exported.events == len(original) > len(run_events)
    assert exported.streams == 3 and exported.ledger_events_left_out == 0
    async with sqlite_store(tmp_path / "b.db") as target:
        report = await import_history(target, file)
        assert (report.runs, report.events_imported, report.events_already_there) == (
            ["r1"],
            len(original),
            0,
        )
        assert await everything(target) == original
        await replays_identically(target, "r1", agent)


async def test_a_second_import_adds_nothing(tmp_path: Path) -> None:
    file = tmp_path / "run.jsonl"
    async with sqlite_store(tmp_path / "a.db") as source:
        await record(source, "r1")
        exported = await export_history(source, ["r1"], file)
    async with sqlite_store(tmp_path / "b.db") as target:
        await import_history(target, file)
        before = await everything(target)
        again = await import_history(target, file)
        assert (again.events_imported, again.events_already_there) == (0, exported.events)
        assert await everything(target) == before
    # Into the store the run came from: everything is there already.
    async with sqlite_store(tmp_path / "a.db") as source:
        back = await import_history(source, file)
        assert (back.events_imported, back.events_already_there) == (0, exported.events)


async def test_an_import_cut_short_is_finished_by_importing_again(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    async with sqlite_store(tmp_path / "a.db") as source:
        await record(source, "r1")
        exported = await export_history(source, ["r1"], buffer)
        original = await everything(source)
    lines = buffer.getvalue().splitlines(keepends=True)
    async with sqlite_store(tmp_path / "b.db") as target:
        # What a crashed import left: the first 7 events, appended as the import appends them.
        half = io.BytesIO(_header_for(lines[0], 7) + b"".join(lines[1:8]))
        assert (await import_history(target, half)).events_imported == 7
        rest = await import_history(target, io.BytesIO(buffer.getvalue()))
        assert (rest.events_imported, rest.events_already_there) == (exported.events - 7, 7)
        assert await everything(target) == original


def _header_for(header: bytes, events: int) -> bytes:
    raw = orjson.loads(header)
    raw["events"] = events
    return orjson.dumps(raw) + b"\n"


async def test_import_into_a_used_store_keeps_what_is_there(tmp_path: Path) -> None:
    file = tmp_path / "run.jsonl"
    async with sqlite_store(tmp_path / "a.db") as source:
        agent = await record(source, "r1", user="ada", city="Oslo")
        await export_history(source, ["r1"], file)
    async with sqlite_store(tmp_path / "b.db") as target:
        other = await record(target, "r0", user="bob", city="Rome")
        before = await everything(target)
        await import_history(target, file)
        after = await everything(target)
        assert after[: len(before)] == before
        await replays_identically(target, "r1", agent)
        await replays_identically(target, "r0", other)


@pytest.mark.parametrize("direction", ["sqlite->postgres->sqlite", "postgres->sqlite->postgres"])
async def test_histories_cross_sqlite_and_postgres_both_ways(
    tmp_path: Path, direction: str
) -> None:
    stores: dict[str, Callable[[int], AbstractAsyncContextManager[EventStore]]] = {
        "sqlite": lambda n: sqlite_store(tmp_path / f"{n}.db"),
        "postgres": lambda n: postgres_store(),
    }
    first, second, third = direction.split("->")
    async with stores[first](1) as source:
        agent = await record(source, "r1")
        await export_history(source, ["r1"], tmp_path / "one.jsonl")
        original = await everything(source)
    async with stores[second](2) as middle:
        await import_history(middle, tmp_path / "one.jsonl")
        assert await everything(middle) == original
        await replays_identically(middle, "r1", agent)
        await export_history(middle, ["r1"], tmp_path / "two.jsonl")
    async with stores[third](3) as last:
        report = await import_history(last, tmp_path / "two.jsonl")
        assert report.events_imported == len(original)
        assert await everything(last) == original
        await replays_identically(last, "r1", agent)


async def test_runs_are_chosen_by_user_and_agent_and_ledgers_name_what_was_left_out(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path / "a.db") as source:
        await record(source, "r1", user="ada", city="Oslo")
        await record(source, "r2", user="bob", city="Rome")
        await record(source, "r3", user="ada", city="Lima")
        by_ada = RunFilter(user_id="ada", agent="forecaster")
        # r3 shares ada's day ledger with r1: r1's entries there are left out of r3 alone.
        alone = await export_history(source, ["r3"], tmp_path / "r3.jsonl")
        together = await export_history(source, by_ada, tmp_path / "ada.jsonl")
        nobody = await export_history(source, RunFilter(agent="else"), tmp_path / "none.jsonl")
        day = await source.read_stream("budget-ada-2026-03-01")
    r1_entries = sum(1 for r in day if r.event.run_id == "r1")
    assert r1_entries > 0
    assert alone.ledger_events_left_out == r1_entries
    assert together.runs == ["r1", "r3"] and together.ledger_events_left_out == 0
    assert nobody.runs == [] and nobody.events == 0
    async with sqlite_store(tmp_path / "b.db") as target:
        await import_history(target, tmp_path / "ada.jsonl")
        assert [row.run_id for row in await find_runs(target)] == ["r1", "r3"]
        assert len(await target.read_stream("budget-ada-2026-03-01")) == len(day)


async def test_exporting_an_unknown_run_names_it(tmp_path: Path) -> None:
    async with MemoryEventStore() as store:
        with pytest.raises(HistoryRunNotFoundError, match="'nope'"):
            await export_history(store, ["nope"], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


# -- conflicts ----------------------------------------------------------------------------------


def _turn(run_id: str, turn: int) -> TurnStarted:
    return TurnStarted(run_id=run_id, span_id="s", at=T0, turn=turn)


async def test_an_event_id_held_with_other_content_is_a_conflict(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    async with MemoryEventStore() as source:
        await source.append(StreamAppend("run-r1", [NewEvent(_turn("r1", 1), "e1")]))
        await export_history(source, ["r1"], buffer)
    async with MemoryEventStore() as target:
        await target.append(StreamAppend("run-r9", [NewEvent(_turn("r9", 1), "e1")]))
        with pytest.raises(HistoryConflictError, match="'e1' is already in this store"):
            await import_history(target, io.BytesIO(buffer.getvalue()))
        assert await target.stream_version("run-r1") == 0


async def test_a_run_id_taken_by_another_run_is_a_conflict(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    async with MemoryEventStore() as source:
        await source.append(StreamAppend("run-r1", [NewEvent(_turn("r1", 1), "e1")]))
        await export_history(source, ["r1"], buffer)
    async with MemoryEventStore() as target:
        await target.append(StreamAppend("run-r1", [NewEvent(_turn("r1", 1), "other")]))
        with pytest.raises(HistoryConflictError, match="another run with this id"):
            await import_history(target, io.BytesIO(buffer.getvalue()))
        assert await target.get_event("e1") is None


# -- format errors ------------------------------------------------------------------------------

SECRET = "sk-live-do-not-print-me"


async def _valid_history() -> list[bytes]:
    buffer = io.BytesIO()
    async with MemoryEventStore() as source:
        started = RunStarted(
            run_id="r1", span_id="s", at=T0, agent="a", model="m", task=SECRET, user_id="u"
        )
        await source.append(
            StreamAppend("run-r1", [NewEvent(started, "e1"), NewEvent(_turn("r1", 1), "e2")])
        )
        await export_history(source, ["r1"], buffer)
    return buffer.getvalue().splitlines(keepends=True)


def _edit(line: bytes, **changes: Any) -> bytes:
    raw = orjson.loads(line)
    for key, value in changes.items():
        if value is ...:
            del raw[key]
        else:
            raw[key] = value
    return orjson.dumps(raw) + b"\n"


BROKEN: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "empty file": lambda ls: [],
    "plain text": lambda ls: [f"hello {SECRET}\n".encode()],
    "a JSON-lines event log, not a history": lambda ls: ls[1:],
    "a newer format": lambda ls: [_edit(ls[0], agentledger_history=2), *ls[1:]],
    "invalid JSON in an event line": lambda ls: [ls[0], ls[1][:-9] + b"\n", ls[2]],
    "a version missing": lambda ls: [ls[0], _edit(ls[1], version=...), ls[2]],
    "a gap in the run's versions": lambda ls: [ls[0], ls[1], _edit(ls[2], version=3)],
    "an unknown event type": lambda ls: [ls[0], ls[1], _edit(ls[2], type=SECRET)],
    "an event not valid for its type": lambda ls: [
        ls[0],
        _edit(ls[1], event={**orjson.loads(ls[1])["event"], "user_id": [SECRET]}),
        ls[2],
    ],
    "a run not in the header": lambda ls: [_edit(ls[0], runs=["r2"]), *ls[1:]],
    "a run of the header without events": lambda ls: [_edit(ls[0], runs=["r1", "r2"]), *ls[1:]],
    "a cut-off file": lambda ls: ls[:2],
    "a blank line": lambda ls: [ls[0], b"\n", *ls[1:]],
}
WHERE = {
    "empty file": 1,
    "plain text": 1,
    "a JSON-lines event log, not a history": 1,
    "a newer format": 1,
    "invalid JSON in an event line": 2,
    "a version missing": 2,
    "a gap in the run's versions": 3,
    "an unknown event type": 3,
    "an event not valid for its type": 2,
    "a run not in the header": 2,
    "a run of the header without events": 1,
    "a cut-off file": 2,
    "a blank line": 2,
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_a_file_that_is_not_a_valid_history_is_refused_in_one_line(case: str) -> None:
    lines = BROKEN[case](await _valid_history())
    async with MemoryEventStore() as target:
        with pytest.raises(HistoryFormatError) as caught:
            await import_history(target, io.BytesIO(b"".join(lines)))
        assert await target.head_position() == 0  # nothing written
    message = str(caught.value)
    assert caught.value.line == WHERE[case]
    assert message.startswith(f"line {WHERE[case]} of the history: ")
    assert "\n" not in message and SECRET not in message and len(message) < 300


# -- schema versions ----------------------------------------------------------------------------


async def test_old_schema_versions_are_lifted_by_the_upcasters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = await _valid_history()
    # A file written when run_started was at schema version 1 and called its task "goal".
    old = orjson.loads(lines[1])
    old["event"]["goal"] = old["event"].pop("task")
    lines[1] = _edit(lines[1], schema_version=1, event=old["event"])
    monkeypatch.setattr(RunStarted, "schema_version", 2)

    codec = EventCodec()
    async with SqliteEventStore(tmp_path / "b.db", codec=codec) as target:
        with pytest.raises(HistoryFormatError, match=r"line 2 .*no upcaster"):
            await import_history(target, io.BytesIO(b"".join(lines)), codec=codec)

        def upcast(raw: dict[str, Any]) -> dict[str, Any]:
            raw = dict(raw)
            raw["task"] = raw.pop("goal")
            return raw

        codec.register_upcaster("run_started", 1, upcast)
        report = await import_history(target, io.BytesIO(b"".join(lines)), codec=codec)
        assert report.events_imported == 2
        stored = await target.read_stream("run-r1")
    assert stored[0].schema_version == 2  # written again in the current shape
    started = stored[0].event
    assert isinstance(started, RunStarted) and started.task == SECRET


# -- the benchmark, small ------------------------------------------------------------------------


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_histories", Path(__file__).resolve().parent.parent / "benchmarks" / "histories.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_histories_benchmark_moves_every_event_and_reports_its_rates() -> None:
    figures = await _benchmark().measure(runs=6)  # it checks the imported stores itself
    # Each run: its stream, plus its day-ledger and key-ledger entries.
    assert figures["runs"] == 6 and figures["events"] == 6 * 30
    for name in ("export_events_per_s", "import_events_per_s", "reimport_events_per_s"):
        assert figures[name] > 0
