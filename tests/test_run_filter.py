"""``RunFilter`` over the run index: every condition, the order, the limit, bad values, and
``find_runs`` over a real SQLite store (reads the saved index, writes nothing)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from agentledger.events import SqliteEventStore
from agentledger.projections import (
    ProjectionRunner,
    RunFilter,
    RunFilterError,
    RunIndex,
    RunSummary,
    find_runs,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def row(run_id: str, minutes: int, **changes: object) -> RunSummary:
    base = RunSummary(
        run_id=run_id,
        agent="helper",
        user_id="ada",
        surface="default",
        model="m",
        status="completed",
        started_at=T0 + timedelta(minutes=minutes),
        ended_at=None,
        last_event_at=T0,
        turns=1,
        cost_usd=Decimal(0),
        input_tokens=0,
        output_tokens=0,
        flagged=False,
        forked_from=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


ROWS = {
    r.run_id: r
    for r in [
        row("a", 0),
        row("b", 1, agent="other"),
        row("c", 2, user_id="bob", status="failed"),
        row("d", 3, status="paused"),
        row("e", 4, forked_from="a"),
    ]
}


def ids(f: RunFilter) -> list[str]:
    return [r.run_id for r in f.select(ROWS)]


def test_each_condition_narrows_the_runs() -> None:
    assert ids(RunFilter()) == ["a", "b", "c", "d", "e"]
    assert ids(RunFilter(agent="other")) == ["b"]
    assert ids(RunFilter(user_id="bob")) == ["c"]
    assert ids(RunFilter(status="paused")) == ["d"]
    assert ids(RunFilter(status=frozenset({"failed", "paused"}))) == ["c", "d"]
    window = RunFilter(
        started_since=T0 + timedelta(minutes=1), started_until=T0 + timedelta(minutes=3)
    )
    assert ids(window) == ["b", "c"]  # since is inclusive, until exclusive
    assert ids(RunFilter(forks=True)) == ["e"]
    assert ids(RunFilter(forks=False, agent="helper", user_id="ada")) == ["a", "d"]
    assert not RunFilter(agent="other").matches(ROWS["a"])


def test_limit_keeps_the_first_of_the_order() -> None:
    assert ids(RunFilter(limit=2)) == ["a", "b"]
    assert ids(RunFilter(limit=2, newest_first=True)) == ["e", "d"]
    assert ids(RunFilter(limit=0)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "done"}, "unknown run status done"),
        ({"limit": -1}, "limit must be 0 or more"),
        ({"started_since": datetime(2026, 1, 1)}, "started_since must be an aware datetime"),
        ({"started_since": T0, "started_until": T0 - timedelta(1)}, "started_until is before"),
    ],
)
def test_bad_values_are_refused_in_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RunFilterError, match=message):
        RunFilter(**kwargs)  # type: ignore[arg-type]


async def test_find_runs_reads_a_sqlite_store_and_saves_nothing(tmp_path: Path) -> None:
    from agentledger.engine import Agent, Engine
    from agentledger.engine.testing import FakeClock, ScriptedModel, reply

    async with SqliteEventStore(tmp_path / "runs.db") as store:
        async with Engine(store, clock=FakeClock(T0)) as engine:
            for user in ("ada", "bob", "ada"):
                agent = Agent(name="helper", model=ScriptedModel([reply("hi")], name="m"))
                await engine.run(agent, "hello", user_id=user)
        found = await find_runs(store, RunFilter(user_id="ada"))
        assert [r.user_id for r in found] == ["ada", "ada"]
        assert len(await find_runs(store)) == 3
        # Nothing saved: a runner loading the index finds no checkpoint.
        async with ProjectionRunner(store, RunIndex()) as runner:
            assert runner.saved_position == 0
