"""``benchmarks/streaming.py``, small, over real local HTTP for both wire formats: a streamed
reply hands out one delta a token and is recorded as the completed one; a server that streams
forever is cut at each ``max_tokens``, reading one event past it, recording ``max_tokens``
output tokens and settling within the reservation; a stream dropped once is retried to the whole
reply, one dropped every time fails after the policy's attempts, and both replay. The timings
are the benchmark's to print, never checked here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_streaming", ROOT / "benchmarks" / "streaming.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_streaming_benchmark_small(wire: str, tmp_path: Path) -> None:
    measure = _benchmark().measure
    limits = (16, 64)
    figures: dict[str, Any] = (
        await measure(tmp_path, tokens=40, runs=3, limits=limits, wires=(wire,))
    )[wire]

    side = figures["completed_vs_streamed"]
    assert side["deltas_per_streamed_run"] == 40 and side["same_reply"]
    assert side["us_per_run_completed"] > 0 and side["us_per_run_streamed"] > 0

    cuts = figures["cutoff_endless_server"]
    assert [c["max_tokens"] for c in cuts] == list(limits)
    for cut in cuts:
        assert cut["status"] == "completed" and cut["finish_reason"] == "length"
        assert cut["output_tokens_recorded"] == cut["text_tokens_kept"] == cut["max_tokens"]
        assert cut["settled_within_reserved"], cut
        # The piece past the limit is the cut-off: it is read, not taken, and nothing after it.
        assert cut["events_read_past_limit"] == 1, cut
        assert cut["events_server_wrote"] > cut["max_tokens"]  # the server did not stop

    once, always = figures["dropped_stream"]
    assert (once["attempts"], once["failed_attempts"], once["status"]) == (2, 1, "completed")
    assert once["output_is_whole_reply"] and once["replay_matches"]
    assert (always["attempts"], always["failed_attempts"], always["status"]) == (3, 3, "failed")
    assert not always["output_is_whole_reply"] and always["replay_matches"]
    assert once["errors"] == always["errors"] == ["ModelConnectionError"]
