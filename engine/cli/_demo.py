"""``agentledger demo``: the patterns in a few short runs, on a scripted model or a real one.

A travel assistant first calls a tool with a wrong argument name (pattern 1: rejected and
corrected), gets the weather from a fallback tier because the primary API is down (pattern 4),
then sends the itinerary through a side-effecting tool (pattern 7). The scripted model's first
answer forgets the city, which the critic sends back for a revision (pattern 6). Every call is
priced and reserved against the demo surface's budget (pattern 5). The same user asks twice: the
second run reuses the recorded email instead of sending it again. Then the first run is replayed
from its log (identical), forked with a changed prompt (the answers' diff), and its trace is
built as OpenTelemetry spans and exported through the SDK when the ``otel`` extra is installed.

Without ``--model`` the model is scripted (no network, and the demo says so); with ``--model`` it
is a real one: OpenAI's or Anthropic's API with the key from ``$OPENAI_API_KEY`` /
``$ANTHROPIC_API_KEY``, or any OpenAI-compatible server at ``--base-url`` (a key is optional).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import BaseModel, Field
from rich.text import Text

from agentledger.engine._agent import Agent
from agentledger.engine._engine import Engine
from agentledger.engine.models._anthropic import AnthropicModel
from agentledger.engine.models._model import Model, ModelReply, ModelRequest
from agentledger.engine.models._openai import OpenAIChatModel
from agentledger.engine.models._pricing import Price, lookup_price
from agentledger.engine.models._wire import WIRE_PROFILES, wire_profile
from agentledger.engine.otel import OtelNotInstalledError, build_spans, export_run
from agentledger.engine.policies._budget import BudgetPolicy, Budgets
from agentledger.engine.policies._checks import MaxLength, RequiredKeywords
from agentledger.engine.policies._critic import Critic
from agentledger.engine.testing import call, reply
from agentledger.engine.tools._tools import ToolContext, tool
from agentledger.events import EventStore, RecordedEvent
from agentledger.events._time import utc_now
from agentledger.projections import RunFilter, run_stream

from ._details import money
from ._errors import UsageError
from ._output import Output, text
from ._runs import render_runs, select_runs
from ._show import entry_text
from ._store import open_store
from ._timeline import Entry

USER = "ada"
TASK = "Plan my weekend in Lisbon"
SYSTEM_PROMPT = (
    "You plan short trips. Get the weather with get_weather, email the plan to ada@example.com "
    "with send_itinerary, then answer in one or two sentences that name the city."
)
FORK_PROMPT = SYSTEM_PROMPT + " Give temperatures in Fahrenheit."
"""The changed prompt of the demo's fork: the scripted model answers in °F under it."""
PROVIDERS = ("openai", "anthropic")


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
        system = request.messages[0].content if request.messages[0].role == "system" else ""
        weather = "75°F" if "Fahrenheit" in system else "24°C"
        if request.messages[-1].role == "user":  # the critic asked for a revision
            return reply(f"Your Lisbon itinerary is in your inbox. Expect sun, {weather}.")
        return reply(f"Your itinerary is in your inbox. Expect sun, {weather}.")


DEMO_BUDGETS = Budgets(
    {"demo": BudgetPolicy(per_run_usd=Decimal("0.05"), per_user_day_usd=Decimal("1.00"))}
)
"""The demo surface's caps: five cents a run, a dollar a day per user."""


def demo_agent(
    model: Model | None = None,
    *,
    prices: Mapping[str, Price] | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> Agent:
    """The demo agent with its critic, on ``model`` (default: the scripted ``DemoModel``)."""
    return Agent(
        name="travel-assistant",
        model=model or DemoModel(),
        system_prompt=system_prompt,
        tools=[get_weather, send_itinerary],
        critic=Critic([RequiredKeywords(["Lisbon"]), MaxLength(chars=600)]),
        max_tokens=400,
        prices=dict(prices or {}),
    )


# -- which model ---------------------------------------------------------------------------------


class DemoModelError(UsageError):
    """Raised when ``--model`` cannot be used as given (no key and no base URL, say)."""


@dataclass(frozen=True)
class DemoSetup:
    """The model the demo runs on, what to tell the reader about it, and prices to add."""

    model: Model | None
    """``None``: the scripted ``DemoModel``."""
    label: str
    prices: Mapping[str, Price] = field(default_factory=dict)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options: ``--model``, ``--base-url``, ``--provider``, ``--server``."""
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="run on this real model (key from $OPENAI_API_KEY or $ANTHROPIC_API_KEY) "
        "instead of the scripted one",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible server for --model, e.g. http://127.0.0.1:8080/v1 "
        "(a key is optional)",
    )
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        help="the API --model speaks (default: anthropic for claude-* names, else openai)",
    )
    parser.add_argument(
        "--server",
        choices=tuple(WIRE_PROFILES),
        help="which OpenAI-compatible server is at --base-url, for what it accepts "
        "(default: openai); see docs/models.md",
    )


def demo_setup(
    model: str | None,
    *,
    base_url: str | None = None,
    provider: str | None = None,
    server: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> DemoSetup:
    """The model ``--model``/``--base-url``/``--provider``/``--server`` ask for, checked before
    any run."""
    if model is None:
        if base_url is not None or provider is not None or server is not None:
            raise DemoModelError("--base-url, --provider and --server need --model NAME")
        keys = [k for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") if environ.get(k)]
        why = "no --model given" if keys else "no API key"
        return DemoSetup(None, f"scripted model ({why}): no network, the same answers each time")
    if not model.strip():
        raise DemoModelError("--model needs a model name")
    provider = provider or ("anthropic" if model.startswith("claude") else "openai")
    key_name = "ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY"
    key = environ.get(key_name) or None
    if server is not None and provider != "openai":
        raise DemoModelError(
            "--server names an OpenAI-compatible server; not for --provider anthropic"
        )
    if key is None and base_url is None:
        raise DemoModelError(
            f"--model {model} needs ${key_name} (or --base-url URL for a compatible server, "
            f"or no --model for the scripted demo)"
        )
    client: Model
    if provider == "anthropic":
        client = AnthropicModel(model, api_key=key, base_url=base_url, timeout=60.0)
    else:
        profile = wire_profile(server or "openai")
        client = OpenAIChatModel(
            model, api_key=key, base_url=base_url, timeout=60.0, server=profile
        )
    where = base_url or ("Anthropic's API" if provider == "anthropic" else "OpenAI's API")
    wire = f"{provider} wire format" + (f", {server} server" if server else "")
    label = f"{model} at {where} ({wire})"
    if lookup_price(model, provider) is not None:
        return DemoSetup(client, label)
    if base_url is None:
        return DemoSetup(client, label)  # the agent says the price is unknown, in one line
    free = Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))
    return DemoSetup(client, f"{label}; no listed price, counted as $0", {model: free})


# -- the demo ------------------------------------------------------------------------------------


def _counts(names: list[str]) -> str:
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return ", ".join(f"{count} {name}" for name, count in seen.items())


async def _fork(out: Output, engine: Engine, agent: Agent, run_id: str) -> None:
    """Fork ``run_id`` at its start with a changed prompt, run the fork, show the diff."""
    changed = demo_agent(agent.model, prices=agent.prices, system_prompt=FORK_PROMPT)
    report = await engine.whatif([run_id], changed, allow_side_effects=True)
    out.line()
    out.line('Fork of run 1 with a changed prompt (+ "Give temperatures in Fahrenheit."):', "bold")
    if not report.runs:
        out.line(f"  not run: {'; '.join(skip.reason for skip in report.skipped)}")
        return
    [fork] = report.runs
    reused = sum(
        r.event.type == "tool_result_reused"
        for r in await engine.store.read_stream(run_stream(fork.fork_id))
    )
    if not fork.output_changed:
        out.line(f"  the same answer: {fork.new.output!r}")
    for line in fork.diff.splitlines():
        if not line.startswith(("---", "+++", "@@")):
            out.line(f"  {line}", "red" if line.startswith("-") else "green")
    out.line(
        f"  fork {fork.fork_id}: {fork.new.status}, {money(fork.new_spend_usd)} for its model "
        f"calls; its email send was {'reused, not sent again' if reused else 'run'}."
    )


async def _trace(out: Output, store: EventStore, run_id: str) -> None:
    """The run's OpenTelemetry spans, built from the log, and their export through the SDK."""
    spans = build_spans(await store.read_stream(run_stream(run_id)))
    out.line()
    kinds = _counts([span.name.split(" ")[0] for span in spans])
    out.line(f"Trace of run 1 from its log: {len(spans)} OpenTelemetry spans ({kinds}).")
    try:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError:
        out.line(
            "  Not exported: the 'otel' extra is not installed (pip install 'agentledger[otel]')."
        )
        return
    exporter = InMemorySpanExporter()
    try:
        exported = await export_run(store, run_id, exporter)
    except OtelNotInstalledError as exc:
        out.line(f"  Not exported: {exc}")
        return
    finally:
        exporter.shutdown()
    out.line(
        f"  {exported} spans exported through the OpenTelemetry SDK (to memory here; "
        f"otlp_exporter() sends them to a collector)."
    )


def _line(out: Output, recorded: RecordedEvent, start: RecordedEvent | None) -> None:
    at = start.event.at if start is not None else None
    out.print(Text.assemble("  ", entry_text(Entry(recorded.version, recorded.event), at)))


async def command(options: argparse.Namespace, out: Output) -> int:
    """Run the demo: two runs for one user, the spend, then a replay of the first run, a fork
    of it with a changed prompt, and its trace."""
    setup = demo_setup(
        getattr(options, "model", None),
        base_url=getattr(options, "base_url", None),
        provider=getattr(options, "provider", None),
        server=getattr(options, "server", None),
    )
    agent = demo_agent(setup.model, prices=setup.prices)
    out.line(f"agentledger demo: the event log is {options.db}")
    out.line(f"Model: {setup.label}")
    run_ids: list[str] = []
    sent = reused = 0
    async with (
        open_store(options.db, create=True) as store,
        Engine(store, budgets=DEMO_BUDGETS, agents=[agent]) as engine,
    ):
        for attempt in (1, 2):
            out.line()
            if attempt == 1:
                out.line(f"Run 1: {TASK!r} for user {USER}, events as they commit:", "bold")
            else:
                out.line("Run 2: the same request again (its tool calls and answer):", "bold")
            first: RecordedEvent | None = None
            async for recorded in engine.stream(agent, TASK, user_id=USER, surface="demo"):
                event = recorded.event
                first = first or recorded
                sent += event.type == "tool_call_succeeded" and event.tool_name == "send_itinerary"
                reused += event.type == "tool_result_reused"
                if attempt == 1 or event.type.startswith("tool_") or event.type.startswith("run_"):
                    _line(out, recorded, first)
            assert first is not None
            run_ids.append(first.event.run_id)
        out.line()
        out.line(
            f"Emails sent: {sent}; sends answered from the idempotency ledger instead: {reused}."
        )
        costs = [(await engine.result(run_id)).cost_usd for run_id in run_ids]
        day = await engine.spend_for_user(USER, DEMO_BUDGETS.day(utc_now()))
        cap = DEMO_BUDGETS.policy("demo").per_user_day_usd
        out.line(
            f"Spend: run 1 {money(costs[0])}, run 2 {money(costs[1])}; {USER} today "
            f"{money(day.settled)} settled of a {money(cap or Decimal(0))} daily cap "
            f"(each call reserved its worst case first)."
        )
        report = await engine.replay(run_ids[0])
        out.line()
        verdict = "identical" if report.matches else f"diverged: {report.divergence}"
        out.line(
            f"Replay of run 1 from its log: {verdict} ({len(report.replayed)} events; "
            f"no model called, no tool run, nothing written)."
        )
        await _fork(out, engine, agent, run_ids[0])
        await _trace(out, store, run_ids[0])
        out.line()
        out.line("Runs in the log, newest first:", "bold")
        render_runs(out, await select_runs(store, RunFilter(), limit=10))
    out.line()
    out.print(
        text(
            f"Next: agentledger show RUN (an id prefix will do), show RUN --context 2, "
            f"replay --all, otel-export RUN --console, spend {USER}, critic {agent.name}, "
            f"health, tail  (--db {options.db})",
            "dim",
        )
    )
    return 0
