"""SIGKILL at random points, then resume: no side effect twice, and the same end state.

A worker process (``crash_worker.py``) drives runs whose side-effecting tool delivers to a fake
service that counts deliveries by idempotency key. The worker is killed with SIGKILL at random
moments at least 50 times and restarted each time; then it runs to completion. Every delivery
must have happened exactly once, and every run must end in the state an uninterrupted run of the
same script reaches.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from agentledger.events import RecordedEvent, SqliteEventStore
from agentledger.projections._run_state import RunState, fold_run

WORKER = Path(__file__).with_name("crash_worker.py")
RUNS = 300
KILLS = 50


def _start(events_db: Path, service_db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(events_db), str(service_db), str(RUNS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _comparable(state: RunState) -> tuple[object, ...]:
    return (state.status, state.output, state.turn, state.messages, state.usage)


async def _uninterrupted(tmp: Path) -> dict[str, RunState]:
    """The reference: the same runs, in this process, with no kill."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import crash_worker
    finally:
        sys.path.pop(0)
    crash_worker.SERVICE_DB = tmp / "reference-service.db"
    await crash_worker.drive(str(tmp / "reference.db"), RUNS)
    async with SqliteEventStore(tmp / "reference.db") as store:
        return {
            f"r{i:04d}": fold_run(await store.read_stream(f"run-r{i:04d}")) for i in range(RUNS)
        }


async def _end_states(events_db: Path) -> dict[str, list[RecordedEvent]]:
    async with SqliteEventStore(events_db) as store:
        return {f"r{i:04d}": await store.read_stream(f"run-r{i:04d}") for i in range(RUNS)}


def _wait_for_a_write(events_db: Path, limit: float = 2.0) -> None:
    """Until the worker has written something since it started (or ``limit`` seconds)."""
    wal = events_db.with_name(events_db.name + "-wal")
    before = wal.stat().st_mtime_ns if wal.exists() else 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if wal.exists() and wal.stat().st_mtime_ns != before:
            return
        time.sleep(0.002)


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    events_db, service_db = tmp_path / "events.db", tmp_path / "service.db"
    rng = random.Random(20261125)
    kills = 0
    finished = False
    while not finished:
        worker = _start(events_db, service_db)
        assert worker.stdout is not None
        ready = worker.stdout.readline()
        assert ready.strip() == "READY", worker.stderr.read() if worker.stderr else ready
        if kills < KILLS:
            _wait_for_a_write(events_db)  # a kill before the first write would miss the work
            time.sleep(rng.uniform(0.0, 0.04))
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills += 1
                continue
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        finished = "DONE" in out
    assert kills >= KILLS, f"only {kills} kills: the worker finished too fast to be killed"

    with sqlite3.connect(service_db) as service:
        counts = dict(service.execute("SELECT key, count FROM deliveries").fetchall())
    duplicates = {key: n for key, n in counts.items() if n != 1}
    assert duplicates == {}
    assert len(counts) == RUNS * 3

    reference = anyio.run(_uninterrupted, tmp_path)
    resumed = 0
    for run_id, events in anyio.run(_end_states, events_db).items():
        resumed += any(e.event.type == "run_resumed" for e in events)
        assert _comparable(fold_run(events)) == _comparable(reference[run_id]), run_id
        assert not any(e.event.type == "tool_outcome_unknown" for e in events), run_id
        assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert resumed > 0, "no run was ever interrupted: the kills missed the work"


async def test_the_reference_itself_delivers_once(tmp_path: Path) -> None:
    """Guard for the test above: without kills each run delivers three times, once per key."""
    reference = await _uninterrupted(tmp_path)
    assert {s.status for s in reference.values()} == {"completed"}
    with sqlite3.connect(tmp_path / "reference-service.db") as service:
        counts = [n for (n,) in service.execute("SELECT count FROM deliveries")]
    assert counts == [1] * (RUNS * 3)
