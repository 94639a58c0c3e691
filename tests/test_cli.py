"""The ``agentledger`` command: the demo and the read commands, on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agentledger.engine.cli import main


def test_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentledger.engine", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("demo", "runs", "show", "spend", "critic", "tail"):
        assert command in done.stdout


def test_demo_then_every_read_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "demo.db"
    assert main(["--db", str(db), "demo"]) == 0
    demo = capsys.readouterr().out
    # Patterns 1, 4, 5, 6 and 7 all show in the live output.
    for marker in (
        "tool_arguments_rejected",
        "tool_tier_failed",
        "budget_reserved",
        "revision_requested",
        "tool_result_reused",
    ):
        assert marker in demo
    assert "Emails sent: 1; sends answered from the idempotency ledger instead: 1." in demo

    assert main(["--db", str(db), "runs"]) == 0
    runs = capsys.readouterr().out.splitlines()
    assert runs[0].split() == [
        "run",
        "agent",
        "user",
        "status",
        "turns",
        "cost",
        "(USD)",
        "started",
    ]
    run_ids = [line.split()[0] for line in runs[2:]]
    assert len(run_ids) == 3  # two runs and the fork of the first under a changed prompt
    assert all(" completed " in line for line in runs[2:])

    assert main(["--db", str(db), "show", run_ids[0]]) == 0
    assert "run_completed" in capsys.readouterr().out

    assert main(["--db", str(db), "spend", "ada"]) == 0
    spend = capsys.readouterr().out.splitlines()
    assert spend[0].split() == ["day", "settled", "(USD)", "overshoots", "over", "by", "(USD)"]
    assert len(spend) == 3

    assert main(["--db", str(db), "critic", "travel-assistant"]) == 0
    critic = capsys.readouterr().out
    # Counted per run, not per verdict: each run's first answer is rejected, its revision
    # accepted, so all three runs (the fork too) end accepted and none on the first answer.
    assert (
        "accept rate of travel-assistant: 100.0% (3 of 3 runs ended accepted; "
        "0 on the first answer, 0 flagged)"
    ) in critic
    checks = {line.split()[0]: line.split()[1:] for line in critic.splitlines()[4:] if line}
    assert checks["required_keywords"] == ["3", "0", "0.0%"]  # failed once in each run
    assert checks["max_length"] == ["3", "3", "100.0%"]

    assert main(["--db", str(db), "tail"]) == 0
    lines = capsys.readouterr().out.splitlines()
    positions = [orjson.loads(line)["position"] for line in lines]
    assert positions == list(range(1, len(lines) + 1))


def test_unknown_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "empty.db"
    assert main(["--db", str(missing), "show", "nope"]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists()  # a read-only command leaves no empty database behind
    assert main(["--db", str(missing), "demo"]) == 0
    capsys.readouterr()
    assert main(["--db", str(missing), "show", "nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err
