"""``benchmarks/conversations.py``, small: a 30-run conversation on a SQLite file sends every
earlier exchange without a memory policy (requests and ``ConversationContinued`` grow run by
run) and stays within the policy with one (no larger at run 30 than at run 20); every run
completes and is listed. The timings are the benchmark's to print, never checked here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from agentledger.engine import MemoryPolicy

ROOT = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_conversations", ROOT / "benchmarks" / "conversations.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_conversations_benchmark_small(tmp_path: Path) -> None:
    policy = MemoryPolicy(max_tokens=1500, compact_at=1200, keep_recent_exchanges=3)
    figures: dict[str, Any] = await _benchmark().measure(
        tmp_path, runs=30, memory=policy, marks=(10, 20, 30)
    )
    plain, bare, bounded = (
        figures[mode] for mode in ("plain", "conversation", "conversation_memory")
    )
    for mode in (plain, bare, bounded):
        assert mode["statuses"] == ["completed"] and mode["model_calls"] == 30
    for mode in (bare, bounded):
        assert mode["runs_listed"] == 30
        assert mode["conversation_continued_bytes"]["events"] == 29  # run 1 follows none

    # A plain run is sent the same each time.
    assert set(plain["input_tokens"]["at_run"].values()) == {plain["input_tokens"]["max"]}

    # Without a policy every exchange is carried: both grow with every run.
    tokens, stored = bare["input_tokens"]["at_run"], bare["conversation_continued_bytes"]["at_run"]
    assert tokens["10"] < tokens["20"] < tokens["30"] == bare["input_tokens"]["max"]
    assert stored["10"] < stored["20"] < stored["30"]
    assert tokens["30"] > 2 * tokens["10"]

    # With one, both stop growing once the summary is full, within the policy's ceiling.
    tokens, stored = (
        bounded["input_tokens"]["at_run"],
        bounded["conversation_continued_bytes"]["at_run"],
    )
    assert bounded["within_policy"] and bounded["input_tokens"]["max"] <= policy.max_tokens
    assert tokens["30"] <= tokens["20"] and stored["30"] <= stored["20"]
    assert bounded["input_tokens"]["last"] < bare["input_tokens"]["last"] / 2
