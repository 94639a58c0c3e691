"""What-if on real SQLite: recorded runs forked with another model, run live, and compared
old against new per run and in total; the budget that stops starting runs; the refusal of
side-effecting tools unless allowed, and what running them again means."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Critic,
    Engine,
    MaxLength,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import SqliteEventStore, Usage
from agentledger.projections import RunFilter, find_runs, fold_ledger
from agentledger.replay import WhatIfError, WhatIfProgress

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets(
    {
        "free": BudgetPolicy(per_run_usd=Decimal("1"), per_user_day_usd=Decimal("5")),
        "lab": BudgetPolicy(per_run_usd=Decimal("1"), per_user_day_usd=Decimal("5")),
    }
)
SENT: list[str] = []


class City(BaseModel):
    city: str


@tool
async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
    """Weather for a city."""
    return {"city": args.city, "sky": "clear"}


@tool(side_effect=True)
async def notify(args: City, ctx: ToolContext) -> str:
    """Tell the city's office."""
    SENT.append(args.city)
    return "sent"


def old_agent() -> Agent:
    def script(request: object) -> object:
        # First turn: look the weather up; second: answer.
        if len(request.messages) <= 2:  # type: ignore[attr-defined]
            city = request.messages[-1].content  # type: ignore[attr-defined]
            return reply(
                tool_calls=[call("weather", {"city": city}, id="c1")],
                usage=Usage(input_tokens=100, output_tokens=10),
            )
        return reply("Clear skies.", usage=Usage(input_tokens=200, output_tokens=10))

    model = ScriptedModel(script, name="old", price=PRICE)  # type: ignore[arg-type]
    return Agent(name="forecaster", model=model, system_prompt="You forecast.", tools=[weather])


def new_agent(*, tools: tuple[object, ...] = (weather,)) -> Agent:
    # Answers at once, without the tool, too long for the critic; briefly when asked to revise.
    def script(request: object) -> object:
        revising = any(m.role == "assistant" for m in request.messages)  # type: ignore[attr-defined]
        text = "Clear." if revising else "Clear skies over the city today, and tomorrow too."
        return reply(text, usage=Usage(input_tokens=50, output_tokens=5))

    model = ScriptedModel(script, name="new", price=PRICE)  # type: ignore[arg-type]
    return Agent(
        name="forecaster-v2",
        model=model,
        system_prompt="You forecast, briefly.",
        tools=list(tools),  # type: ignore[arg-type]
        critic=Critic(checks=[MaxLength(words=5)]),
    )


async def record(db: Path, cities: list[str]) -> list[str]:
    async with SqliteEventStore(db) as store:
        clock = FakeClock(T0, tick=timedelta(seconds=1))
        async with Engine(store, clock=clock, budgets=BUDGETS, ids=SequentialIds("r")) as engine:
            return [
                (await engine.run(old_agent(), city, user_id="ada", surface="free")).run_id
                for city in cities
            ]


def whatif_engine(store: SqliteEventStore) -> Engine:
    clock = FakeClock(T0 + timedelta(hours=1), tick=timedelta(seconds=1))
    return Engine(store, clock=clock, budgets=BUDGETS, ids=SequentialIds("w"))


async def test_old_and_new_side_by_side_per_run_and_in_total(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = await record(db, ["Oslo", "Rome", "Lima"])
    seen: list[WhatIfProgress] = []
    async with SqliteEventStore(db) as store, whatif_engine(store) as engine:
        ada_day = await store.read_stream("budget-ada-2026-03-01")
        report = await engine.whatif(
            RunFilter(agent="forecaster"),
            new_agent(),
            user_id="lab",
            surface="lab",
            concurrency=3,
            progress=seen.append,
        )
        assert [r.run_id for r in report.runs] == runs and not report.skipped
        first = report.runs[0]
        assert first.old.status == first.new.status == "completed"
        assert (first.old.output, first.new.output) == ("Clear skies.", "Clear.")
        assert first.output_changed and 0 < first.similarity < 1
        assert "-Clear skies." in first.diff and "+Clear." in first.diff
        assert (first.old.turns, first.old.tool_calls) == (2, 1)
        assert (first.new.tool_calls, first.new.critic_rejected, first.new.critic_accepted) == (
            0,
            1,
            1,
        )
        assert (first.old.critic_accepted, first.old.critic_rejected) == (0, 0)
        per_call = Decimal(50) * 2 / 10**6 + Decimal(5) * 8 / 10**6
        assert first.new_spend_usd == first.new.cost_usd == 2 * per_call  # answer + revision
        # The forks are charged to the lab, never to ada, whose runs they copy.
        assert await store.read_stream("budget-ada-2026-03-01") == ada_day
        lab = fold_ledger(await store.read_stream("budget-lab-2026-03-01"))
        assert lab.settled == report.spent_usd == 3 * 2 * per_call
        forks = await find_runs(store, RunFilter(forks=True))
        assert {(f.run_id, f.forked_from, f.agent) for f in forks} == {
            (r.fork_id, r.run_id, "forecaster-v2") for r in report.runs
        }

    totals = report.totals
    assert totals["runs"] == 3 and totals["outputs_changed"] == 3
    assert totals["old"]["tool_calls"] == 3 and totals["new"]["tool_calls"] == 0
    assert totals["new"]["critic_rejected"] == 3 and totals["old"]["statuses"] == {"completed": 3}
    assert Decimal(totals["spent_usd"]) == report.spent_usd
    assert sorted(p.done for p in seen) == [1, 2, 3] and {p.outcome for p in seen} == {"compared"}
    decoded = json.loads(json.dumps(report.to_dict()))
    assert decoded["runs"][0]["old"]["output"] == "Clear skies."


async def test_runs_past_the_budget_are_skipped_and_listed(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = await record(db, ["Oslo", "Rome", "Lima", "Kyiv"])
    async with SqliteEventStore(db) as store, whatif_engine(store) as engine:
        recorded_cost = (await engine.result(runs[0])).cost_usd  # the guess for each fork
        fork_cost = 2 * (Decimal(50) * 2 / 10**6 + Decimal(5) * 8 / 10**6)  # what one spends
        assert fork_cost < recorded_cost
        # A run starts if what was spent plus its guess fits: after two forks, the third's
        # guess no longer does.
        budget = 2 * fork_cost + recorded_cost - Decimal("0.00001")
        report = await engine.whatif(
            runs, new_agent(), budget_usd=budget, concurrency=1, user_id="lab", surface="lab"
        )
        assert [r.run_id for r in report.runs] == runs[:2]
        assert [(s.run_id, s.reason) for s in report.skipped] == [
            (runs[2], "budget"),
            (runs[3], "budget"),
        ]
        assert report.spent_usd <= budget
        assert report.totals["skipped_for_budget"] == 2
        assert len(await find_runs(store, RunFilter(forks=True))) == 2  # no fork for a skip


@tool(side_effect=True, key_scope="user")
async def notify_once(args: City, ctx: ToolContext) -> str:
    """Tell the city's office, once per user."""
    SENT.append(f"once:{args.city}")
    return "sent"


def teller(side_effect: object) -> Agent:
    name = side_effect.name  # type: ignore[attr-defined]
    model = ScriptedModel(
        lambda request: (
            reply("Told.")
            if any(m.role == "tool" for m in request.messages)  # type: ignore[attr-defined]
            else reply(tool_calls=[call(name, {"city": "Oslo"}, id="n1")])
        ),
        name="new",
        price=PRICE,
    )
    return Agent(name="teller", model=model, tools=[side_effect])  # type: ignore[list-item]


async def test_side_effecting_tools_need_consent_and_then_run_again_under_the_forks_keys(
    tmp_path: Path,
) -> None:
    async with SqliteEventStore(tmp_path / "runs.db") as store, whatif_engine(store) as engine:
        SENT.clear()
        run_scoped = (await engine.run(teller(notify), "Tell Oslo.", surface="lab")).run_id
        user_scoped = (await engine.run(teller(notify_once), "Tell Oslo.", surface="lab")).run_id
        assert SENT == ["Oslo", "once:Oslo"]
        with pytest.raises(WhatIfError, match=r"side-effecting tools \(notify\)"):
            await engine.whatif([run_scoped], teller(notify))
        assert not await find_runs(store, RunFilter(forks=True))  # refused before any fork

        # key_scope="run": the fork's key names the fork, so the side effect happens again.
        report = await engine.whatif([run_scoped], teller(notify), allow_side_effects=True)
        assert SENT == ["Oslo", "once:Oslo", "Oslo"] and report.runs[0].new.output == "Told."
        # key_scope="user", same user: the recorded outcome is reused, nothing runs again...
        await engine.whatif([user_scoped], teller(notify_once), allow_side_effects=True)
        assert SENT == ["Oslo", "once:Oslo", "Oslo"]
        # ...but charged to another user, the key is another one: it runs.
        await engine.whatif(
            [user_scoped], teller(notify_once), allow_side_effects=True, user_id="lab"
        )
        assert SENT == ["Oslo", "once:Oslo", "Oslo", "once:Oslo"]


async def test_a_run_that_cannot_be_forked_is_an_entry_not_an_exception(tmp_path: Path) -> None:
    runs = await record(tmp_path / "runs.db", ["Oslo"])
    async with SqliteEventStore(tmp_path / "runs.db") as store, whatif_engine(store) as engine:
        report = await engine.whatif(["no-such-run", *runs], new_agent(), at_version=3)
        assert [(s.run_id, s.reason) for s in report.skipped] == [
            ("no-such-run", "error"),
            (runs[0], "error"),
        ]
        assert "RunNotFoundError" in report.skipped[0].message
        assert (
            "ForkError" in report.skipped[1].message
            and "model request" in report.skipped[1].message
        )
