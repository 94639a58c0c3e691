"""Check the engine against a real OpenAI-compatible server (llama.cpp's): what each scenario did.

Not a speed benchmark and not part of the tests or CI: it needs a running server, e.g.
llama-cpp-python's, which the figures in ``docs/models.md`` ("Checked against a real server")
were measured on::

    python -m llama_cpp.server --model SmolLM2-135M-Instruct.Q4_1.gguf --model_alias smollm2-135m \\
        --chat_format chatml-function-calling --port 8000 &
    python benchmarks/real_server.py --base-url http://127.0.0.1:8000/v1 --model smollm2-135m

It runs six scenarios with the engine on a temporary SQLite file and prints one JSON object: per
scenario what happened (statuses, token counts, budget figures, HTTP requests made, seconds).
A scenario that raises is recorded with its error and the others still run. Without a server at
``--base-url`` it prints one line to stderr and exits 2. ``--capture DIR`` also writes every
request body and every JSON reply body to ``DIR`` (``NN-scenario.request.json`` ...), for
recorded-body tests. ``--brief`` leaves out each model call's details and the texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BudgetPolicy,
    Budgets,
    Delta,
    Engine,
    OpenAIChatModel,
    Price,
    RetryPolicy,
    ServerName,
    TextDelta,
    ToolCallDelta,
    ToolContext,
    tool,
)
from agentledger.events import (
    BudgetExceeded,
    BudgetOvershot,
    BudgetReserved,
    BudgetSettled,
    Event,
    ModelCallFailed,
    ModelCallResponded,
    RecordedEvent,
    SqliteEventStore,
    ToolCallSucceeded,
)
from agentledger.projections import run_stream

# The prices of the report (USD per million tokens): with them its figures were a
# reservation of 0.0000739 USD, a settlement of 0.0008078 USD and a day cap of 0.0002 USD.
PRICE = Price(Decimal("0.10"), Decimal("0.40"))
DAY_CAP = Decimal("0.0002")
CAPPED = "capped"
"""The surface whose users have the day cap; the default surface has none."""


# -- what went over the wire -----------------------------------------------------------------


@dataclass
class Wire:
    """Every HTTP request the models made (the replays' count must stay 0), with its status."""

    capture: Path | None
    requests: list[dict[str, Any]] = field(default_factory=list)
    scenario: str = ""
    _seen: int = 0

    async def on_request(self, request: httpx.Request) -> None:
        body = json.loads(request.content) if request.content else None
        self.requests.append({"scenario": self.scenario, "body": body, "status": None})

    async def on_response(self, response: httpx.Response) -> None:
        entry = self.requests[-1]
        entry["status"] = response.status_code
        if self.capture is None:
            return
        self._seen += 1
        stem = self.capture / f"{self._seen:02d}-{self.scenario}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".request.json").write_text(json.dumps(entry["body"]) + "\n")
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # A stream is left to the client (reading it here would defeat the cut-off).
            await response.aread()
            suffix = (
                ".response.json"
                if response.is_success
                else f".response-{response.status_code}.json"
            )
            stem.with_suffix(suffix).write_bytes(response.content)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.requests[mark:]


# -- the agents' pieces ----------------------------------------------------------------------


class Order(BaseModel):
    order_id: int


@tool
async def lookup_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up by its number."""
    return {"order_id": args.order_id, "state": "shipped", "carrier": "DHL"}


class City(BaseModel):
    name: str
    country: str


def _events(recorded: list[RecordedEvent], kind: type[Event]) -> list[Any]:
    return [r.event for r in recorded if isinstance(r.event, kind)]


@dataclass
class Bench:
    base_url: str
    model_name: str
    client: httpx.AsyncClient
    wire: Wire
    store: SqliteEventStore

    def model(self, server: ServerName) -> OpenAIChatModel:
        return OpenAIChatModel(
            self.model_name,
            server=server,
            base_url=self.base_url,
            client=self.client,
        )

    def agent(self, name: str, server: ServerName = "llama.cpp", **settings: Any) -> Agent[Any]:
        settings.setdefault("model_timeout", 300.0)
        settings.setdefault("retry", RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.5))
        return Agent(
            name=name,
            model=self.model(server),
            prices={self.model_name: PRICE},
            **settings,
        )

    async def events(self, run_id: str) -> list[RecordedEvent]:
        return await self.store.read_stream(run_stream(run_id))

    async def replay(self, engine: Engine, run_id: str, agent: Agent[Any]) -> dict[str, Any]:
        mark = len(self.wire.requests)
        report = await engine.replay(run_id, agent=agent)
        return {"matches": report.matches, "http_requests": len(self.wire.since(mark))}

    async def calls(self, run_id: str) -> list[dict[str, Any]]:
        """Each model call of the run: finish reason, tokens, or the failure."""
        out: list[dict[str, Any]] = []
        for r in await self.events(run_id):
            e = r.event
            if isinstance(e, ModelCallResponded):
                out.append(
                    {
                        "finish_reason": e.finish_reason,
                        "input_tokens": e.usage.input_tokens,
                        "output_tokens": e.usage.output_tokens,
                        "tool_calls": [c.name for c in e.tool_calls],
                        "text": e.text[:160],
                        "cost_usd": str(e.cost_usd),
                    }
                )
            elif isinstance(e, ModelCallFailed):
                out.append(
                    {
                        "failed": e.error_type,
                        "status_code": e.status_code,
                        "retryable": e.retryable,
                        "message": e.message[:300],
                    }
                )
        return out

    async def budget(self, run_id: str) -> dict[str, Any]:
        recorded = await self.events(run_id)
        return {
            "reserved_usd": [str(e.amount_usd) for e in _events(recorded, BudgetReserved)],
            "settled_usd": [str(e.actual_usd) for e in _events(recorded, BudgetSettled)],
            "overshoots": [
                {
                    "reserved_usd": str(e.reserved_usd),
                    "actual_usd": str(e.actual_usd),
                    "over_usd": str(e.over_usd),
                }
                for e in _events(recorded, BudgetOvershot)
            ],
            "exceeded": [
                {"scope": e.scope, "closed_by": e.closed_by, "cap_usd": str(e.cap_usd)}
                for e in _events(recorded, BudgetExceeded)
            ],
        }


def _result(result: Any) -> dict[str, Any]:
    return {
        "status": result.status,
        "output": None if result.output is None else result.output[:300],
        "error": result.error,
        "turns": result.turns,
        "input_tokens": result.usage.input_tokens,
        "output_tokens": result.usage.output_tokens,
        "cost_usd": str(result.cost_usd),
    }


# -- the scenarios ---------------------------------------------------------------------------


async def plain_chat(bench: Bench, engine: Engine) -> dict[str, Any]:
    """1. A plain chat run completes; its replay makes no model call."""
    agent = bench.agent("chat", system_prompt="You are terse.", max_tokens=32)
    result = await engine.run(agent, "Say hello in three words.")
    return {
        "run": _result(result),
        "calls": await bench.calls(result.run_id),
        "replay": await bench.replay(engine, result.run_id, agent),
    }


async def tool_call(bench: Bench, engine: Engine) -> dict[str, Any]:
    """2. A run with a tool call: llama.cpp profile (``auto``, then forced by name), and the
    openai profile (forced, so the follow-up carries the tool turn's ``content: null``)."""
    out: dict[str, Any] = {}
    variants: list[tuple[str, ServerName, str]] = [
        ("llama_cpp_auto", "llama.cpp", "auto"),
        ("llama_cpp_named", "llama.cpp", "lookup_order"),
        ("openai_named", "openai", "lookup_order"),
    ]
    for label, server, choice in variants:
        agent = bench.agent(
            f"orders-{label}",
            server=server,
            system_prompt="You look orders up with the lookup_order tool, then answer briefly.",
            tools=[lookup_order],
            tool_choice=choice,
            max_tokens=48,
            max_turns=4,
        )
        mark = len(bench.wire.requests)
        result = await engine.run(agent, "Where is my order 123456?")
        recorded = await bench.events(result.run_id)
        requests = bench.wire.since(mark)
        out[label] = {
            "server": server,
            "tool_choice": choice,
            "run": _result(result),
            "tool_calls_run": len(_events(recorded, ToolCallSucceeded)),
            "failed_attempts": [
                {"error": e.error_type, "status_code": e.status_code, "retryable": e.retryable}
                for e in _events(recorded, ModelCallFailed)
            ],
            "calls": await bench.calls(result.run_id),
            "http_statuses": [r["status"] for r in requests],
            "tool_choice_sent": [(r["body"] or {}).get("tool_choice") for r in requests],
            "tool_turn_content_sent": sorted(
                {
                    repr(m.get("content", "<missing>"))
                    for r in requests
                    for m in (r["body"] or {}).get("messages", [])
                    if m.get("role") == "assistant" and m.get("tool_calls")
                }
            ),
            "replay": await bench.replay(engine, result.run_id, agent),
        }
    return out


async def output_limit(bench: Bench, engine: Engine) -> dict[str, Any]:
    """3. ``max_tokens=5`` without streaming: honoured under the llama.cpp profile; under the
    openai profile (``max_completion_tokens``, ignored) an overshoot closes the user's day."""
    task = "Write a long story about a dragon."
    llama = bench.agent("limit-llama", max_tokens=5)
    mark = len(bench.wire.requests)
    first = await engine.run(llama, task, user_id="limit-llama", surface=CAPPED)
    llama_calls = await bench.calls(first.run_id)
    llama_sent = bench.wire.since(mark)
    openai = bench.agent("limit-openai", server="openai", max_tokens=5)
    mark = len(bench.wire.requests)
    second = await engine.run(openai, task, user_id="limit-openai", surface=CAPPED)
    sent = bench.wire.since(mark)
    # The same user the same day: the day was closed by the overshoot, no call is made.
    mark = len(bench.wire.requests)
    third = await engine.run(openai, "Say hi.", user_id="limit-openai", surface=CAPPED)
    day = await engine.spend_for_user("limit-openai", second_day(await bench.events(second.run_id)))
    return {
        "day_cap_usd": str(DAY_CAP),
        "price_usd_per_mtok": {
            "input_tokens": str(PRICE.input_per_mtok),
            "output_tokens": str(PRICE.output_per_mtok),
        },
        "llama_cpp_max_tokens": {
            "run": _result(first),
            "calls": llama_calls,
            "output_field_sent": _limit_fields(llama_sent),
            "budget": await bench.budget(first.run_id),
        },
        "openai_max_completion_tokens": {
            "run": _result(second),
            "calls": await bench.calls(second.run_id),
            "output_field_sent": _limit_fields(sent),
            "budget": await bench.budget(second.run_id),
            "overshot": second.overshot,
        },
        "next_run_same_user_day": {
            "run": _result(third),
            "http_requests": len(bench.wire.since(mark)),
            "budget": await bench.budget(third.run_id),
            "day_ledger": {
                "closed": day.closed,
                "closed_by": day.closed_by,
                "overshoots": day.overshoots,
                "overshot_usd": str(day.overshot_usd),
            },
        },
    }


def _limit_fields(sent: list[dict[str, Any]]) -> list[str]:
    """The output-limit fields of the first request sent."""
    body = sent[0]["body"] if sent else None
    return sorted(k for k in body or {} if k in ("max_tokens", "max_completion_tokens"))


def second_day(recorded: list[RecordedEvent]) -> Any:
    """The day of the run's first reservation (its user's day ledger)."""
    return _events(recorded, BudgetReserved)[0].day


async def _streamed(
    engine: Engine, agent: Agent[Any], task: str, **kwargs: Any
) -> tuple[str, dict[str, Any]]:
    """Stream a run with deltas; check every call's deltas join to its logged reply (its text
    and its tool calls' ids, names and arguments)."""
    pieces: dict[str, list[str]] = {}
    calls: dict[str, dict[int, list[str]]] = {}
    replies: dict[str, tuple[str, list[list[str]]]] = {}
    failed: list[str] = []
    run_id = ""
    count = tool_count = 0
    async for item in engine.stream(agent, task, deltas=True, **kwargs):
        if isinstance(item, Delta):
            count += 1
            if isinstance(item.delta, TextDelta):
                pieces.setdefault(item.call_id, []).append(item.delta.text)
            elif isinstance(item.delta, ToolCallDelta):
                tool_count += 1
                piece = item.delta
                call = calls.setdefault(item.call_id, {}).setdefault(piece.index, ["", "", ""])
                call[0] += piece.id or ""
                call[1] += piece.name or ""
                call[2] += piece.arguments
            continue
        run_id = run_id or item.event.run_id
        if isinstance(item.event, ModelCallResponded):
            logged = [[c.id, c.name, c.arguments] for c in item.event.tool_calls]
            replies[item.event.call_id] = (item.event.text, logged)
        elif isinstance(item.event, ModelCallFailed):
            failed.append(item.event.call_id)
    joined = {call: "".join(p) for call, p in pieces.items()}
    return run_id, {
        "deltas": count,
        "tool_call_deltas": tool_count,
        "deltas_join_to_logged_reply": all(
            joined.get(call, "") == text
            and [v for _, v in sorted(calls.get(call, {}).items())] == logged
            for call, (text, logged) in replies.items()
        ),
        "failed_attempts": len(failed),
    }


async def streaming(bench: Bench, engine: Engine) -> dict[str, Any]:
    """4. Streaming with deltas: they join to the logged reply; with the openai profile (its
    ``max_completion_tokens`` ignored) under a cap, the client's cut-off holds the reservation."""
    llama = bench.agent("stream-llama", system_prompt="You are terse.", max_tokens=48)
    run_id, seen = await _streamed(engine, llama, "Count from one to ten in words.")
    result = await engine.result(run_id)
    llama_out = {
        "run": _result(result),
        **seen,
        "calls": await bench.calls(run_id),
        "replay": await bench.replay(engine, run_id, llama),
    }
    tools: dict[str, Any] = {}
    for label, choice in (("auto", "auto"), ("named", "lookup_order")):
        agent = bench.agent(
            f"stream-tools-{label}",
            system_prompt="You look orders up with the lookup_order tool, then answer briefly.",
            tools=[lookup_order],
            tool_choice=choice,
            max_tokens=48,
            max_turns=2,
        )
        mark = len(bench.wire.requests)
        run_id, seen = await _streamed(engine, agent, "Where is my order 123456?")
        tools[label] = {
            "tool_choice": choice,
            "run": _result(await engine.result(run_id)),
            **seen,
            "calls": await bench.calls(run_id),
            "requests_streamed": [
                bool((r["body"] or {}).get("stream")) for r in bench.wire.since(mark)
            ],
            "http_statuses": [r["status"] for r in bench.wire.since(mark)],
        }
    max_tokens = 8
    openai = bench.agent("stream-openai", server="openai", max_tokens=max_tokens)
    run_id, seen = await _streamed(
        engine,
        openai,
        "Write a long story about a dragon.",
        user_id="stream-openai",
        surface=CAPPED,
    )
    result = await engine.result(run_id)
    budget = await bench.budget(run_id)
    calls = await bench.calls(run_id)
    return {
        "llama_cpp": llama_out,
        "llama_cpp_tool_runs": tools,
        "openai_capped_cut_off": {
            "max_tokens": max_tokens,
            "run": _result(result),
            **seen,
            "calls": calls,
            "budget": budget,
            "output_tokens_within_max": all(c.get("output_tokens", 0) <= max_tokens for c in calls),
            "settled_within_reserved": all(
                Decimal(s) <= Decimal(r)
                for s, r in zip(budget["settled_usd"], budget["reserved_usd"], strict=False)
            ),
            "overshot": bool(budget["overshoots"]),
            "replay": await bench.replay(engine, run_id, openai),
        },
    }


async def structured(bench: Bench, engine: Engine) -> dict[str, Any]:
    """5. ``Agent(output_type=City)`` under the llama.cpp profile (``json_object`` + schema)."""
    agent = bench.agent("city", output_type=City, max_tokens=64)
    mark = len(bench.wire.requests)
    result = await engine.run(agent, "What is the capital of France? Give its name and country.")
    sent = bench.wire.since(mark)
    return {
        "run": _result(result),
        "value": None if result.value is None else result.value.model_dump(),
        "response_format_sent": (sent[0]["body"] or {}).get("response_format"),
        "response_format_type": ((sent[0]["body"] or {}).get("response_format") or {}).get("type"),
        "calls": await bench.calls(result.run_id),
        "replay": await bench.replay(engine, result.run_id, agent),
    }


async def conversation(bench: Bench, engine: Engine) -> dict[str, Any]:
    """6. Three runs of one conversation: the third request holds the earlier exchanges."""
    agent = bench.agent(
        "convo", system_prompt="You are a friendly, terse assistant.", max_tokens=32
    )
    tasks = ["Hi, my name is Ada.", "I live in Paris.", "What is my name and where do I live?"]
    results = []
    last_mark = 0
    for task in tasks:
        last_mark = len(bench.wire.requests)
        results.append(await engine.run(agent, task, conversation_id="chat-1"))
    third = bench.wire.since(last_mark)[0]["body"] or {}
    messages = third.get("messages", [])
    earlier = [(t, r.output) for t, r in zip(tasks[:2], results[:2], strict=True)]
    held = all(
        any(m.get("role") == "user" and m.get("content") == t for m in messages)
        and any(m.get("role") == "assistant" and m.get("content") == a for m in messages)
        for t, a in earlier
    )
    convo = await engine.conversation("chat-1")
    replays = [await bench.replay(engine, r.run_id, agent) for r in results]
    return {
        "runs": [_result(r) for r in results],
        "conversation_runs": len(convo.runs),
        "third_request_roles": [m.get("role") for m in messages],
        "third_request_holds_earlier_exchanges": held,
        "replays": replays,
    }


SCENARIOS: list[tuple[str, Callable[[Bench, Engine], Awaitable[dict[str, Any]]]]] = [
    ("plain_chat", plain_chat),
    ("tool_call", tool_call),
    ("output_limit", output_limit),
    ("streaming", streaming),
    ("structured_output", structured),
    ("conversation", conversation),
]


async def reachable(base_url: str) -> str | None:
    """``None`` if a server answers ``GET {base_url}/models``, else why not (one line)."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(base_url.rstrip("/") + "/models")
    except httpx.HTTPError as exc:
        return f"no server at {base_url}: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        status = response.status_code
        return f"no OpenAI-compatible server at {base_url}: GET /models gave HTTP {status}"
    return None


async def main(
    base_url: str, model_name: str, capture: Path | None, only: set[str]
) -> dict[str, Any]:
    wire = Wire(capture)
    figures: dict[str, Any] = {"base_url": base_url, "model": model_name}
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(300.0, connect=5.0),
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
    ) as client:
        with tempfile.TemporaryDirectory() as tmp:
            budgets = Budgets(
                {"default": BudgetPolicy(), CAPPED: BudgetPolicy(per_user_day_usd=DAY_CAP)}
            )
            async with (
                SqliteEventStore(Path(tmp) / "real-server.db") as store,
                Engine(store, budgets=budgets) as engine,
            ):
                bench = Bench(base_url, model_name, client, wire, store)
                for name, scenario in SCENARIOS:
                    if only and name not in only:
                        continue
                    wire.scenario = name
                    mark = len(wire.requests)
                    started = time.perf_counter()
                    try:
                        figures[name] = await scenario(bench, engine)
                    except Exception as exc:  # recorded: the other scenarios still run
                        figures[name] = {"raised": f"{type(exc).__name__}: {exc}"}
                    figures[name]["seconds"] = round(time.perf_counter() - started, 2)
                    figures[name]["http_requests"] = len(wire.since(mark))
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="the model name the server answers to")
    parser.add_argument("--capture", type=Path, help="write request and JSON reply bodies here")
    parser.add_argument("--only", action="append", default=[], help="run only these scenarios")
    parser.add_argument(
        "--brief", action="store_true", help="leave out each call's details and the texts"
    )
    args = parser.parse_args()
    why = anyio.run(reachable, args.base_url)
    if why is not None:
        print(why, file=sys.stderr)
        sys.exit(2)
    figures = anyio.run(main, args.base_url, args.model, args.capture, set(args.only))
    print(json.dumps(_brief(figures) if args.brief else figures, indent=2, default=str))


BRIEF_DROPS = frozenset({"calls", "output", "text", "response_format_sent", "run_id"})


def _brief(value: Any) -> Any:
    """``value`` without the keys ``--brief`` leaves out, at any depth."""
    if isinstance(value, dict):
        return {k: _brief(v) for k, v in value.items() if k not in BRIEF_DROPS}
    if isinstance(value, list):
        return [_brief(v) for v in value]
    return value


if __name__ == "__main__":
    cli()
