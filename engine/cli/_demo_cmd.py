"""``agentledger demo``: two runs of the demo agent, its events printed as they commit."""

from __future__ import annotations

import argparse

from rich.text import Text

from agentledger.engine._engine import Engine

from ._output import Output, text
from ._runs import RunFilter, render_runs, select_runs
from ._show import entry_text
from ._store import open_store
from ._timeline import Entry


async def command(options: argparse.Namespace, out: Output) -> int:
    """Run the demo agent twice for one user (the second run reuses the recorded email)."""
    from ._demo import DEMO_BUDGETS, demo_agent

    agent = demo_agent()
    task = "Plan my weekend in Lisbon"
    out.line(f"agentledger demo: the event log is {options.db}")
    reused = sent = 0
    async with (
        open_store(options.db, create=True) as store,
        Engine(store, budgets=DEMO_BUDGETS) as engine,
    ):
        for attempt in (1, 2):
            out.line()
            out.line(f"Run {attempt}: {task!r} for user ada, events as they commit:", "bold")
            start = None
            async for recorded in engine.stream(agent, task, user_id="ada", surface="demo"):
                event = recorded.event
                start = start or event.at
                reused += event.type == "tool_result_reused"
                sent += event.type == "tool_call_succeeded" and event.tool_name == "send_itinerary"
                out.print(Text.assemble("  ", entry_text(Entry(recorded.version, event), start)))
        out.line()
        out.line(
            f"Emails sent: {sent}; sends answered from the idempotency ledger instead: {reused}."
        )
        out.line()
        out.line("Runs in the log, newest first:", "bold")
        render_runs(out, await select_runs(store, RunFilter(limit=10)))
    out.line()
    out.print(
        text(
            f"Next: agentledger show RUN (an id prefix will do), show RUN --context 2, "
            f"spend ada, critic {agent.name}, health, tail  (--db {options.db})",
            "dim",
        )
    )
    return 0
