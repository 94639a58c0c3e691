"""The demo agent behind ``agentledger demo``: the patterns in two short runs, no network.

A scripted model plays a travel assistant that first calls a tool with a wrong argument name
(pattern 1: rejected and corrected), gets the weather from a fallback tier because the primary
API is down (pattern 4), then sends the itinerary through a side-effecting tool (pattern 7). Its
first answer forgets the city, which the critic sends back for a revision (pattern 6). Every
call is priced and reserved against the demo surface's budget (pattern 5). The same user asks
twice: the second run reuses the recorded email instead of sending it again.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from agentledger.engine._agent import Agent
from agentledger.engine.models._model import ModelReply, ModelRequest
from agentledger.engine.models._pricing import Price
from agentledger.engine.policies._budget import BudgetPolicy, Budgets
from agentledger.engine.policies._checks import MaxLength, RequiredKeywords
from agentledger.engine.policies._critic import Critic
from agentledger.engine.testing import call, reply
from agentledger.engine.tools._tools import ToolContext, tool


class WeatherQuery(BaseModel):
    city: str = Field(description="City name, e.g. 'Lisbon'")


class Itinerary(BaseModel):
    to: str = Field(description="Recipient email address")
    body: str


@tool
async def get_weather(args: WeatherQuery, ctx: ToolContext) -> dict[str, str]:
    """Current weather for a city."""
    raise ConnectionError("weather API unreachable (the demo's primary tier is always down)")


@get_weather.tier("cached_forecast")
async def cached_weather(args: WeatherQuery, ctx: ToolContext) -> dict[str, str]:
    return {"city": args.city, "forecast": "sunny, 24°C", "source": "cache"}


@tool(side_effect=True, key_scope="user")
async def send_itinerary(args: Itinerary, ctx: ToolContext) -> dict[str, str]:
    """Email the itinerary to the traveller (a side effect: sent at most once)."""
    return {"status": "sent", "to": args.to}


class DemoModel:
    """A scripted travel assistant; it decides from the conversation, like a real model."""

    name = "demo-model"
    price = Price(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))

    async def complete(self, request: ModelRequest) -> ModelReply:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            # A hallucinated argument name: rejected at the boundary, never raised.
            return reply(tool_calls=[call("get_weather", {"town": "Lisbon"}, id="w1")])
        if len(results) == 1:
            return reply(tool_calls=[call("get_weather", {"city": "Lisbon"}, id="w2")])
        if len(results) == 2:
            body = "Day 1: Alfama walk. Day 2: Belém. Weather: sunny."
            return reply(
                tool_calls=[
                    call("send_itinerary", {"to": "ada@example.com", "body": body}, id="m1")
                ]
            )
        if request.messages[-1].role == "user":  # the critic asked for a revision
            return reply("Your Lisbon itinerary is in your inbox. Expect sun, 24°C.")
        return reply("Your itinerary is in your inbox. Expect sun, 24°C.")


DEMO_BUDGETS = Budgets(
    {"demo": BudgetPolicy(per_run_usd=Decimal("0.05"), per_user_day_usd=Decimal("1.00"))}
)
"""The demo surface's caps: five cents a run, a dollar a day per user."""


def demo_agent() -> Agent:
    """The demo agent, with its scripted model and its critic."""
    return Agent(
        name="travel-assistant",
        model=DemoModel(),
        system_prompt="You plan short trips.",
        tools=[get_weather, send_itinerary],
        critic=Critic([RequiredKeywords(["Lisbon"]), MaxLength(chars=400)]),
    )
