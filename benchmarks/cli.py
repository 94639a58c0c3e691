"""The command line on a log of many runs: how long a person waits for each command.

Records ``--runs`` short runs (a tool call and an answer each) and one long run of ``--turns``
turns into an SQLite file, then times the commands in-process (output thrown away), best of
``--repeat``:

- ``runs_cold_ms``: ``runs`` on a log whose run index was never saved (folds every event);
- ``runs_ms``: ``runs`` again (the saved index, nothing new to fold);
- ``show_long_ms`` / ``show_long_json_ms``: ``show`` of the long run, as a tree / as JSON;
- ``context_ms``: ``show --context N`` of the long run's last model call (a fold of the run);
- ``rebuild_events_per_s``: ``projections rebuild`` of all five saved projections, events
  folded per second (each projection folds every event);
- ``startup_ms``: ``python -m agentledger.engine --help`` as a process (imports included).

    python benchmarks/cli.py [--runs N] [--turns N] [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from agentledger.engine import Agent, Engine, ModelReply, ModelRequest, ToolContext, tool
from agentledger.engine.cli import main
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import SqliteEventStore


class Query(BaseModel):
    q: str


@tool
async def lookup(args: Query, ctx: ToolContext) -> dict[str, str]:
    """Look something up."""
    return {"q": args.q, "answer": "found " * 20}


def _script(turns: int) -> Any:
    def answer(request: ModelRequest) -> ModelReply:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done >= turns:
            return reply("All looked up.")
        return reply(tool_calls=[call("lookup", {"q": f"item {done}"}, id=f"c{done}")])

    return answer


async def record(db: Path, runs: int, turns: int) -> None:
    """``runs`` runs of two turns, then the run ``long`` of ``turns`` tool turns."""
    async with (
        SqliteEventStore(db) as store,
        Engine(store, clock=FakeClock(), ids=SequentialIds("b")) as engine,
    ):
        short = Agent(name="short", model=ScriptedModel(_script(1)), tools=[lookup])
        for index in range(runs):
            result = await engine.run(short, "task", user_id=f"user{index % 50}")
            assert result.status == "completed"
        long = Agent(
            name="long", model=ScriptedModel(_script(turns)), tools=[lookup], max_turns=turns + 5
        )
        result = await engine.run(long, "a long task", run_id="long")
        assert result.status == "completed", result.error


def _timed(*argv: str) -> float:
    sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    started = time.perf_counter()
    with redirect_stdout(sink), redirect_stderr(io.StringIO()):
        code = main(list(argv))
    elapsed = (time.perf_counter() - started) * 1000
    if code != 0:
        raise RuntimeError(f"agentledger {' '.join(argv)} exited {code}")
    return elapsed


def _best(repeat: int, *argv: str) -> float:
    return round(min(_timed(*argv) for _ in range(repeat)), 1)


def measure(runs: int = 2000, turns: int = 200, repeat: int = 3) -> dict[str, Any]:
    """Record the log and time the commands; the figures as a dict."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "log.db"
        anyio.run(record, db, runs, turns)
        where = ("--db", str(db))
        cold = round(_timed("runs", *where), 1)
        figures: dict[str, Any] = {"runs": runs + 1, "long_run_turns": turns}
        figures["runs_cold_ms"] = cold
        figures["runs_ms"] = _best(repeat, "runs", *where)
        figures["show_long_ms"] = _best(repeat, "show", "long", *where)
        figures["show_long_json_ms"] = _best(repeat, "show", "long", "--json", *where)
        figures["context_ms"] = _best(repeat, "show", "long", "--context", str(turns + 1), *where)
        sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        with redirect_stdout(sink):
            assert main(["projections", "rebuild", "--json", *where]) == 0
            sink.flush()
            rebuilt = json.loads(sink.buffer.getvalue())  # type: ignore[attr-defined]
        events = sum(r["events"] for r in rebuilt)
        seconds = sum(r["seconds"] for r in rebuilt)
        figures["events"] = rebuilt[0]["events"]
        figures["rebuild_events_per_s"] = round(events / seconds) if seconds else None
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agentledger.engine", "--help"], check=True, capture_output=True
    )
    figures["startup_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return figures


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    print(json.dumps(measure(options.runs, options.turns, options.repeat)))


if __name__ == "__main__":
    _main()
