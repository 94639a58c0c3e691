"""Runs through the engine against a hostile model server, tallied: what a hostile reply did.

Used by ``tests/test_hostile_replies.py`` and ``benchmarks/hostile_replies.py``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import httpx
from hostile_replies import HostileServer, anthropic_reply, openai_reply
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    AnthropicModel,
    BudgetPolicy,
    Budgets,
    Engine,
    Model,
    OpenAIChatModel,
    RetryPolicy,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock
from agentledger.events import EventCodec, MemoryEventStore
from agentledger.projections import fold_ledger

MAX_EVENT_BYTES = 1024 * 1024
BUDGETS = Budgets({"capped": BudgetPolicy(per_run_usd=Decimal("5"))})


class Query(BaseModel):
    q: str


@dataclass
class Tally:
    """What the runs came to."""

    runs: int = 0
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    """Failed attempts by error type."""
    unhandled: list[str] = field(default_factory=list)
    left_running: int = 0
    reservations_left: int = 0
    largest_event_bytes: int = 0
    events_over_cap: int = 0
    tool_runs: int = 0
    tool_runs_with_invalid_arguments: int = 0


def _lookup_tool(tally: Tally) -> object:
    @tool
    async def lookup(args: Query, ctx: ToolContext) -> dict[str, str]:
        """Look a city up."""
        tally.tool_runs += 1
        if not (isinstance(args, Query) and isinstance(args.q, str)):
            tally.tool_runs_with_invalid_arguments += 1
        return {"city": args.q, "sky": "clear"}

    return lookup


def _model(client: Literal["openai", "anthropic"], url: str, http: httpx.AsyncClient) -> Model:
    if client == "openai":
        return OpenAIChatModel("gpt-4o-mini", api_key="sk-test", base_url=url + "/v1", client=http)
    return AnthropicModel(
        "claude-3-5-haiku-latest", api_key="sk-ant-test", base_url=url, client=http
    )


async def hostile_runs(client: Literal["openai", "anthropic"], runs: int, seed: int) -> Tally:
    """Drive ``runs`` runs (a tool, a capped budget, retries) against a hostile server."""
    rng = random.Random(seed)
    make = openai_reply if client == "openai" else anthropic_reply
    tally = Tally()
    lookup = _lookup_tool(tally)
    async with HostileServer(lambda: make(rng)) as server, httpx.AsyncClient() as http:
        agent = Agent(
            name=f"hostile-{client}",
            model=_model(client, server.url, http),
            tools=[lookup],  # type: ignore[list-item]
            max_turns=3,
            retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        )
        async with (
            MemoryEventStore() as store,
            Engine(store, clock=FakeClock(), budgets=BUDGETS) as engine,
        ):
            for index in range(runs):
                run_id = f"r{index}"
                try:
                    result = await engine.run(
                        agent, "Weather in Paris?", run_id=run_id, surface="capped"
                    )
                except Exception as exc:  # the property: nothing comes out of a run but a result
                    tally.unhandled.append(f"{run_id}: {type(exc).__name__}: {exc}"[:300])
                    continue
                tally.runs += 1
                tally.statuses[result.status] += 1
                events = await store.read_stream(f"run-{run_id}")
                if fold_ledger(events).outstanding:
                    tally.reservations_left += 1
                if result.status == "running":
                    tally.left_running += 1
                for recorded in events:
                    size = len(EventCodec.encode(recorded.event))
                    tally.largest_event_bytes = max(tally.largest_event_bytes, size)
                    tally.events_over_cap += size > MAX_EVENT_BYTES
                    if recorded.event.type == "model_call_failed":
                        tally.failures[recorded.event.error_type] += 1
    tally.requests = server.requests
    return tally
