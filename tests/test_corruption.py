"""Damaged rows on a real SQLite file (changed with ``sqlite3`` behind the store's back): the
checksum finds them, the error names the event and never its bytes, the run is parked and
everything else goes on: other runs, the run index, ``agentledger runs``/``show``/``tail``.
Also: values from the log never reach the terminal with their control characters."""

from __future__ import annotations

import functools
import sqlite3
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from agentledger.engine import Agent, BudgetPolicy, Budgets, Engine, Price, RunParkedError
from agentledger.engine.cli import main
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, reply
from agentledger.events import (
    CorruptEventError,
    SqliteEventStore,
    UnknownEventTypeError,
    event_checksum,
)
from agentledger.projections import ProjectionRunner, RunIndex, parked_runs

PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
SECRET = "s3cret-payload-\x1b[2J"


def _agent(name: str = "helper") -> Agent:
    model = ScriptedModel(lambda request: reply(f"done: {SECRET}"))
    return Agent(name=name, model=model, prices={model.name: PRICE})


async def _record_runs(db: Path, *run_ids: str) -> None:
    async with SqliteEventStore(db) as store, Engine(store, clock=FakeClock()) as engine:
        for run_id in run_ids:
            result = await engine.run(_agent(), "Do it.", user_id="ada", run_id=run_id)
            assert result.status == "completed"


def _sql(db: Path, statement: str, *parameters: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(statement, parameters).fetchall()


def _damage(db: Path, stream_id: str, version: int) -> None:
    """Flip bytes of one stored payload, leaving valid JSON (only the checksum can tell)."""
    (data,) = _sql(
        db, "SELECT data FROM events WHERE stream_id = ? AND version = ?", stream_id, version
    )[0]
    assert isinstance(data, bytes) and b'"at":"2026-01-01T' in data
    changed = data.replace(b'"at":"2026-01-01T', b'"at":"2026-01-02T')
    _sql(
        db,
        "UPDATE events SET data = ? WHERE stream_id = ? AND version = ?",
        changed,
        stream_id,
        version,
    )


async def test_every_row_carries_a_checksum_and_rows_without_one_read_as_legacy(
    tmp_path: Path,
) -> None:
    db = tmp_path / "log.db"
    await _record_runs(db, "r1")
    rows = _sql(db, "SELECT stream_id, version, type, schema_version, data, checksum FROM events")
    assert rows and all(
        checksum == event_checksum(stream, version, kind, schema, data)  # type: ignore[arg-type]
        for stream, version, kind, schema, data, checksum in rows
    )
    _sql(db, "UPDATE events SET checksum = NULL")
    async with SqliteEventStore(db) as store:
        assert [r.event.type for r in await store.read_stream("run-r1")]


async def test_a_database_made_before_checksums_opens_and_gets_the_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    await _record_runs(db, "r1")
    _sql(db, "ALTER TABLE events DROP COLUMN checksum")
    async with SqliteEventStore(db) as store:
        old = await store.read_stream("run-r1")
        assert old[-1].event.type == "run_completed"
    assert "checksum" in {row[1] for row in _sql(db, "PRAGMA table_info(events)")}
    await _record_runs(db, "r2")  # new rows get one, old rows stay legacy
    assert _sql(db, "SELECT count(*) FROM events WHERE checksum IS NULL")[0][0] == len(old)
    assert _sql(
        db, "SELECT count(*) FROM events WHERE stream_id = 'run-r2' AND checksum IS NULL"
    ) == [(0,)]


async def test_a_damaged_row_names_its_event_and_never_its_bytes(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _record_runs(db, "r1")
    _damage(db, "run-r1", 1)
    async with SqliteEventStore(db) as store:
        events = await store.read_stream("run-r1")  # reading is fine: the row is marked
        assert events[0].damage is not None and events[1].damage is None
        with pytest.raises(CorruptEventError) as caught:
            events[0].event  # noqa: B018
    error = caught.value
    assert (error.stream_id, error.version, error.position) == ("run-r1", 1, events[0].position)
    assert "checksum mismatch" in str(error)
    assert "2026" not in str(error) and "Do it" not in str(error)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"type": "run_started", "task": "s3cret-payload-', "invalid JSON"),
        (b'{"type": "run_started", "task": "s3cret-payload-\\u001b[2J"}', "not a valid event"),
        (b'{"type": "s3cret-payload-", "x": 1}', "not a valid event"),
    ],
)
async def test_legacy_rows_that_do_not_decode_raise_corrupt_without_their_bytes(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    db = tmp_path / "log.db"
    await _record_runs(db, "r1")
    _sql(
        db,
        "UPDATE events SET data = ?, checksum = NULL WHERE stream_id = 'run-r1' AND version = 1",
        data,
    )
    async with SqliteEventStore(db) as store:
        (first, *_) = await store.read_stream("run-r1")
        with pytest.raises(CorruptEventError) as caught:
            first.event  # noqa: B018
    assert reason in str(caught.value) and "'run-r1'@1" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "\x1b" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_damaged_type_column_is_damage_not_an_unknown_type(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _record_runs(db, "r1")
    _sql(db, "UPDATE events SET type = 'run_stArted' WHERE stream_id = 'run-r1' AND version = 1")
    async with SqliteEventStore(db) as store:
        (first, *_) = await store.read_stream("run-r1")  # no UnknownEventTypeError here
        with pytest.raises(CorruptEventError):
            first.event  # noqa: B018
    # Without a checksum the same row is what it says: an unknown type, which stops loudly.
    _sql(db, "UPDATE events SET checksum = NULL WHERE stream_id = 'run-r1' AND version = 1")
    async with SqliteEventStore(db) as store:
        with pytest.raises(UnknownEventTypeError):
            await store.read_stream("run-r1")


async def test_a_damaged_event_parks_its_run_and_the_others_go_on(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await _record_runs(db, "bad", "good")
    _damage(db, "run-bad", 2)
    async with SqliteEventStore(db) as store:
        async with Engine(store, clock=FakeClock(), ids=SequentialIds("new")) as engine:
            fork_past_it = functools.partial(engine.fork, at_version=3)
            for call in (engine.load, engine.result, engine.resume, fork_past_it):
                with pytest.raises(RunParkedError) as caught:
                    await call("bad")
                parked = caught.value
                assert (parked.run_id, parked.stream_id, parked.version) == ("bad", "run-bad", 2)
                assert "checksum mismatch" in str(parked) and "2026" not in str(parked)
            assert (await engine.result("good")).status == "completed"
            assert (await engine.run(_agent(), "Again.", user_id="ada")).status == "completed"
        async with ProjectionRunner(store, RunIndex()) as runner:
            await runner.catch_up()
            assert set(parked_runs(runner.parked)) == {"bad"}
            assert runner.rows["good"].status == "completed" and len(runner.rows) == 3
        # The parked stream is saved with the checkpoint: a new runner knows it without re-reading.
        async with ProjectionRunner(store, RunIndex()) as runner:
            assert set(parked_runs(runner.parked)) == {"bad"}
            assert await runner.catch_up() == 0


async def test_a_damaged_budget_ledger_parks_the_run_that_reads_it(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    budgets = Budgets(
        {"default": BudgetPolicy(per_run_usd=Decimal(1), per_user_day_usd=Decimal(5))}
    )
    async with (
        SqliteEventStore(db) as store,
        Engine(store, clock=FakeClock(), budgets=budgets) as engine,
    ):
        await engine.run(_agent(), "Do it.", user_id="ada", run_id="r1")
    (stream,) = _sql(db, "SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE 'budget-%'")[0]
    _sql(
        db, "UPDATE events SET checksum = checksum + 1 WHERE stream_id = ? AND version = 1", stream
    )
    async with (
        SqliteEventStore(db) as store,
        Engine(store, clock=FakeClock(), budgets=budgets) as engine,
    ):
        with pytest.raises(RunParkedError) as caught:
            await engine.run(_agent(), "Do it.", user_id="ada", run_id="r2")
        assert caught.value.stream_id == stream
        # Another user's runs are not touched by it.
        assert (await engine.run(_agent(), "Do it.", user_id="bob")).status == "completed"


def test_cli_lists_shows_and_tails_past_a_damaged_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    db = tmp_path / "log.db"
    anyio.run(_record_runs, db, "bad", "good")
    _damage(db, "run-bad", 1)

    assert main(["--db", str(db), "runs"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert any(line.startswith("bad ") and " parked " in line for line in lines)
    assert any(line.startswith("good ") and " completed " in line for line in lines)
    assert any(line.startswith("parked bad: ") and "'run-bad'@1" in line for line in lines)
    assert "Traceback" not in err

    assert main(["--db", str(db), "runs", "--status", "parked"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows[0].startswith("bad ") and not any(r.startswith("good ") for r in rows)

    # Damage after the run index folded the event (its checkpoint is past it) is found too.
    _damage(db, "run-good", 2)
    for argv in (["runs"], ["runs", "--status", "completed"]):
        assert main(["--db", str(db), *argv]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert not any(line.startswith("good ") and " completed " in line for line in lines)
        if argv == ["runs"]:
            assert any(
                line.startswith("parked good: ") and "'run-good'@2" in line for line in lines
            )

    assert main(["--db", str(db), "show", "bad"]) == 0
    out = capsys.readouterr().out
    assert "(corrupt)" in out and "run_completed" in out and "parked bad: " in out

    assert main(["--db", str(db), "tail"]) == 0
    out, err = capsys.readouterr()
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["position"] for line in lines] == list(range(1, len(lines) + 1))
    assert ["corrupt" in line for line in lines].count(True) == 2  # bad@1 and good@2
    assert "'run-bad'@1" in err and "Traceback" not in err


def test_a_broken_database_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not a database" * 100)
    assert main(["--db", str(db), "runs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("agentledger: error: ") and err.count("\n") == 1


async def _hostile_run(db: Path) -> None:
    evil = "\x1b]0;pwned\x07\x1b[31m"
    async with SqliteEventStore(db) as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(
            Agent(name="agent\u202eevil", model=ScriptedModel([reply(f"out {evil}\x9b2J")])),
            f"task {evil}",
            user_id="user\x9b31m\u202e",
            run_id="run\u2028x",
        )
        assert result.status == "completed"


def test_cli_escapes_control_characters_from_the_log(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    import anyio

    db = tmp_path / "log.db"
    anyio.run(_hostile_run, db)
    unsafe = (b"\x1b", b"\x07", b"\xc2\x9b", "\u202e".encode(), "\u2028".encode())
    for argv in (["runs"], ["show", "run\u2028x"]):
        assert main(["--db", str(db), *argv]) == 0
        out = capsysbinary.readouterr().out
        assert not any(byte in out for byte in unsafe), argv
        assert b"\\x1b" in out or b"\\x9b" in out
    assert main(["--db", str(db), "tail"]) == 0
    out = capsysbinary.readouterr().out
    assert not any(byte in out for byte in unsafe)
    started = orjson.loads(out.splitlines()[0])["event"]
    assert started["user_id"] == "user\x9b31m\u202e"  # still the exact value, as JSON
    assert started["task"] == "task \x1b]0;pwned\x07\x1b[31m"


async def test_tool_health_folds_past_a_damaged_outcome(tmp_path: Path) -> None:
    from pydantic import BaseModel

    from agentledger.engine import ToolContext, tool
    from agentledger.engine.testing import call
    from agentledger.projections import ToolHealthRows, ToolHealthView

    class Query(BaseModel):
        q: str

    @tool
    async def lookup(args: Query, ctx: ToolContext) -> str:
        """Look something up."""
        return args.q

    def script(request: object) -> object:
        answered = any(m.role == "tool" for m in request.messages)  # type: ignore[attr-defined]
        return reply("ok") if answered else reply(tool_calls=[call("lookup", {"q": "a"})])

    model = ScriptedModel(script)  # type: ignore[arg-type]
    agent = Agent(name="a", model=model, tools=[lookup], prices={model.name: PRICE})
    db = tmp_path / "log.db"
    async with SqliteEventStore(db) as store, Engine(store, clock=FakeClock()) as engine:
        for run_id in ("r1", "r2"):
            assert (await engine.run(agent, "Go.", run_id=run_id)).status == "completed"
    _sql(
        db,
        "UPDATE events SET checksum = checksum + 1 "
        "WHERE stream_id = 'run-r1' AND type = 'tool_call_succeeded'",
    )
    async with SqliteEventStore(db) as store:
        view = ToolHealthView(store)
        await view.refresh()
        assert view.position == await store.head_position()
        assert view.state == (await _health_without(store, "run-r1"))
        async with ProjectionRunner(store, ToolHealthRows()) as runner:
            await runner.catch_up()
            assert set(parked_runs(runner.parked)) == {"r1"}
        async with Engine(store, clock=FakeClock()) as engine:
            assert (await engine.run(agent, "Go.", run_id="r3")).status == "completed"


async def _health_without(store: SqliteEventStore, stream_id: str) -> object:
    from agentledger.projections import ToolHealthProjection, fold

    events = [e for e in await store.read_all() if e.damage is None]
    return fold(ToolHealthProjection(), events)
