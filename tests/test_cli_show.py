"""``agentledger show``: the summary, the span tree (attempts, fallbacks, tiers, breaker skips,
budget, compactions, failures in full) and ``--context N`` rebuilt from the log, checked
against the requests the model really received. On a real SQLite file, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from cli_runs import LONG_ERROR, Recorded, messages_json, record_runs

from agentledger.engine.cli import main


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorded]:
    db = tmp_path_factory.mktemp("cli") / "log.db"
    return db, anyio.run(record_runs, db)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_draws_attempts_and_the_fallback_under_one_model_call(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, out, err = _run(capsys, "show", "fallback", "--db", str(db))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["run", "fallback"]
    assert lines[1].split() == ["status", "completed"]
    assert "1 model call" in out  # three attempts on primary and the fallback are one call
    labels = [line for line in lines if "model call #" in line]
    assert [label.split("model call ")[1].split(" (")[0] for label in labels] == [
        "#1 primary",
        "#1 primary",
        "#1 primary",
        "#1 fallback",
    ]
    assert "attempt 4" in labels[3]
    failed = [line for line in lines if "model_call_failed" in line]
    assert len(failed) == 3 and all(
        "ModelServerError: primary: boom (HTTP 500" in f for f in failed
    )
    assert "model_fell_back fell back from primary to fallback: ModelServerError" in out
    assert "model_call_retried retry primary as attempt 2 in 0.5 s" in out


def test_a_failure_is_shown_in_full(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, out, _ = _run(capsys, "--db", str(db), "show", "failed")
    assert code == 0
    assert "status   failed" in out
    block = out.split("\nerror: models_unavailable\n", 1)[1]
    for line in LONG_ERROR.splitlines():
        assert line.strip() in block  # every line, none cut at 100 characters
    assert "(in full below)" in out


def test_budget_reservations_settlements_and_the_cap(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, out, _ = _run(capsys, "--db", str(db), "show", "capped")
    assert code == 0
    assert "status   budget_exceeded" in out
    assert "budget_reserved reserved $0.00957800 for priced (free)" in out
    assert "budget_settled settled $0.00740000 (reserved $0.00957800)" in out
    assert (
        "budget_exceeded the run cap $0.012 would be passed: $0.00740000 committed + "
        "$0.01009600 asked"
    ) in out
    assert "tool look [c1]" in out


def test_tiers_and_breaker_skips(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, out, _ = _run(capsys, "--db", str(db), "show", "breaker")
    assert code == 0
    assert "tool_tier_failed flaky tier primary failed after" in out
    assert "ConnectionError: primary is down" in out
    assert "tool_tier_skipped flaky tier primary skipped: breaker open until" in out
    assert out.count("tool_call_succeeded flaky tier backup ok") == 2


def test_context_is_what_the_model_was_sent(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, log = recorded
    code, out, _ = _run(capsys, "--db", str(db), "show", "memory", "--json")
    assert code == 0
    calls = json.loads(out)["model_calls"]
    agent_calls = [c["number"] for c in calls if c["purpose"] == "agent"]
    assert [c["purpose"] for c in calls] == [
        "agent",
        "agent",
        "summary",
        "agent",
        "summary",
        "agent",
    ]
    assert len(agent_calls) == len(log.reader_requests) == 4
    for number, request in zip(agent_calls, log.reader_requests, strict=True):
        code, out, _ = _run(
            capsys, "--db", str(db), "show", "memory", "--context", str(number), "--json"
        )
        assert code == 0
        context = json.loads(out)
        assert context["messages"] == messages_json(request), number
        assert context["recorded_message_count"] == len(request.messages)


def test_context_diff_names_the_compaction_that_shrank_a_result(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, out, _ = _run(capsys, "--db", str(db), "show", "memory", "--context", "6", "--json")
    assert code == 0
    context = json.loads(out)
    assert context["previous_call"]["call"] == 4
    changed = {c["index"]: c for c in context["changed"]}
    # The page fetched in turn 2 (message 6) went in whole to call #4, compacted to call #6.
    assert "page 2 lorem" in changed[6]["before"]["content"]
    assert "compacted" in changed[6]["after"]["content"]
    assert context["added"] == [7, 8]
    assert [c["version"] for c in context["compactions"]] == [23]

    code, out, _ = _run(capsys, "--db", str(db), "show", "memory", "--context", "6")
    assert code == 0
    assert "since model call #4" in out and "2 added, 2 changed, 0 removed" in out
    assert "v23 memory_compacted summary: tool results of v11" in out
    assert "~   6 tool fetch [p2] was:" in out


def test_context_of_a_call_that_is_not_there_or_not_an_agent_call(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, _, err = _run(capsys, "--db", str(db), "show", "memory", "--context", "7")
    assert code == 1 and err == "agentledger: error: model call #7 is not in this run (it has 6)\n"
    code, _, err = _run(capsys, "--db", str(db), "show", "memory", "--context", "3")
    assert code == 1 and "is a summary call" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "--db", str(db), "show", "memory", "--context", "0")
    assert code == 2 and "must be at least 1" in err


def test_show_json_has_the_summary_and_every_event(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    code, out, _ = _run(capsys, "--db", str(db), "show", "capped", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["run"]["status"] == "budget_exceeded"
    assert shown["run"]["cost_usd"] == "0.00740000"
    assert [e["version"] for e in shown["events"]] == list(range(1, 12))
    assert shown["events"][-1]["event"]["type"] == "budget_exceeded"


def test_run_ids_by_unique_start_or_end(
    recorded: tuple[Path, Recorded], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded
    assert _run(capsys, "--db", str(db), "show", "fall")[0] == 0  # start
    assert _run(capsys, "--db", str(db), "show", "pped")[0] == 0  # end
    code, _, err = _run(capsys, "--db", str(db), "show", "f")  # fallback, failed
    assert code == 2 and "'f' matches 2 run ids: failed, fallback" in err
    code, _, err = _run(capsys, "--db", str(db), "show", "nothing-like-it")
    assert code == 1 and "no run 'nothing-like-it'" in err
