"""The ``agentledger`` commands as a user meets them: ``--db`` anywhere, read-only commands that
never create a database, one line and a stable exit status for every user error (never a
traceback), ``--json`` for scripts, values from the log never obeyed by the terminal (nor read
as rich markup). Real SQLite files; a few as real subprocesses, one on PostgreSQL."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from cli_runs import record_runs
from conftest import PG_DSN

from agentledger.engine import Agent, Engine
from agentledger.engine.cli import main
from agentledger.engine.testing import FakeClock, ScriptedModel, reply
from agentledger.events import SqliteEventStore

READ_COMMANDS = [
    ["runs"],
    ["show", "x"],
    ["conversation", "c"],
    ["spend", "ada"],
    ["critic", "a"],
    ["health"],
    ["tail"],
    ["projections", "rebuild"],
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "log.db"
    anyio.run(record_runs, path)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentledger.engine", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_command_and_the_exit_statuses() -> None:
    done = _cli("--help")
    assert done.returncode == 0
    commands = re.findall(r"^    (\S+)", done.stdout, flags=re.MULTILINE)
    assert commands == [
        "demo",
        "runs",
        "show",
        "conversation",
        "spend",
        "critic",
        "health",
        "projections",
        "replay",
        "fork",
        "whatif",
        "export",
        "import",
        "otel-export",
        "tail",
    ]
    assert "exit status: 0 ok; 1 not found" in done.stdout


@pytest.mark.parametrize(
    "setup",
    ["missing", "directory", "not sqlite", "foreign sqlite", "postgres down"],
)
def test_a_bad_db_is_one_line_and_exit_1_as_a_real_process(tmp_path: Path, setup: str) -> None:
    target = tmp_path / "log.db"
    if setup == "directory":
        target.mkdir()
    elif setup == "not sqlite":
        target.write_bytes(b"these are my notes, not a database\n" * 10)
    elif setup == "foreign sqlite":
        with sqlite3.connect(target) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
        conn.close()
    db = "postgresql://nobody@127.0.0.1:1/none" if setup == "postgres down" else str(target)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = _cli("runs", "--db", db)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("agentledger: error: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


@pytest.mark.parametrize("argv", READ_COMMANDS)
def test_read_commands_never_create_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    missing = tmp_path / "typo.db"
    code, out, err = _run(capsys, "--db", str(missing), *argv)
    assert code == 1 and out == ""
    assert err.startswith(f"agentledger: error: no database at {missing} ")
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_sqlite_database_is_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    code, _, err = _run(capsys, "--db", str(path), "runs")
    assert code == 1 and "without an agentledger event log" in err
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["notes"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "--status", "bogus"], "argument --status: invalid choice: 'bogus'"),
        (["runs", "--limit", "-1"], "argument --limit: must be at least 1, not -1"),
        (["runs", "--limit", "0"], "argument --limit: must be at least 1, not 0"),
        (["runs", "--since", "yesterday-ish"], "argument --since: not a time"),
        (["runs", "--since", "1h", "--until", "2h"], "started_until is before started_since"),
        (["show"], "the following arguments are required: RUN"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["projections", "rebuild", "nope"], "no projection named 'nope'"),
    ],
)
def test_usage_errors_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "--db", str(db), *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_usage_errors_exit_2_as_a_real_process(db: Path) -> None:
    done = _cli("runs", "--limit", "-1", "--db", str(db))
    assert done.returncode == 2 and "must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_db_goes_before_or_after_the_command(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _run(capsys, "--db", str(db), "runs", "--json")
    after = _run(capsys, "runs", "--json", "--db", str(db))
    assert before[0] == after[0] == 0
    assert json.loads(before[1]) == json.loads(after[1])
    # The one given after the command wins: it is the closer one.
    code, _, err = _run(capsys, "--db", str(db), "runs", "--db", str(db.parent / "nope.db"))
    assert code == 1 and "nope.db" in err


def test_runs_filters_and_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--db", str(db), "runs", "--json")
    assert code == 0
    runs = json.loads(out)
    # Newest first; all five from cli_runs (a FakeClock: later runs start later).
    assert [r["run_id"] for r in runs] == ["memory", "breaker", "capped", "failed", "fallback"]
    assert {r["status"] for r in runs} == {"completed", "failed", "budget_exceeded"}
    assert runs[2]["cost_usd"] == "0.00740000" and runs[2]["surface"] == "free"

    def ids(*argv: str) -> list[str]:
        code, out, _ = _run(capsys, "--db", str(db), "runs", "--json", *argv)
        assert code == 0
        return [r["run_id"] for r in json.loads(out)]

    assert ids("--status", "failed") == ["failed"]
    assert ids("--status", "budget_exceeded") == ["capped"]
    assert ids("--agent", "reader") == ["memory"]
    assert ids("--user", "bob") == []
    assert ids("--limit", "2") == ["memory", "breaker"]
    assert ids("f") == ["failed", "fallback"]  # an id prefix
    capped_at = runs[2]["started_at"]
    assert ids("--since", capped_at) == ["memory", "breaker", "capped"]
    assert ids("--until", capped_at) == ["failed", "fallback"]
    assert ids("--since", "1d") == []  # the runs are from 2026-01-01

    code, out, _ = _run(capsys, "--db", str(db), "runs", "--status", "failed")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "agent", "user"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:4] == ["failed", "doomed", "ada", "failed"]
    assert len(lines) == 3


def test_health_shows_tiers_and_their_breakers(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "--db", str(db), "health", "--json")
    assert code == 0
    tiers = {(t["tool"], t["tier"]): t for t in json.loads(out)}
    primary = tiers[("flaky", "primary")]
    assert (primary["successes"], primary["failures"], primary["failures_in_a_row"]) == (0, 1, 1)
    assert tiers[("flaky", "backup")]["successes"] == 2
    assert primary["breaker"] == "closed"  # 1 failure, the default threshold is 3
    # Judged by the breaker policy the run had (threshold 1, an hour), from far in the future...
    code, out, _ = _run(capsys, "--db", str(db), "health", "--json", "--threshold", "1")
    assert {(t["tool"], t["tier"]): t["breaker"] for t in json.loads(out)}[
        ("flaky", "primary")
    ] in ("half_open",)
    # ...and with a cooldown long enough to still be open now.
    code, out, _ = _run(capsys, "--db", str(db), "health", "--threshold", "1", "--cooldown", "1e10")
    row = next(
        line for line in out.splitlines() if line.startswith("flaky ") and " primary " in line
    )
    assert row.split()[:5] == ["flaky", "primary", "0", "1", "1"] and " open until " in row


def test_projections_rebuild_folds_everything_again(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "--db", str(db), "projections", "rebuild", "--json")
    assert code == 0
    rebuilt = {r["projection"]: r["events"] for r in json.loads(out)}
    assert set(rebuilt) == {"run_index", "spend", "critic_stats", "critic_runs", "tool_health"}
    with sqlite3.connect(db) as conn:
        (head,) = conn.execute("SELECT MAX(position) FROM events").fetchone()
    conn.close()
    assert set(rebuilt.values()) == {head}
    code, out, _ = _run(capsys, "--db", str(db), "projections", "rebuild", "run_index")
    assert code == 0 and out.splitlines()[2].split()[0] == "run_index"
    # The rebuilt index answers as before.
    code, out, _ = _run(capsys, "--db", str(db), "runs", "--json")
    assert len(json.loads(out)) == 5


def test_critic_counts_runs_not_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentledger.engine import Critic, RequiredKeywords

    async def record() -> None:
        answers = iter(["no keyword", "still none", "now with Lisbon", "Lisbon at once"])
        model = ScriptedModel(lambda request: reply(next(answers)))
        agent = Agent(name="guide", model=model, critic=Critic([RequiredKeywords(["Lisbon"])]))
        async with (
            SqliteEventStore(tmp_path / "c.db") as store,
            Engine(store, clock=FakeClock()) as e,
        ):
            first = await e.run(agent, "one", run_id="revised-twice")
            second = await e.run(agent, "two", run_id="first-time")
            assert (first.status, first.flagged, second.status) == ("completed", False, "completed")

    anyio.run(record)
    code, out, _ = _run(capsys, "--db", str(tmp_path / "c.db"), "critic", "guide", "--json")
    assert code == 0
    # Four verdicts (three on the revised run), but two runs: both accepted, one at once.
    assert json.loads(out) == {
        "agent": "guide",
        "runs": 2,
        "accepted": 2,
        "accepted_first_answer": 1,
        "flagged": 0,
        "checks": [{"check": "required_keywords", "runs": 2, "passed": 1}],
    }
    code, _, err = _run(capsys, "--db", str(tmp_path / "c.db"), "critic", "nobody")
    assert code == 1 and "no critic verdicts for agent 'nobody'" in err


async def _hostile(db: Path) -> None:
    evil = "\x1b]0;pwned\x07\x1b[31m"
    async with SqliteEventStore(db) as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(
            Agent(name="[bold red]agent[/]", model=ScriptedModel([reply(f"out {evil}")])),
            f"task {evil}",
            user_id="[link=http://evil]u[/link]",
            run_id="run-[blink]x",
        )
        assert result.status == "completed"


def test_on_a_terminal_log_values_are_neither_obeyed_nor_read_as_markup(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "log.db"
    anyio.run(_hostile, db)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("NO_COLOR", raising=False)
    for argv in (["runs"], ["show", "run-[blink]x"]):
        assert main(["--db", str(db), *argv]) == 0
        out = capsysbinary.readouterr().out
        assert b"\x1b[" in out  # rich did colour it: this is the terminal path
        assert b"\x1b]0;pwned" not in out and b"\x07" not in out and b"\x1b[31m" not in out
        assert b"\\x1b]0;pwned" in out or argv == ["runs"]
        assert b"[bold red]agent[/]" in out  # shown as written, not as bold red
    assert main(["--db", str(db), "runs"]) == 0
    assert b"[link=http://evil]u[/link]" in capsysbinary.readouterr().out


def test_in_a_pipe_there_are_no_colour_codes(db: Path) -> None:
    done = _cli("show", "breaker", "--db", str(db))
    assert done.returncode == 0 and "\x1b" not in done.stdout
    assert "tool_tier_skipped" in done.stdout


async def _pg_database() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return None
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None
    name = f"cli_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _pg_tables(url: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return [r["tablename"] for r in rows]


async def _pg_drop(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.mark.postgres
def test_a_postgresql_url_selects_that_store(capsys: pytest.CaptureFixture[str]) -> None:
    from agentledger.events import PostgresEventStore

    name = anyio.run(_pg_database)
    if name is None:
        pytest.skip(f"PostgreSQL is not answering at {PG_DSN}")
    url = PG_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        # Reading an empty database creates nothing there, as for a SQLite file.
        code, _, err = _run(capsys, "--db", url, "runs")
        assert code == 1 and "has no agentledger event log" in err
        assert anyio.run(_pg_tables, url) == []

        async def record() -> None:
            async with PostgresEventStore(url) as store, Engine(store, clock=FakeClock()) as e:
                agent = Agent(name="pg-agent", model=ScriptedModel([reply("from postgres")]))
                assert (await e.run(agent, "hi", run_id="pg-run")).status == "completed"

        anyio.run(record)
        code, out, _ = _run(capsys, "runs", "--json", "--db", url)
        assert code == 0
        (run,) = json.loads(out)
        assert (run["run_id"], run["agent"], run["status"]) == ("pg-run", "pg-agent", "completed")
        code, out, _ = _run(capsys, "--db", url, "show", "pg-")
        assert code == 0 and "run_completed 'from postgres'" in out
        done = _cli("show", "nope", "--db", url)
        assert done.returncode == 1 and done.stderr.count("\n") == 1
    finally:
        anyio.run(_pg_drop, name)


def test_tail_follow_prints_events_as_they_commit(tmp_path: Path) -> None:
    db = tmp_path / "log.db"

    async def record(run_id: str) -> None:
        async with SqliteEventStore(db) as store, Engine(store, clock=FakeClock()) as engine:
            agent = Agent(name="a", model=ScriptedModel([reply("hi")]))
            assert (await engine.run(agent, "x", run_id=run_id)).status == "completed"

    anyio.run(record, "before")
    follower = subprocess.Popen(
        [sys.executable, "-m", "agentledger.engine", "tail", "-f", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert (first["stream_id"], first["position"]) == ("run-before", 1)
        while json.loads(follower.stdout.readline())["event"]["type"] != "run_completed":
            pass
        anyio.run(record, "after")  # written by another process while tail -f waits
        line = json.loads(follower.stdout.readline())
        assert line["stream_id"] == "run-after" and line["event"]["type"] == "run_started"
    finally:
        follower.send_signal(signal.SIGINT)  # Ctrl-C: how a person stops tail -f
        code = follower.wait(timeout=10)
    assert code == 130
    assert b"Traceback" not in (follower.stderr.read() if follower.stderr else b"")


def test_the_cli_benchmark_times_every_command_it_names() -> None:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "cli.py"
    spec = importlib.util.spec_from_file_location("bench_cli", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.measure(runs=10, turns=4, repeat=1)
    assert figures["runs"] == 11 and figures["long_run_turns"] == 4
    # A run of k tool turns: started, (k + 1) x (turn, request, reply), k x (intent, result),
    # completed: 10 events for a short run (k = 1), 25 for the long one (k = 4).
    assert figures["events"] == 10 * 10 + 25
    for name in ("runs_cold_ms", "runs_ms", "show_long_ms", "context_ms", "startup_ms"):
        assert figures[name] > 0
    assert figures["rebuild_events_per_s"] > 0
