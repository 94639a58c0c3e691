"""The PostgreSQL faults of ``benchmarks/faults_postgres.py``, small: runs whose backends are
killed mid-transaction in a database of their own on the test server, and (where a private
cluster can be started) a crash-restart of that cluster mid-run. Every run completes; no batch
is partial, nothing acknowledged is lost or written twice, no error escapes untyped."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg")
PG_DSN = os.environ.get("AGENTLEDGER_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The server conftest uses."""
ROOT = Path(__file__).resolve().parent.parent
ZERO = (
    "partial_batches",
    "acknowledged_lost",
    "duplicate_event_ids",
    "duplicate_tool_outcomes",
    "duplicate_deliveries",
    "version_gaps",
    "position_gaps",
    "untyped_errors",
)


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "faults_postgres", ROOT / "benchmarks" / "faults_postgres.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _check(phase: dict[str, Any], runs: int) -> None:
    assert phase["runs_completed"] == runs, phase
    assert phase["unpaired_tool_calls"] == 0 and phase["untyped_error_samples"] == []
    assert phase["deliveries"] == 2 * runs
    for name in ZERO:
        assert phase[name] == 0, (name, phase)


async def test_killed_backends_lose_nothing_and_raise_only_typed_errors() -> None:
    try:
        await (await asyncpg.connect(PG_DSN, timeout=3)).close()
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} and CI=true: {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}")
    figures = await _benchmark().measure(runs=12, kills=12, concurrency=6, server=PG_DSN)
    kills = figures["kills"]
    _check(kills, 12)
    assert kills["backends_terminated"] >= 1
    assert sum(kills["typed_errors"].values()) >= 1  # the kills were felt, and typed
    assert figures["restart"].startswith("skipped")


@pytest.mark.skipif(
    not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="no PostgreSQL server binaries"
)
async def test_a_crash_restart_of_a_private_cluster_mid_run_loses_nothing() -> None:
    figures = await _benchmark().measure(runs=10, kills=5, concurrency=5)
    if figures["server"] != "private cluster":  # pragma: no cover - depends on the machine
        pytest.skip(f"no private cluster: {figures['restart']}")
    _check(figures["kills"], 10)
    restart = figures["restart"]
    _check(restart, 10)
    assert restart["restarts"] == 1 and sum(restart["typed_errors"].values()) >= 1
