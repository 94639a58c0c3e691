"""``replay``, ``fork``, ``whatif``, ``export``/``import`` and ``otel-export`` from the command
line, on runs of the demo's agent in a real SQLite file; other agents come from ``--agents``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from agentledger.engine import Engine
from agentledger.engine.cli import main
from agentledger.events import SqliteEventStore

CHANGED_AGENTS = '''
from dataclasses import replace

from agentledger.engine.cli._demo import demo_agent


def changed():
    """The demo's agent with another system prompt: its requests differ from the log's."""
    return [replace(demo_agent(), system_prompt="You plan trips. Always name the city.")]


def no_sends():
    """The demo's agent without its side-effecting tool (safe for a what-if)."""
    base = demo_agent()
    return replace(base, tools=[t for t in base.tools if not t.side_effect])


NOT_AN_AGENT = 42
'''


async def _record(db: Path) -> None:
    """Two runs of the demo's agent for one user, as ``agentledger demo`` records them (the
    demo command itself may record more; these tests count on exactly these two)."""
    from agentledger.engine.cli._demo import DEMO_BUDGETS, demo_agent

    agent = demo_agent()
    async with SqliteEventStore(db) as store, Engine(store, budgets=DEMO_BUDGETS) as engine:
        for _ in range(2):
            result = await engine.run(
                agent, "Plan my weekend in Lisbon", user_id="ada", surface="demo"
            )
            assert result.status == "completed", result.error


def _demo_log(folder: Path) -> Path:
    db = folder / "demo.db"
    anyio.run(_record, db)
    (folder / "my_agents.py").write_text(CHANGED_AGENTS)
    return db


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _demo_log(tmp_path_factory.mktemp("demo"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _runs(capsys: pytest.CaptureFixture[str], db: Path) -> list[dict[str, object]]:
    code, out, _ = _run(capsys, "--db", str(db), "runs", "--json")
    assert code == 0
    runs: list[dict[str, object]] = json.loads(out)
    return runs


def test_replay_all_of_the_demo_is_identical(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "--db", str(demo), "replay", "--all", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True and report["identical"] == report["total"] >= 2
    first = str(_runs(capsys, demo)[-1]["run_id"])
    code, out, _ = _run(capsys, "--db", str(demo), "replay", first[-4:])
    assert code == 0 and out.startswith("replayed 1 run: 1 identical, 0 divergent")


def test_a_changed_agent_diverges_and_exits_1(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = f"{demo.parent / 'my_agents.py'}:changed"
    code, out, _ = _run(capsys, "--db", str(demo), "replay", "--all", "--agents", agents)
    assert code == 1
    diverged = [line for line in out.splitlines() if line.startswith("diverged ")]
    total = len(_runs(capsys, demo))  # every run, whatever recorded them
    assert len(diverged) == total and all("(travel-assistant) at v1:" in d for d in diverged)
    assert f"0 identical, {total} divergent" in out
    # The same as a real process: the exit status is what a deploy gate reads.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentledger.engine",
            "replay",
            "--all",
            "--agents",
            agents,
            "--db",
            str(demo),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and f"{total} divergent" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ("nope_no_such_module:x", "--agents: importing nope_no_such_module failed"),
        ("my_agents.py", "--agents takes MODULE:NAME"),
        ("{dir}/my_agents.py:missing", "has no 'missing'"),
        ("{dir}/my_agents.py:NOT_AN_AGENT", "is a int, not an Agent"),
    ],
)
def test_bad_agents_are_usage_errors(
    demo: Path, capsys: pytest.CaptureFixture[str], agents: str, message: str
) -> None:
    spec = agents.format(dir=demo.parent)
    code, out, err = _run(capsys, "--db", str(demo), "replay", "--all", "--agents", spec)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_replay_needs_runs_or_all(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--db", str(demo), "replay")
    assert code == 2 and "name the runs" in err
    code, _, err = _run(capsys, "--db", str(demo), "replay", "x", "--all")
    assert code == 2 and "not both" in err
    code, _, err = _run(capsys, "--db", str(demo), "replay", "--all", "--user", "nobody")
    assert code == 1 and "no runs matched" in err


def test_fork_continues_live_and_records_its_lineage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _demo_log(tmp_path)
    original = str(_runs(capsys, db)[-1]["run_id"])
    code, out, _ = _run(capsys, "--db", str(db), "show", original, "--json")
    turns = [e for e in json.loads(out)["events"] if e["event"]["type"] == "turn_started"]
    at = str(turns[1]["version"])  # the fork starts at the second turn
    code, out, err = _run(capsys, "--db", str(db), "fork", original, "--at", at, "--json")
    assert code == 0, err
    forked = json.loads(out)
    assert forked["status"] == "completed" and "Lisbon" in forked["output"]
    rows = {r["run_id"]: r for r in _runs(capsys, db)}
    assert rows[forked["fork_id"]]["forked_from"] == original
    code, out, _ = _run(capsys, "--db", str(db), "show", forked["fork_id"])
    assert f"forked from {original} at v{at}" in out
    # Versions 1 to the second turn's start were copied: the fork starts from that turn.
    assert f"v{at} turn 2" in out
    code, _, err = _run(capsys, "--db", str(db), "fork", original, "--at", "999")
    assert code == 1 and err.startswith("agentledger: error: ") and err.count("\n") == 1
    code, out, _ = _run(capsys, "--db", str(db), "fork", original, "--at", at, "--copy-only")
    assert code == 0 and "copied only" in out


def test_whatif_compares_old_and_new_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _demo_log(tmp_path)
    changed = f"{tmp_path / 'my_agents.py'}:changed"
    code, _, err = _run(capsys, "--db", str(db), "whatif", "--all", "--agents", changed)
    assert code == 2 and "--allow-side-effects" in err  # the demo agent sends email
    code, out, err = _run(
        capsys,
        "--db",
        str(db),
        "whatif",
        "--all",
        "--agents",
        changed,
        "--allow-side-effects",
        "--fork-user",
        "whatif",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["totals"]["runs"] == 2
    assert [r["new"]["status"] for r in report["runs"]] == ["completed", "completed"]
    code, out, _ = _run(
        capsys,
        "--db",
        str(db),
        "whatif",
        "--all",
        "--agents",
        changed,
        "--allow-side-effects",
        "--fork-user",
        "whatif",
    )
    header = out.splitlines()[0].split()
    assert header[:4] == ["run", "fork", "status", "cost"]
    assert "2 runs compared" in out


def test_export_then_import_into_another_store_replays_identically(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "h.jsonl"
    ids = [str(r["run_id"]) for r in _runs(capsys, demo)]
    code, out, _ = _run(capsys, "--db", str(demo), "export", *ids, "-o", str(history))
    assert code == 0 and out.startswith(f"exported {len(ids)} runs, ")
    other = tmp_path / "other.db"
    code, out, _ = _run(capsys, "--db", str(other), "import", str(history), "--json")
    assert code == 0
    first = json.loads(out)
    assert first["events_imported"] > 0 and first["events_already_there"] == 0
    code, out, _ = _run(capsys, "--db", str(other), "import", str(history), "--json")
    again = json.loads(out)
    assert again["events_imported"] == 0
    assert again["events_already_there"] == first["events_imported"]
    code, out, _ = _run(capsys, "--db", str(other), "replay", "--all", "--json")
    assert code == 0 and json.loads(out)["identical"] == len(ids)

    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"not": "a history"}\n')
    code, out, err = _run(capsys, "--db", str(other), "import", str(junk))
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = _run(capsys, "--db", str(demo), "export", "-o", str(history))
    assert code == 2 and "name the runs" in err


def test_otel_export_to_the_console(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("opentelemetry.sdk")
    run_id = str(_runs(capsys, demo)[-1]["run_id"])
    code, out, err = _run(capsys, "--db", str(demo), "otel-export", run_id, "--console")
    assert code == 0
    assert '"name": "invoke_agent travel-assistant"' in out
    assert err.startswith("agentledger: exported ") and " spans of 1 run" in err
    code, _, err = _run(
        capsys, "--db", str(demo), "otel-export", "--console", "--endpoint", "x", "--all"
    )
    assert code == 2 and "no --endpoint" in err
