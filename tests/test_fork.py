"""Forks on real stores (SQLite, and every backend where a test takes ``store``): the copy folds
to the original's state, records its lineage, goes on live with another agent, charges the day
ledger once for what it copied, leaves confirmations to the fork, and replays."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    Price,
    RunExistsError,
    RunNotFoundError,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import EventStore, RunResumed, RunStarted, SqliteEventStore, Usage
from agentledger.projections import RunFilter, find_runs, fold_ledger, fold_run
from agentledger.replay import ForkError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = date(2026, 3, 1)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets({"free": BudgetPolicy(per_run_usd=Decimal("1"), per_user_day_usd=Decimal("5"))})
EXECUTIONS: list[str] = []


class City(BaseModel):
    city: str


@tool
async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
    """Weather for a city."""
    EXECUTIONS.append(args.city)
    return {"city": args.city, "sky": "clear"}


def forecaster(*answers: str, name: str = "m") -> Agent:
    replies = [
        reply(
            tool_calls=[call("weather", {"city": "Oslo"}, id="c1")],
            usage=Usage(input_tokens=100, output_tokens=10),
        ),
        *[reply(a, usage=Usage(input_tokens=200, output_tokens=10)) for a in answers],
    ]
    model = ScriptedModel(replies, name=name, price=PRICE)
    return Agent(name="forecaster", model=model, system_prompt="You forecast.", tools=[weather])


# The recorded run: 1 run_started, 2 turn_started, 3 model_call_requested, 4 budget_reserved,
# 5 model_call_responded, 6 budget_settled, 7 tool_call_intended, 8 tool_call_succeeded,
# 9 turn_started, 10 requested, 11 reserved, 12 responded, 13 settled, 14 run_completed.
RESUMABLE = [1, 2, 6, 8, 9, 13]
IN_FLIGHT = {3: "model request", 4: "model request", 5: "reservation", 7: "tool call"}


def engine_on(store: EventStore) -> Engine:
    return Engine(store, clock=FakeClock(T0), budgets=BUDGETS, ids=SequentialIds("e"))


async def record(engine: Engine) -> str:
    result = await engine.run(forecaster("Clear in Oslo."), "Oslo?", user_id="ada", surface="free")
    assert result.status == "completed"
    return result.run_id


def _comparable(state: object, run_id: str) -> str:
    """The state with its identity left out: the start event, and the run id wherever the
    copied events carry it."""
    fields = {k: v for k, v in vars(state).items() if k != "started"}
    return repr(fields).replace(repr(run_id), "'<run>'")


async def test_a_fork_folds_to_the_originals_state_at_every_resumable_version(
    store: EventStore,
) -> None:
    async with engine_on(store) as engine:
        run_id = await record(engine)
        original = await store.read_stream(f"run-{run_id}")
        assert len(original) == 14
        for version in RESUMABLE:
            fork_id = await engine.fork(run_id, at_version=version)
            copied = await store.read_stream(f"run-{fork_id}")
            assert len(copied) == version
            assert all(r.event.run_id == fork_id for r in copied)
            forked, then = fold_run(copied), fold_run(original[:version])
            assert _comparable(forked, fork_id) == _comparable(then, run_id), version
            started = forked.started
            assert isinstance(started, RunStarted)
            assert (started.forked_from, started.forked_at_version) == (run_id, version)
            assert (started.task, started.user_id) == ("Oslo?", "ada")
            assert started.system_prompt == original[0].event.system_prompt  # type: ignore[union-attr]


@pytest.mark.parametrize(("version", "what"), sorted(IN_FLIGHT.items()))
async def test_a_fork_point_with_work_in_flight_is_refused(
    tmp_path: Path, version: int, what: str
) -> None:
    async with SqliteEventStore(tmp_path / "runs.db") as store, engine_on(store) as engine:
        run_id = await record(engine)
        with pytest.raises(ForkError, match=what):
            await engine.fork(run_id, at_version=version)
        for bad, message in [(14, "has ended"), (15, "versions 1 to 14"), (0, "versions 1 to 14")]:
            with pytest.raises(ForkError, match=message):
                await engine.fork(run_id, at_version=bad)
        with pytest.raises(RunNotFoundError):
            await engine.fork("nobody")
        fork_id = await engine.fork(run_id)
        with pytest.raises(RunExistsError):
            await engine.fork(run_id, new_run_id=fork_id)
        # Nothing was written for a refused fork: only the one fork exists besides the original.
        assert len(await find_runs(store)) == 2


async def test_a_fork_goes_on_live_with_another_model_and_charges_only_its_own_calls(
    store: EventStore,
) -> None:
    async with engine_on(store) as engine:
        run_id = await record(engine)
        day = f"budget-ada-{DAY.isoformat()}"
        ledger_before = await store.read_stream(day)
        spent_before = fold_ledger(ledger_before).settled
        assert spent_before > 0

        # Fork after the tool's result (version 8): the new model writes the answer.
        other = Agent(
            name="forecaster",
            model=ScriptedModel(
                [reply("Oslo: sunny, 3 °C.", usage=Usage(input_tokens=50, output_tokens=5))],
                name="other",
                price=PRICE,
            ),
            system_prompt="You forecast.",
            tools=[weather],
        )
        executions = len(EXECUTIONS)
        fork_id = await engine.fork(run_id, at_version=8, agent=other)
        assert await store.read_stream(day) == ledger_before  # copying charged nothing
        result = await engine.resume(fork_id, agent=other)
        assert result.status == "completed"
        assert result.output == "Oslo: sunny, 3 °C."
        assert (await engine.result(run_id)).output == "Clear in Oslo."
        assert len(EXECUTIONS) == executions  # the copied tool call is history, not run again

        fork_events = await store.read_stream(f"run-{fork_id}")
        resumed = fork_events[8].event
        assert isinstance(resumed, RunResumed) and resumed.reason == "forked"
        new_cost = sum(
            (r.event.cost_usd for r in fork_events[8:] if r.event.type == "model_call_responded"),
            Decimal(0),
        )
        assert new_cost == Decimal("50") * 2 / 10**6 + Decimal("5") * 8 / 10**6
        # The day ledger: the original's charges once, plus the fork's one new call.
        ledger = await store.read_stream(day)
        assert len(ledger) == len(ledger_before) + 2  # the fork's reservation and settlement
        assert {r.event.run_id for r in ledger[len(ledger_before) :]} == {fork_id}
        assert fold_ledger(ledger).settled == spent_before + new_cost
        # The fork's run spend counts its copied calls too (its conversation cost that much).
        assert (await engine.load(fork_id)).spent_usd == fold_ledger(
            (await store.read_stream(f"run-{run_id}"))[:8]
        ).settled + new_cost

        rows = await find_runs(store, RunFilter(forks=True))
        assert [(r.run_id, r.forked_from) for r in rows] == [(fork_id, run_id)]


async def test_a_fork_at_the_start_with_a_new_prompt_sends_the_new_prompt(
    tmp_path: Path,
) -> None:
    async with SqliteEventStore(tmp_path / "runs.db") as store, engine_on(store) as engine:
        run_id = await record(engine)
        brief = replace(forecaster("Clear.", name="m"), system_prompt="You forecast, briefly.")
        fork_id = await engine.fork(run_id, agent=brief, user_id="lab")
        result = await engine.resume(fork_id, agent=brief)
        assert result.output == "Clear."
        model = brief.model
        assert isinstance(model, ScriptedModel)
        assert model.requests[0].messages[0].content.startswith("You forecast, briefly.")
        started = (await engine.load(fork_id)).started
        assert started is not None
        assert (started.forked_from, started.forked_at_version, started.user_id) == (
            run_id,
            1,
            "lab",
        )
        # Charged to the lab's day ledger, not to ada's.
        assert fold_ledger(await store.read_stream(f"budget-lab-{DAY.isoformat()}")).settled > 0


async def test_a_continued_fork_replays_and_its_changed_agent_reproduces_it(
    tmp_path: Path,
) -> None:
    async with SqliteEventStore(tmp_path / "runs.db") as store, engine_on(store) as engine:
        run_id = await record(engine)
        other = replace(forecaster("Sunny.", name="other"), system_prompt="You forecast, briefly.")
        fork_id = await engine.fork(run_id, at_version=8, agent=other)
        await engine.resume(fork_id, agent=other)
        report = await engine.replay(fork_id, agent=other)
        assert report.divergence is None, report.divergence
        assert [r.event.type for r in report.replayed] == [r.event.type for r in report.recorded]
        # With the original agent, the fork's own part diverges (another model was asked).
        assert not (await engine.replay(fork_id, agent=forecaster("Clear in Oslo."))).matches


class Transfer(BaseModel):
    to: str


@tool(confirm=True, preview=lambda a: f"Pay {a.to}")
async def pay(args: Transfer, ctx: ToolContext) -> str:
    """Pay someone."""
    EXECUTIONS.append(f"pay:{args.to}")
    return "paid"


async def test_a_call_awaiting_confirmation_awaits_the_forks_own_approval(
    tmp_path: Path,
) -> None:
    def payer() -> Agent:
        model = ScriptedModel(
            lambda request: (
                reply("Done.")
                if any(m.role == "tool" for m in request.messages)  # type: ignore[attr-defined]
                else reply(tool_calls=[call("pay", {"to": "bob"}, id="p1")])
            ),
            name="m",
        )
        return Agent(name="payer", model=model, tools=[pay])

    async with SqliteEventStore(tmp_path / "runs.db") as store, engine_on(store) as engine:
        paused = await engine.run(payer(), "Pay bob.", user_id="ada", surface="free")
        assert paused.status == "paused" and paused.pending_confirmations == ("p1",)
        at = await store.stream_version(f"run-{paused.run_id}")
        await engine.approve(paused.run_id, "p1")
        assert (await engine.resume(paused.run_id)).output == "Done."
        assert EXECUTIONS.count("pay:bob") == 1

        # Forked where the original waited: the original's later approval is not copied.
        fork_id = await engine.fork(paused.run_id, at_version=at, agent=payer())
        waiting = await engine.resume(fork_id)
        assert waiting.status == "paused" and waiting.pending_confirmations == ("p1",)
        assert EXECUTIONS.count("pay:bob") == 1
        await engine.deny(fork_id, "p1", reason="not in the what-if")
        denied = await engine.resume(fork_id)
        assert denied.output == "Done." and EXECUTIONS.count("pay:bob") == 1
        # The fork replays: its copied prefix, then its own denial and session.
        report = await engine.replay(fork_id, agent=payer())
        assert report.matches, report.divergence
