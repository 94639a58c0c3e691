"""Runs recorded on a real SQLite file for the CLI tests, one for each thing ``show`` draws:
retries and a fallback, a run that fails with a long error, a budget stop, memory compaction,
a tool tier skipped by its breaker. Run ids are fixed so tests can name them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BreakerPolicy,
    BudgetPolicy,
    Budgets,
    Engine,
    MemoryPolicy,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    RetryPolicy,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import SqliteEventStore, Usage

PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))

LONG_ERROR = (
    "upstream said no: " + "the model provider returned an error page " * 4 + "\nsecond line "
    "of the provider's message\nthird line, with the reason at the very end: quota"
)
"""A failure message of several lines and over 200 characters (shown in full, not cut)."""


class Query(BaseModel):
    q: str


@tool
async def look(args: Query, ctx: ToolContext) -> str:
    """Look something up."""
    return "found"


@tool
async def flaky(args: Query, ctx: ToolContext) -> str:
    """A tool whose primary tier is always down."""
    raise ConnectionError("primary is down")


@flaky.tier("backup")
async def flaky_backup(args: Query, ctx: ToolContext) -> str:
    return "from the backup"


class PageArgs(BaseModel):
    page: int


@tool(name="fetch")
async def fetch(args: PageArgs, ctx: ToolContext) -> dict[str, object]:
    """Fetch a long page."""
    return {"page": args.page, "body": f"page {args.page} " + "lorem ipsum dolor " * 400}


def _reader(request: ModelRequest) -> ModelReply:
    """Fetches pages 1, 2, 3 one turn each, then answers."""
    turn = 1 + sum(1 for m in request.messages if m.role == "assistant")
    # Reports what it was sent, about four characters a token, as a provider would.
    usage = Usage(input_tokens=sum(len(m.content) for m in request.messages) // 4, output_tokens=5)
    if turn > 3:
        return reply("Done reading.", usage=usage)
    return reply(tool_calls=[call("fetch", {"page": turn}, id=f"p{turn}")], usage=usage)


def _summariser(request: ModelRequest) -> ModelReply:
    return reply(
        "Pages were fetched; all lorem ipsum.", usage=Usage(input_tokens=9, output_tokens=9)
    )


@dataclass
class Recorded:
    """What the tests compare the CLI's output with: each agent model request as sent."""

    reader_requests: list[ModelRequest] = field(default_factory=list)


def _fallback_agent() -> Agent:
    primary = ScriptedModel(
        [ModelServerError("primary", "boom", status_code=500) for _ in range(3)], name="primary"
    )
    fallback = ScriptedModel([reply("From the fallback.")], name="fallback")
    return Agent(name="resilient", model=primary, fallback_models=[fallback])


def _failing_agent() -> Agent:
    model = ScriptedModel([ModelServerError("solo", LONG_ERROR, status_code=503)], name="solo")
    return Agent(name="doomed", model=model, retry=RetryPolicy(max_attempts=1))


def _capped_agent() -> Agent:
    expensive = Usage(input_tokens=100, output_tokens=900)

    def script(request: ModelRequest) -> ModelReply:
        return reply(
            "Draft: checking.", tool_calls=[call("look", {"q": "x"}, id="c1")], usage=expensive
        )

    model = ScriptedModel(script, name="priced", price=PRICE)
    return Agent(name="spender", model=model, tools=[look], max_tokens=1_000)


def _breaker_agent() -> Agent:
    calls = [call("flaky", {"q": str(i)}, id=f"f{i}") for i in (1, 2)]
    model = ScriptedModel([reply(tool_calls=calls[:1]), reply(tool_calls=calls[1:]), reply("ok")])
    return Agent(
        name="tripper",
        model=model,
        tools=[flaky],
        breaker=BreakerPolicy(threshold=1, cooldown=timedelta(hours=1)),
    )


def _reader_agent(recorded: Recorded) -> Agent:
    def script(request: ModelRequest) -> ModelReply:
        recorded.reader_requests.append(request)
        return _reader(request)

    return Agent(
        name="reader",
        model=ScriptedModel(script, name="reader-model"),
        summary_model=ScriptedModel(_summariser, name="summariser"),
        tools=[fetch],
        memory=MemoryPolicy(
            max_tokens=3_000, compact_at=2_000, keep_recent_turns=1, summary_max_tokens=100
        ),
    )


async def record_runs(db: Path) -> Recorded:
    """Record the runs ``fallback``, ``failed``, ``capped``, ``breaker`` and ``memory``."""
    recorded = Recorded()
    budgets = Budgets(
        {"free": BudgetPolicy(per_run_usd=Decimal("0.012")), "default": BudgetPolicy()}
    )
    async with (
        SqliteEventStore(db) as store,
        Engine(
            store,
            clock=FakeClock(tick=timedelta(seconds=1)),
            ids=SequentialIds("cli"),
            budgets=budgets,
        ) as engine,
    ):
        runs = [
            (_fallback_agent(), "fallback", "default", "completed"),
            (_failing_agent(), "failed", "default", "failed"),
            (_capped_agent(), "capped", "free", "budget_exceeded"),
            (_breaker_agent(), "breaker", "default", "completed"),
            (_reader_agent(recorded), "memory", "default", "completed"),
        ]
        for agent, run_id, surface, status in runs:
            result = await engine.run(
                agent, f"task of {run_id}", user_id="ada", run_id=run_id, surface=surface
            )
            assert result.status == status, (run_id, result.status, result.error)
    return recorded


def messages_json(request: ModelRequest) -> list[object]:
    """A request's messages as ``show --context --json`` prints them."""
    return [json.loads(m.model_dump_json()) for m in request.messages]
