"""Replay of many runs and what-if on an SQLite file: how fast, and whether every run reproduces.

Records ``runs`` runs through the engine (two turns: a tool call, then an answer; budgets on, so
every model call reserves and settles in the user's day ledger), then:

- ``replay_runs_per_s_c1`` / ``_c4``: ``Engine.replay_all`` over every run, 1 and 4 at once
  (``identical`` must equal ``runs``);
- ``changed_prompt_divergent``: ``replay_all`` with the system prompt changed (every run must
  diverge, at version 1);
- ``whatif_runs_per_s_c4``: ``Engine.whatif`` of every run with another (scripted) model, 4 at
  once: fork at the start, run live, compare; ``whatif_outputs_changed`` must equal ``runs``.

    python benchmarks/replay_many.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelReply,
    ModelRequest,
    Price,
    RunFilter,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import SqliteEventStore, Usage

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets({"default": BudgetPolicy(per_run_usd=Decimal("1"))})


class City(BaseModel):
    city: str


@tool
async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
    """Weather for a city."""
    return {"city": args.city, "sky": "clear"}


def forecaster(answer: str, model_name: str) -> Agent:
    def script(request: ModelRequest) -> ModelReply:
        if any(m.role == "tool" for m in request.messages):
            return reply(answer, usage=Usage(input_tokens=200, output_tokens=10))
        city = request.messages[-1].content
        return reply(
            tool_calls=[call("weather", {"city": city}, id="c1")],
            usage=Usage(input_tokens=100, output_tokens=10),
        )

    model = ScriptedModel(script, name=model_name, price=PRICE)
    return Agent(name="forecaster", model=model, system_prompt="You forecast.", tools=[weather])


async def main(runs: int, db: Path) -> dict[str, object]:
    """Record ``runs`` runs in ``db``, then replay them and what-if them; the figures."""
    agent = forecaster("Clear skies.", "old")
    figures: dict[str, object] = {"runs": runs}
    async with SqliteEventStore(db) as store:
        clock = FakeClock(T0, tick=timedelta(milliseconds=1))
        async with Engine(
            store, agents=[agent], clock=clock, ids=SequentialIds("r"), budgets=BUDGETS
        ) as engine:
            started = time.perf_counter()
            for n in range(runs):
                await engine.run(agent, f"City {n}", user_id=f"user-{n % 10}")
            figures["record_runs_per_s"] = round(runs / (time.perf_counter() - started), 1)

            for concurrency in (1, 4):
                started = time.perf_counter()
                report = await engine.replay_all(concurrency=concurrency)
                elapsed = time.perf_counter() - started
                figures[f"replay_runs_per_s_c{concurrency}"] = round(runs / elapsed, 1)
                figures[f"replay_identical_c{concurrency}"] = len(report.identical)

            changed = replace(agent, system_prompt="You forecast, briefly.")
            report = await engine.replay_all(agent=changed, concurrency=4)
            figures["changed_prompt_divergent"] = len(report.divergent)
            figures["changed_prompt_versions"] = sorted({d.version for d in report.divergent})

            started = time.perf_counter()
            whatif = await engine.whatif(
                RunFilter(forks=False), forecaster("Sunny.", "new"), user_id="whatif", concurrency=4
            )
            elapsed = time.perf_counter() - started
            figures["whatif_runs_per_s_c4"] = round(len(whatif.runs) / elapsed, 1)
            figures["whatif_outputs_changed"] = whatif.totals["outputs_changed"]
            figures["whatif_skipped"] = len(whatif.skipped)
            figures["whatif_spent_usd"] = str(whatif.spent_usd)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 runs, for a smoke check")
    parser.add_argument("--runs", type=int, default=500, help="how many runs to record")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        count = 50 if options.quick else options.runs
        print(json.dumps(anyio.run(main, count, Path(tmp) / "runs.db")))
