"""Generated hostile model replies over real HTTP, thousands per client: what they did to runs.

A loopback HTTP server answers every request of the OpenAI-compatible and the Anthropic client
with a reply drawn from ``tests/hostile_replies.py`` (half well-formed, half broken in the ways
servers have been seen to break, and worse); each run has a tool, a capped budget and retries.
Prints one JSON object: per client, runs, requests, unhandled exceptions, runs left running,
reservations left charged, events over 1 MiB, the largest event, tool runs with invalid
arguments, statuses and failed attempts by error type.

    python benchmarks/hostile_replies.py [--runs 5000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile_runs import hostile_runs


async def main(runs: int, seed: int) -> dict[str, object]:
    report: dict[str, object] = {"benchmark": "hostile_replies", "runs_per_client": runs}
    for client in ("openai", "anthropic"):
        started = time.perf_counter()
        tally = await hostile_runs(client, runs=runs, seed=seed)  # type: ignore[arg-type]
        report[client] = {
            "runs": tally.runs,
            "requests": tally.requests,
            "seconds": round(time.perf_counter() - started, 1),
            "unhandled_exceptions": len(tally.unhandled),
            "unhandled_examples": tally.unhandled[:5],
            "runs_left_running": tally.left_running,
            "reservations_left_charged": tally.reservations_left,
            "events_over_1_mib": tally.events_over_cap,
            "largest_event_bytes": tally.largest_event_bytes,
            "tool_runs": tally.tool_runs,
            "tool_runs_with_invalid_arguments": tally.tool_runs_with_invalid_arguments,
            "statuses": dict(tally.statuses),
            "failed_attempts": dict(tally.failures),
        }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs per client")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, options.runs, options.seed)))
