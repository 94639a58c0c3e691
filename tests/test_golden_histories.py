"""The golden histories replay: each recorded run under ``tests/golden`` is imported into a fresh
SQLite store and replayed with its agent, and must come out the same; a deliberately changed
agent is reported divergent at the version where its run first differs.

The files are recorded by ``tests/golden/record.py`` from the agents in ``tests/golden/agents.py``
and carry each event's schema version, so an engine whose events change shape later still reads
them (through its upcasters).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from golden.agents import BUDGETS, SCENARIOS, critic_agent, degraded_agent

from agentledger.engine import Agent, Engine
from agentledger.events import EventCodec, EventStore, RunStarted, SqliteEventStore
from agentledger.replay import ReplayReport, import_history

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[EventStore]:
    async with SqliteEventStore(tmp_path / "golden.db") as store:
        yield store


async def replay(store: EventStore, name: str, agent: Agent) -> ReplayReport:
    report = await import_history(store, GOLDEN / f"{name}.jsonl")
    assert report.runs == [SCENARIOS[name].run_id]
    assert report.events_imported > 0 and report.events_already_there == 0
    async with Engine(store, budgets=BUDGETS) as engine:
        return await engine.replay(SCENARIOS[name].run_id, agent=agent)


def test_every_scenario_has_its_golden_file_and_nothing_else_is_there() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.jsonl")) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_a_golden_history_replays_identically(sqlite: EventStore, name: str) -> None:
    scenario = SCENARIOS[name]
    lines = (GOLDEN / f"{name}.jsonl").read_bytes().splitlines()
    types = {orjson.loads(line)["type"] for line in lines[1:]}
    missing = [t for t in scenario.shows if t not in types]
    assert not missing, f"the {name} golden history lacks what it is there to show: {missing}"

    report = await replay(sqlite, name, scenario.make_agent())
    assert report.divergence is None, report.divergence
    assert report.matches
    assert [r.event.type for r in report.replayed] == [r.event.type for r in report.recorded]
    assert report.replayed_spend_usd == report.recorded_spend_usd


async def test_a_changed_critic_diverges_at_its_first_verdict(sqlite: EventStore) -> None:
    report = await replay(sqlite, "critic", critic_agent(keyword="Porto"))
    divergence = report.divergence
    assert divergence is not None and not report.matches
    assert divergence.version == 7
    assert report.recorded[6].event.type == "critic_verdict"
    assert divergence.reason == "critic_verdict differs in checks"
    assert divergence.expected is not None and divergence.actual is not None
    assert divergence.expected["checks"][0].issue.endswith('keyword(s): "Lisbon"')
    assert divergence.actual["checks"][0].issue.endswith('keyword(s): "Porto"')


async def test_a_renamed_tool_tier_diverges_where_the_recorded_tier_answered(
    sqlite: EventStore,
) -> None:
    report = await replay(sqlite, "degraded", degraded_agent(fallback_tier="stale"))
    divergence = report.divergence
    assert divergence is not None
    # Versions 9 and 10 are the live tiers' failures, which the changed agent still has.
    assert divergence.version == 11
    assert divergence.reason == "tier 'stale' of tool call 'c1' was run, which the recording lacks"
    assert divergence.expected is not None
    assert (divergence.expected["type"], divergence.expected["tier"]) == (
        "tool_call_succeeded",
        "cache",
    )
    assert divergence.actual == {"call_id": "c1", "tier": "stale"}


async def test_a_golden_history_of_an_older_schema_replays_through_an_upcaster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the file had been recorded when run_started was at schema version 1 and called its
    # task "goal", and run_started has since moved to version 2.
    lines = (GOLDEN / "critic.jsonl").read_bytes().splitlines(keepends=True)
    first = orjson.loads(lines[1])
    assert first["type"] == "run_started"
    first["schema_version"] = 1
    first["event"]["goal"] = first["event"].pop("task")
    lines[1] = orjson.dumps(first) + b"\n"
    old = tmp_path / "critic-v1.jsonl"
    old.write_bytes(b"".join(lines))
    monkeypatch.setattr(RunStarted, "schema_version", 2)

    def upcast(raw: dict[str, Any]) -> dict[str, Any]:
        raw = dict(raw)
        raw["task"] = raw.pop("goal")
        return raw

    codec = EventCodec()
    codec.register_upcaster("run_started", 1, upcast)
    async with SqliteEventStore(tmp_path / "golden.db", codec=codec) as store:
        await import_history(store, old, codec=codec)
        async with Engine(store, budgets=BUDGETS) as engine:
            report = await engine.replay(SCENARIOS["critic"].run_id, agent=critic_agent())
    assert report.divergence is None, report.divergence
