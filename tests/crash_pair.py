"""Two worker processes on one SQLite file, killed with SIGKILL at random and started again.

Shared by ``tests/test_crash_pair.py`` and ``benchmarks/faults_crash.py``. Returns what the
runs came to: completed runs, duplicate deliveries, acknowledged events missing from the store,
version gaps, and runs whose replay differs from their log.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from agentledger.engine import Engine
from agentledger.events import SqliteEventStore

WORKER = Path(__file__).with_name("crash_pair_worker.py")


def _start(events_db: Path, service_db: Path, runs: int, ack: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(events_db), str(service_db), str(runs), str(ack)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def crash_pair(tmp: Path, *, runs: int, kills: int, seed: int) -> dict[str, Any]:
    """Drive ``runs`` runs with two workers, killing one at random ``kills`` times."""
    events_db, service_db = tmp / "events.db", tmp / "service.db"
    acks = [tmp / "acks-0.txt", tmp / "acks-1.txt"]
    rng = random.Random(seed)
    workers = [_start(events_db, service_db, runs, ack) for ack in acks]
    done = 0
    started = time.perf_counter()
    while done < kills:
        time.sleep(rng.uniform(0.1, 0.6))  # a worker takes ~0.5 s to import and open the store
        index = rng.randrange(2)
        if workers[index].poll() is None:
            workers[index].send_signal(signal.SIGKILL)
            workers[index].wait()
            done += 1
        workers[index] = _start(events_db, service_db, runs, acks[index])
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0 and "DONE" in out, err
    report = anyio.run(_check, events_db, service_db, acks, runs)
    report.update(kills=done, seconds=round(time.perf_counter() - started, 1))
    return report


async def _check(events_db: Path, service_db: Path, acks: list[Path], runs: int) -> dict[str, Any]:
    sys.path.insert(0, str(WORKER.parent))
    try:
        from crash_pair_worker import AGENT
    finally:
        sys.path.pop(0)
    with sqlite3.connect(service_db) as service:
        counts = dict(service.execute("SELECT key, count FROM deliveries").fetchall())
    acknowledged = {line.strip() for ack in acks for line in ack.read_text().splitlines() if line}
    report: dict[str, Any] = {
        "runs": runs,
        "deliveries": len(counts),
        "duplicate_deliveries": sum(n - 1 for n in counts.values() if n > 1),
        "acknowledged_events": len(acknowledged),
    }
    async with SqliteEventStore(events_db) as store:
        lost = [event_id for event_id in acknowledged if await store.get_event(event_id) is None]
        statuses: dict[str, int] = {}
        errors: list[str] = []
        gaps = resumed = 0
        differing: list[str] = []
        async with Engine(store, agents=[AGENT]) as engine:
            for index in range(runs):
                run_id = f"r{index:04d}"
                events = await store.read_stream(f"run-{run_id}")
                gaps += [e.version for e in events] != list(range(1, len(events) + 1))
                resumed += any(e.event.type == "run_resumed" for e in events)
                result = await engine.result(run_id)
                statuses[result.status] = statuses.get(result.status, 0) + 1
                if result.error is not None:
                    errors.append(f"{run_id}: {result.error}")
                replayed = await engine.replay(run_id)
                if not replayed.matches:
                    differing.append(f"{run_id}: {replayed.divergence}")
    report.update(
        acknowledged_events_lost=len(lost),
        version_gaps=gaps,
        statuses=statuses,
        errors=errors[:3],
        runs_resumed_after_a_kill=resumed,
        runs_whose_replay_differs=len(differing),
        replay_differences=differing[:3],
    )
    return report
