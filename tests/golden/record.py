"""Record the golden histories: ``python tests/golden/record.py [--check] [NAME...]``.

Runs each scenario of ``agents.py`` (all, or those named) in a fresh in-memory store on a fake
clock and writes its history to ``tests/golden/<name>.jsonl``. With ``--check`` nothing is
written: it says which files a recording today would change (exit status 1 if any), e.g. after
a change to the engine's events, to decide whether the goldens should be recorded again.

Prints one JSON object: per scenario, the events written and whether the file changed.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import anyio
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # so ``golden.agents`` imports as it does in the tests

from golden.agents import SCENARIOS, T0, Scenario, play  # noqa: E402

from agentledger.engine.testing import FakeClock  # noqa: E402
from agentledger.events import MemoryEventStore  # noqa: E402
from agentledger.replay import export_history  # noqa: E402


async def record(scenario: Scenario) -> tuple[bytes, int]:
    """The history file of ``scenario``, recorded now, and its number of events."""
    clock = FakeClock(T0)
    async with MemoryEventStore(clock=clock.now) as store:
        await play(scenario, store, clock)
        out = io.BytesIO()
        report = await export_history(store, [scenario.run_id], out, clock=lambda: T0)
    return out.getvalue(), report.events


async def main(names: list[str], check: bool) -> int:
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    summary: dict[str, dict[str, object]] = {}
    for name in names or list(SCENARIOS):
        data, events = await record(SCENARIOS[name])
        path = HERE / f"{name}.jsonl"
        changed = not path.exists() or path.read_bytes() != data
        if changed and not check:
            path.write_bytes(data)
        summary[name] = {"events": events, "changed": changed}
    print(orjson.dumps({"check": check, "scenarios": summary}).decode())
    return 1 if check and any(s["changed"] for s in summary.values()) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios to record (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; report changes")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.names, args.check))
