"""Replay of many runs on real SQLite: a batch of identical runs, a changed agent diverging in
every run of its name, and one run's trouble (no run, unknown agent, a damaged event) reported
as that run's entry while the others replay."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentledger.engine import Agent, Engine
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, reply
from agentledger.events import SqliteEventStore
from agentledger.projections import RunFilter
from agentledger.replay import ReplayError, ReplayProgress

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=1)  # runs start in order, so a filter lists them in that order


def agent(name: str, prompt: str = "Be brief.") -> Agent:
    # A model that answers any request: replay never calls it, live runs may call it often.
    model = ScriptedModel(lambda request: reply(f"{name} says hi"), name="m")
    return Agent(name=name, model=model, system_prompt=prompt)


async def record(db: Path) -> dict[str, list[str]]:
    """Three runs of ``helper`` (ada, bob, ada) and two of ``greeter`` (ada)."""
    runs: dict[str, list[str]] = {"helper": [], "greeter": []}
    clock, ids = FakeClock(T0, tick=TICK), SequentialIds("r")
    async with SqliteEventStore(db) as store, Engine(store, clock=clock, ids=ids) as engine:
        for name, user in [
            ("helper", "ada"),
            ("greeter", "ada"),
            ("helper", "bob"),
            ("greeter", "ada"),
            ("helper", "ada"),
        ]:
            result = await engine.run(agent(name), f"task for {user}", user_id=user)
            runs[name].append(result.run_id)
    return runs


async def test_every_run_replays_identically_with_progress_and_a_json_report(
    tmp_path: Path,
) -> None:
    runs = await record(tmp_path / "runs.db")
    seen: list[ReplayProgress] = []
    async with SqliteEventStore(tmp_path / "runs.db") as store:
        engine = Engine(store, agents=[agent("helper"), agent("greeter")])
        report = await engine.replay_all(concurrency=3, progress=seen.append)
    assert report.ok and report.total == 5 and not report.divergent and not report.errors
    assert set(report.identical) == {*runs["helper"], *runs["greeter"]}
    assert sorted(p.done for p in seen) == [1, 2, 3, 4, 5]
    assert {p.outcome for p in seen} == {"identical"} and {p.total for p in seen} == {5}
    decoded = json.loads(json.dumps(report.to_dict()))
    assert decoded["ok"] is True and decoded["identical"] == 5


async def test_a_changed_agent_diverges_in_every_run_of_its_name_and_says_where(
    tmp_path: Path,
) -> None:
    runs = await record(tmp_path / "runs.db")
    async with SqliteEventStore(tmp_path / "runs.db") as store:
        engine = Engine(store, agents=[agent("helper"), agent("greeter")])
        changed = agent("helper", prompt="Be very brief.")
        report = await engine.replay_all(agent=changed)  # only helper's runs, by default
        assert report.total == 3 and not report.ok and not report.identical
        assert [d.run_id for d in report.divergent] == runs["helper"]  # in start order
        first = report.divergent[0]
        # The run starts otherwise than recorded: that is where it is reported, even though a
        # run writes nothing before its first model reply.
        assert (first.agent, first.version) == ("helper", 1)
        assert first.reason == "run_started differs in system_prompt"
        assert first.recorded is not None and first.replayed is not None
        assert first.recorded["system_prompt"].startswith("Be brief.")
        assert first.replayed["system_prompt"].startswith("Be very brief.")
        entry = json.loads(json.dumps(report.to_dict()))["divergent"][0]
        assert entry["version"] == 1 and entry["recorded"]["system_prompt"].startswith("Be brief.")

        # A filter narrows the batch; a mapping swaps agents by name.
        ada = await engine.replay_all(RunFilter(user_id="ada"), agent={"helper": changed})
        assert ada.total == 4 and len(ada.divergent) == 2 and len(ada.identical) == 2
        one = await engine.replay_all(RunFilter(agent="greeter", limit=1), concurrency=1)
        assert one.identical == (runs["greeter"][0],) and one.ok


async def test_one_runs_trouble_is_its_entry_and_the_others_replay(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = await record(db)
    damaged = runs["helper"][1]
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute(
            "SELECT data FROM events WHERE stream_id = ? AND version = 1", (f"run-{damaged}",)
        ).fetchone()
        conn.execute(
            "UPDATE events SET data = ? WHERE stream_id = ? AND version = 1",
            (data.replace(b"task for bob", b"task for rob"), f"run-{damaged}"),
        )
    async with SqliteEventStore(db) as store:
        engine = Engine(store, agents=[agent("helper")])  # greeter is unknown here
        ids = [*runs["helper"], *runs["greeter"], "no-such-run"]
        report = await engine.replay_all(ids)
    assert not report.ok and report.total == 6
    assert set(report.identical) == {runs["helper"][0], runs["helper"][2]}
    kinds = {e.run_id: e.kind for e in report.errors}
    assert kinds == {
        damaged: "parked",
        runs["greeter"][0]: "unknown_agent",
        runs["greeter"][1]: "unknown_agent",
        "no-such-run": "not_found",
    }
    messages = {e.run_id: e.message for e in report.errors}
    assert "checksum" in messages[damaged] and "\n" not in messages[damaged]
    assert "no agent named 'greeter'" in messages[runs["greeter"][0]]


async def test_a_batch_needs_a_positive_concurrency(tmp_path: Path) -> None:
    await record(tmp_path / "runs.db")
    async with SqliteEventStore(tmp_path / "runs.db") as store:
        engine = Engine(store, agents=[agent("helper"), agent("greeter")])
        with pytest.raises(ReplayError, match="concurrency must be at least 1"):
            await engine.replay_all(concurrency=0)


async def test_ledger_reads_serve_later_runs_and_read_only_the_tail_past_them() -> None:
    from agentledger.events import (
        MemoryEventStore,
        NewEvent,
        RecordedEvent,
        RunResumed,
        StreamAppend,
    )
    from agentledger.replay._answers import LedgerReads

    class Counting(MemoryEventStore):
        def __init__(self) -> None:
            super().__init__()
            self.reads: list[tuple[str, int]] = []

        async def read_stream(
            self, stream_id: str, *, after: int = 0, limit: int | None = None
        ) -> list[RecordedEvent]:
            self.reads.append((stream_id, after))
            return await super().read_stream(stream_id, after=after, limit=limit)

    def event(n: int) -> NewEvent:
        return NewEvent(RunResumed(run_id="r", span_id="r", at=T0), f"e{n}")

    async with Counting() as store:
        await store.append(StreamAppend("other", [event(0)]))
        await store.append(StreamAppend("ledger", [event(1), event(2)]))  # positions 2, 3
        reads = LedgerReads(store)
        assert [r.position for r in await reads.before("ledger", 3)] == [2]
        await store.append(StreamAppend("ledger", [event(3)]))  # position 4
        # Everything below position 4 was read already: served without a read.
        assert [r.position for r in await reads.before("ledger", 4)] == [2, 3]
        assert store.reads == [("ledger", 0)]
        # Past it: only the tail (after version 2) is read.
        assert [r.position for r in await reads.before("ledger", 5)] == [2, 3, 4]
        assert store.reads == [("ledger", 0), ("ledger", 2)]
        small = LedgerReads(store, max_streams=1)
        await small.before("ledger", 5)
        await small.before("other", 5)
        await small.before("ledger", 5)  # let go when "other" came: read again
        assert store.reads[-3:] == [("ledger", 0), ("other", 0), ("ledger", 0)]


async def test_the_benchmark_in_small(tmp_path: Path) -> None:
    """``benchmarks/replay_many.py`` with 12 runs: every figure that is a count is exact."""
    import importlib.util

    path = Path(__file__).parent.parent / "benchmarks" / "replay_many.py"
    spec = importlib.util.spec_from_file_location("replay_many_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = await module.main(12, tmp_path / "runs.db")
    assert figures["replay_identical_c1"] == figures["replay_identical_c4"] == 12
    assert figures["changed_prompt_divergent"] == 12 and figures["changed_prompt_versions"] == [1]
    assert figures["whatif_outputs_changed"] == 12 and figures["whatif_skipped"] == 0
