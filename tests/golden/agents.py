"""The scripted agents behind the golden histories, one per scenario.

Each scenario is a pure function of what it is asked (scripted models, tools that answer the
same to the same arguments), run on a fake clock with sequential ids in a store with a fixed
clock, so recording it again writes the same file. ``record.py`` records every scenario into
``tests/golden/<name>.jsonl``; ``tests/test_golden_histories.py`` replays each file with the
agent made here and expects the very same run.

Scenarios and what each must show (the test checks these event types are in the file):

- ``retries``: a rate limit with ``Retry-After`` and a server error, retried, then an answer.
- ``fallback``: the primary model fails every attempt; the backup model answers.
- ``degraded``: a tool's first tier fails and its fallback tier answers; another tool fails in
  every tier and the model is told it is degraded.
- ``breaker``: a tier that failed trips its breaker; the next call skips it.
- ``budget_stop``: the run's cap forbids the second model call; the run ends on the budget.
- ``compaction``: long tool results pass the memory threshold and are summarised.
- ``critic``: two drafts are sent back by the critic; the third answer is accepted.
- ``confirmation``: a money transfer pauses the run; a person approves; the run resumes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BreakerPolicy,
    BudgetPolicy,
    Budgets,
    Critic,
    Engine,
    MemoryPolicy,
    ModelRateLimitedError,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    RequiredKeywords,
    RetryPolicy,
    Tool,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import EventStore, Usage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
BUDGETS = Budgets(
    {
        "free": BudgetPolicy(per_run_usd=Decimal("1"), per_user_day_usd=Decimal("5")),
        "tight": BudgetPolicy(per_run_usd=Decimal("0.012")),
    }
)
USAGE = Usage(input_tokens=150, output_tokens=25)


# -- tools ------------------------------------------------------------------------------------


class City(BaseModel):
    city: str


class Topic(BaseModel):
    topic: str


class Transfer(BaseModel):
    to: str
    cents: int


def weather_tool(fallback_tier: str = "cache") -> Tool[City]:
    """Weather whose live tier is down; ``fallback_tier`` names the tier that answers."""

    @tool
    async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
        """Weather for a city."""
        raise ConnectionError("weather API down")

    @weather.tier(fallback_tier)
    async def cached(args: City, ctx: ToolContext) -> dict[str, str]:
        return {"city": args.city, "sky": "clear"}

    return weather


def traffic_tool() -> Tool[City]:
    """Traffic, whose every tier is down."""

    @tool
    async def traffic(args: City, ctx: ToolContext) -> str:
        """Traffic in a city."""
        raise TimeoutError("traffic API timed out")

    @traffic.tier("mirror")
    async def mirror(args: City, ctx: ToolContext) -> str:
        raise ConnectionError("traffic mirror refused the connection")

    return traffic


def research_tool() -> Tool[Topic]:
    """A long article per topic: enough text to pass a small memory threshold."""

    @tool
    async def research(args: Topic, ctx: ToolContext) -> str:
        """Read about a topic."""
        sentence = f"{args.topic} has a long and well documented history. "
        return sentence * 40

    return research


def transfer_tool() -> Tool[Transfer]:
    @tool(confirm=True, side_effect=True, preview=lambda a: f"Send ${a.cents / 100:.2f} to {a.to}")
    async def transfer(args: Transfer, ctx: ToolContext) -> dict[str, str]:
        """Send money."""
        return {"transfer_id": f"t-{args.to}-{args.cents}"}

    return transfer


# -- models -----------------------------------------------------------------------------------


def _turn(request: ModelRequest) -> int:
    """How many answers the model gave in this conversation before (0 on the first call)."""
    return sum(1 for m in request.messages if m.role == "assistant")


def turns_model(
    turns: list[ModelReply], *, name: str = "primary", price: Price = PRICE
) -> ScriptedModel:
    """A model that gives ``turns[k]`` as its answer number ``k`` (then the last one again)."""

    def script(request: ModelRequest) -> ModelReply:
        return turns[min(_turn(request), len(turns) - 1)]

    return ScriptedModel(script, name=name, price=price)


# -- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A golden scenario: how to make its agent, and how to play it on an engine."""

    name: str
    make_agent: Callable[[], Agent]
    task: str
    surface: str = "free"
    shows: tuple[str, ...] = ()
    """Event types the recording must hold: what the scenario is there to cover."""
    after: Callable[[Engine, str], Awaitable[None]] | None = field(default=None)
    """What happens once the run paused (a person's answer), in a later engine."""

    @property
    def run_id(self) -> str:
        return f"golden-{self.name}"


def retries_agent() -> Agent:
    primary = ScriptedModel(
        [
            ModelRateLimitedError("primary", "slow down", retry_after=2.0),
            ModelServerError("primary", "overloaded", status_code=503),
            reply("Sunny in Oslo.", usage=USAGE),
        ],
        name="primary",
        price=PRICE,
    )
    return Agent(name="golden-retries", model=primary, system_prompt="You forecast.")


def fallback_agent() -> Agent:
    def down(request: ModelRequest) -> Exception:
        return ModelServerError("primary", "overloaded", status_code=503)

    primary = ScriptedModel(down, name="primary", price=PRICE)  # type: ignore[arg-type]
    backup = turns_model([reply("Sunny in Oslo.", usage=USAGE)], name="backup")
    return Agent(
        name="golden-fallback",
        model=primary,
        fallback_models=[backup],
        system_prompt="You forecast.",
        retry=RetryPolicy(max_attempts=2, base_delay=1.0),
    )


def degraded_agent(fallback_tier: str = "cache") -> Agent:
    model = turns_model(
        [
            reply(
                tool_calls=[
                    call("weather", {"city": "Oslo"}, id="c1"),
                    call("traffic", {"city": "Oslo"}, id="c2"),
                ],
                usage=USAGE,
            ),
            reply("Clear skies in Oslo; no traffic report.", usage=USAGE),
        ]
    )
    return Agent(
        name="golden-degraded",
        model=model,
        system_prompt="You plan trips.",
        tools=[weather_tool(fallback_tier), traffic_tool()],
    )


def breaker_agent() -> Agent:
    model = turns_model(
        [
            reply(tool_calls=[call("weather", {"city": "Oslo"}, id="c1")], usage=USAGE),
            reply(tool_calls=[call("weather", {"city": "Bergen"}, id="c2")], usage=USAGE),
            reply("Clear in Oslo and Bergen.", usage=USAGE),
        ]
    )
    return Agent(
        name="golden-breaker",
        model=model,
        system_prompt="You forecast.",
        tools=[weather_tool()],
        breaker=BreakerPolicy(threshold=1, cooldown=timedelta(hours=1)),
    )


def budget_agent() -> Agent:
    # Each answer costs about 0.008 USD; the "tight" surface allows 0.012 per run, so the
    # second call's worst case does not fit.
    big = Usage(input_tokens=150, output_tokens=1000)
    model = turns_model(
        [
            reply(tool_calls=[call("weather", {"city": "Oslo"}, id="c1")], usage=big),
            reply("Clear in Oslo.", usage=big),
        ]
    )
    return Agent(
        name="golden-budget",
        model=model,
        system_prompt="You forecast.",
        tools=[weather_tool()],
        # Enough for the 1,000 tokens each answer bills: a smaller limit than the model uses
        # would make the first answer an overshoot, which closes the run by itself.
        max_tokens=1000,
    )


def compaction_agent() -> Agent:
    topics = ["Oslo", "Bergen", "Tromso"]
    model = turns_model(
        [
            *(
                reply(tool_calls=[call("research", {"topic": t}, id=f"c{i}")], usage=USAGE)
                for i, t in enumerate(topics, 1)
            ),
            reply("Three cities, three histories.", usage=USAGE),
        ]
    )

    def summarise(request: ModelRequest) -> ModelReply:
        return reply(f"Summary of {len(request.messages[-1].content)} characters of research.")

    return Agent(
        name="golden-compaction",
        model=model,
        system_prompt="You research.",
        tools=[research_tool()],
        memory=MemoryPolicy(
            max_tokens=8_000, compact_at=400, keep_recent_turns=1, summary_max_tokens=60
        ),
        summary_model=ScriptedModel(summarise, name="summariser"),
    )


def critic_agent(keyword: str = "Lisbon") -> Agent:
    def script(request: ModelRequest) -> ModelReply:
        revisions = sum(
            1 for m in request.messages if m.role == "user" and "not accepted" in m.content
        )
        answers = ["A draft.", "A better draft.", "Lisbon, in the end."]
        return reply(answers[min(revisions, 2)], usage=USAGE)

    return Agent(
        name="golden-critic",
        model=ScriptedModel(script, name="primary", price=PRICE),
        system_prompt="You recommend a city.",
        critic=Critic([RequiredKeywords([keyword])], max_revisions=2),
    )


def confirmation_agent() -> Agent:
    model = turns_model(
        [
            reply(
                tool_calls=[call("transfer", {"to": "bob", "cents": 1250}, id="c1")], usage=USAGE
            ),
            reply("Sent 12.50 to bob.", usage=USAGE),
        ]
    )
    return Agent(
        name="golden-confirmation", model=model, system_prompt="You pay.", tools=[transfer_tool()]
    )


async def approve_transfer(engine: Engine, run_id: str) -> None:
    await engine.approve(run_id, "c1", by="alice")
    await engine.resume(run_id)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("retries", retries_agent, "Weather in Oslo?", shows=("model_call_retried",)),
        Scenario("fallback", fallback_agent, "Weather in Oslo?", shows=("model_fell_back",)),
        Scenario(
            "degraded",
            degraded_agent,
            "Plan a day in Oslo.",
            shows=("tool_tier_failed", "tool_call_succeeded", "tool_call_degraded"),
        ),
        Scenario(
            "breaker", breaker_agent, "Weather in Oslo, then Bergen?", shows=("tool_tier_skipped",)
        ),
        Scenario(
            "budget_stop",
            budget_agent,
            "Weather in Oslo?",
            surface="tight",
            shows=("budget_reserved", "budget_settled", "budget_exceeded"),
        ),
        Scenario(
            "compaction", compaction_agent, "Research three cities.", shows=("memory_compacted",)
        ),
        Scenario(
            "critic",
            critic_agent,
            "Where should I go?",
            shows=("critic_verdict", "revision_requested"),
        ),
        Scenario(
            "confirmation",
            confirmation_agent,
            "Pay bob 12.50",
            shows=("confirmation_requested", "run_paused", "confirmation_approved", "run_resumed"),
            after=approve_transfer,
        ),
    ]
}


async def play(scenario: Scenario, store: EventStore, clock: FakeClock) -> None:
    """Record ``scenario`` into ``store``: run it, and answer for the person if it pauses."""
    agent = scenario.make_agent()
    ids = SequentialIds(scenario.name)
    async with Engine(store, agents=[agent], clock=clock, ids=ids, budgets=BUDGETS) as engine:
        await engine.run(
            agent, scenario.task, run_id=scenario.run_id, user_id="ada", surface=scenario.surface
        )
    if scenario.after is not None:
        clock.advance(timedelta(minutes=5))
        later_ids = SequentialIds(f"{scenario.name}-later")
        async with Engine(
            store, agents=[agent], clock=clock, ids=later_ids, budgets=BUDGETS
        ) as later:
            await scenario.after(later, scenario.run_id)
