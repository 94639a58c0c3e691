"""Replay: a recorded run runs again from its own log, reproducing its events and its spend."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Engine,
    ModelRateLimitedError,
    ModelServerError,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, call, reply
from agentledger.events import EventStore, Usage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets({"free": BudgetPolicy(per_run_usd=Decimal("1"), per_user_day_usd=Decimal("5"))})
EXECUTIONS: list[str] = []


class City(BaseModel):
    city: str


@tool
async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
    """Weather for a city."""
    EXECUTIONS.append(f"primary:{args.city}")
    raise ConnectionError("weather API down")


@weather.tier("cache")
async def cached(args: City, ctx: ToolContext) -> dict[str, str]:
    EXECUTIONS.append(f"cache:{args.city}")
    return {"city": args.city, "sky": "clear"}


def recorded_agent() -> tuple[Agent, ScriptedModel, ScriptedModel]:
    primary = ScriptedModel(
        [
            ModelRateLimitedError("primary", "slow down", retry_after=2.0),
            reply(
                tool_calls=[call("weather", {"city": "Oslo"}, id="c1")],
                usage=Usage(input_tokens=120, output_tokens=30),
            ),
            ModelServerError("primary", "boom", status_code=500),
            ModelServerError("primary", "boom", status_code=500),
            ModelServerError("primary", "boom", status_code=500),
        ],
        name="primary",
        price=PRICE,
    )
    backup = ScriptedModel(
        [reply("Clear skies in Oslo.", usage=Usage(input_tokens=200, output_tokens=12))],
        name="backup",
        price=PRICE,
    )
    agent = Agent(
        name="forecaster",
        model=primary,
        fallback_models=[backup],
        system_prompt="You forecast.",
        tools=[weather],
    )
    return agent, primary, backup


async def _record(store: EventStore) -> tuple[Engine, str, Agent, ScriptedModel, ScriptedModel]:
    agent, primary, backup = recorded_agent()
    engine = Engine(store, clock=FakeClock(T0), budgets=BUDGETS)
    async with engine:
        result = await engine.run(agent, "Oslo?", user_id="ada", surface="free")
    assert result.status == "completed"
    return engine, result.run_id, agent, primary, backup


async def test_replay_reproduces_events_and_spend_without_calling_anything(
    store: EventStore,
) -> None:
    engine, run_id, agent, primary, backup = await _record(store)
    calls_before = (len(primary.requests), len(backup.requests), len(EXECUTIONS))
    report = await engine.replay(run_id, agent=agent)
    assert report.divergence is None, report.divergence
    assert report.matches
    assert report.recorded_spend_usd == report.replayed_spend_usd > 0
    assert [e.event.type for e in report.replayed] == [e.event.type for e in report.recorded]
    assert (len(primary.requests), len(backup.requests), len(EXECUTIONS)) == calls_before
    # Nothing was written to the engine's own store.
    assert [e.event_id for e in await store.read_stream(f"run-{run_id}")] == [
        e.event_id for e in report.recorded
    ]


async def test_a_changed_prompt_is_reported_where_the_run_first_differs(
    store: EventStore,
) -> None:
    engine, run_id, agent, _, _ = await _record(store)
    changed = replace(agent, system_prompt="You forecast, briefly.")
    report = await engine.replay(run_id, agent=changed)
    assert not report.matches
    divergence = report.divergence
    assert divergence is not None and divergence.version == 1
    assert divergence.reason == "run_started differs in system_prompt"
    assert divergence.expected is not None and divergence.actual is not None
    assert divergence.expected["system_prompt"].startswith("You forecast.")
    assert divergence.actual["system_prompt"].startswith("You forecast, briefly.")


async def test_a_changed_tool_set_diverges_at_the_first_model_request(
    store: EventStore,
) -> None:
    engine, run_id, agent, _, _ = await _record(store)

    @tool
    async def news(args: City, ctx: ToolContext) -> str:
        """News for a city."""
        return "nothing"

    changed = replace(agent, tools=[weather, news])
    report = await engine.replay(run_id, agent=changed)
    divergence = report.divergence
    assert divergence is not None
    assert divergence.version == 3  # the first model request: it now offers two tools
    assert divergence.reason == "model_call_requested differs in request_digest"


async def test_replay_answers_the_judge_from_the_recording_too() -> None:
    from agentledger.engine import Critic, LLMJudge, MaxLength
    from agentledger.events import MemoryEventStore

    judge = ScriptedModel([reply('{"accepted": true, "issues": []}')], name="judge", price=PRICE)
    model = ScriptedModel([reply("A short answer.")], name="primary", price=PRICE)
    critic = Critic([MaxLength(chars=100)], judge=LLMJudge(judge, "Is it polite?"))
    agent = Agent(name="judged", model=model, critic=critic)
    async with MemoryEventStore() as store:
        engine = Engine(store, clock=FakeClock(T0))
        async with engine:
            result = await engine.run(agent, "Say something.")
            report = await engine.replay(result.run_id)
    assert result.status == "completed"
    assert report.matches, report.divergence
    assert len(judge.requests) == 1  # the replay did not ask the judge again
