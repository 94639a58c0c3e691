"""Two worker processes driving one set of runs, killed at random: nothing twice, nothing lost.

A small version of ``benchmarks/faults_crash.py``: both workers take any run that is not over,
so runs pass between processes mid-way (side effects in doubt are claimed by one of them,
reconciled or re-run), while the primary model fails some requests for good (fallbacks) and the
backup fails some once (retries).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from crash_pair import crash_pair


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_two_workers_killed_at_random_deliver_once_and_lose_nothing(tmp_path: Path) -> None:
    report = crash_pair(tmp_path, runs=40, kills=12, seed=20261129)
    assert report["statuses"] == {"completed": 40}, report["errors"]
    assert report["deliveries"] == 40 * 3
    assert report["duplicate_deliveries"] == 0
    assert report["acknowledged_events"] > 0 and report["acknowledged_events_lost"] == 0
    assert report["version_gaps"] == 0
    assert report["runs_whose_replay_differs"] == 0, report["replay_differences"]
    assert report["runs_resumed_after_a_kill"] > 0, "the kills missed the work"
