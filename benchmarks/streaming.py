"""Token streaming over real local HTTP, both wire formats (OpenAI chat completions, Anthropic
messages): what streaming costs, where the output cut-off stops a server that ignores its limit,
and what a stream dropped mid-way comes to.

The servers are threads of this process (``tests/sse_server.py``: one HTTP chunk per event, as
the providers send them), so their time is in the figures too; the store is a SQLite file.

- ``side_by_side``: one reply of N tokens (N text pieces), asked alternately whole
  (``engine.stream(...)``: the model's ``complete``) and streamed (``engine.stream(...,
  deltas=True)``: the model's ``stream``, every delta taken by the caller). Microseconds per run
  of each, per delta, and the ratio streamed / completed.
- ``cutoff``: a server that ignores ``max_tokens`` and streams forever, with a per-run cap (so
  each call reserves) and ``Engine(stream_models=True)``: for max_tokens 16, 256 and 4096, the
  output tokens recorded, settled vs reserved (must be <=), the events the client read past the
  limit (counted on the connection, beyond those carrying the first max_tokens pieces), the
  events the server got written before it noticed the hang-up, and the time to the cut.
- ``dropped``: a stream whose connection closes mid-body, once (then a whole stream) and every
  time: the attempts made and the run's outcome, under the default ``RetryPolicy`` with short
  delays.

    python benchmarks/streaming.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sse_server import (
    Stream,
    anthropic_endless,
    anthropic_stream,
    openai_endless,
    openai_stream,
    settled,
    sse_provider,
)

from agentledger.engine import (
    Agent,
    AnthropicModel,
    BudgetPolicy,
    Budgets,
    Delta,
    Engine,
    Model,
    OpenAIChatModel,
    Price,
    RetryPolicy,
)
from agentledger.events import (
    BudgetReserved,
    BudgetSettled,
    ModelCallFailed,
    ModelCallResponded,
    SqliteEventStore,
)

Wire = Literal["openai", "anthropic"]
WIRES: tuple[Wire, ...] = ("openai", "anthropic")
MODEL_NAMES: dict[Wire, str] = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-20250514"}
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
WORD = " tok"
"""One token of the replies: four characters, so ``pieces(text, 4)`` gives one token a piece."""
EVENTS_BEFORE_TEXT: dict[Wire, int] = {"openai": 1, "anthropic": 2}
"""The endless servers' events before their first piece of text: OpenAI's role chunk;
Anthropic's message_start and content_block_start."""
CUT_LIMITS = (16, 256, 4096)


# -- counting what the client reads off the connection ---------------------------------------


@dataclass
class Reads:
    """Server-sent events the client pulled off the connection, one entry per response."""

    events: list[int] = field(default_factory=list)


class _CountingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, reads: Reads) -> None:
        self._inner = inner
        self._reads = reads
        self._index = len(reads.events)
        reads.events.append(0)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        last = b""
        async for chunk in self._inner:
            # Each event ends with a blank line; one split between two reads is counted once,
            # with the last byte of the read before it.
            self._reads.events[self._index] += (last + chunk).count(b"\n\n")
            last = chunk[-1:]
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CountingTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that counts the events each response's reader pulled."""

    def __init__(self) -> None:
        self.reads = Reads()
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CountingStream(response.stream, self.reads),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- replies and agents ------------------------------------------------------------------------


def completion(tokens: int) -> dict[str, Any]:
    """An OpenAI chat completion of ``tokens`` tokens of text."""
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": MODEL_NAMES["openai"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": WORD * tokens},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": tokens, "total_tokens": 40 + tokens},
    }


def message(tokens: int) -> dict[str, Any]:
    """An Anthropic message of ``tokens`` tokens of text."""
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL_NAMES["anthropic"],
        "content": [{"type": "text", "text": WORD * tokens}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": tokens},
    }


def whole(wire: Wire, tokens: int) -> Stream:
    """The non-streamed answer of ``tokens`` tokens, as JSON."""
    body = completion(tokens) if wire == "openai" else message(tokens)
    return Stream([json.dumps(body).encode()], content_type="application/json")


def streamed(wire: Wire, tokens: int, drop_after: int | None = None) -> Stream:
    """The streamed answer of ``tokens`` tokens, one token a piece."""
    if wire == "openai":
        return Stream(openai_stream(completion(tokens), size=len(WORD)), drop_after=drop_after)
    return Stream(anthropic_stream(message(tokens), size=len(WORD)), drop_after=drop_after)


def endless(wire: Wire) -> Stream:
    return Stream(openai_endless(WORD) if wire == "openai" else anthropic_endless(WORD))


def model_for(wire: Wire, url: str, client: httpx.AsyncClient | None = None) -> Model:
    if wire == "openai":
        return OpenAIChatModel(
            MODEL_NAMES["openai"], base_url=f"{url}/v1", api_key="sk-bench", client=client
        )
    return AnthropicModel(MODEL_NAMES["anthropic"], base_url=url, api_key="bench", client=client)


def agent_for(wire: Wire, model: Model, **settings: Any) -> Agent:
    return Agent(name=f"bench-{wire}", model=model, prices={MODEL_NAMES[wire]: PRICE}, **settings)


# -- (a) completed vs streamed -----------------------------------------------------------------


async def side_by_side(wire: Wire, *, tokens: int, runs: int, db: Path) -> dict[str, Any]:
    """``runs`` runs whole and ``runs`` streamed, alternately, on one engine and SQLite file."""
    with (
        sse_provider([lambda: whole(wire, tokens)]) as (whole_url, _, _),
        sse_provider([lambda: streamed(wire, tokens)]) as (stream_url, _, _),
    ):
        settings = {"max_tokens": 2 * tokens}  # room: this part is not about the cut-off
        completing = agent_for(wire, model_for(wire, whole_url), **settings)
        streaming = agent_for(wire, model_for(wire, stream_url), **settings)
        seconds = {"completed": 0.0, "streamed": 0.0}
        deltas = 0
        texts: set[str] = set()
        async with SqliteEventStore(db) as store, Engine(store) as engine:

            async def once(agent: Agent, kind: str) -> None:
                nonlocal deltas
                started = time.perf_counter()
                async for item in engine.stream(agent, "Count.", deltas=kind == "streamed"):
                    if isinstance(item, Delta):
                        deltas += 1
                    elif isinstance(item.event, ModelCallResponded):
                        texts.add(item.event.text)
                seconds[kind] += time.perf_counter() - started

            for _ in range(max(2, runs // 10)):  # warm up connections, imports, the file
                await once(completing, "completed")
                await once(streaming, "streamed")
            seconds = {"completed": 0.0, "streamed": 0.0}
            deltas = 0
            for _ in range(runs):
                await once(completing, "completed")
                await once(streaming, "streamed")
    completed_us = seconds["completed"] / runs * 1e6
    streamed_us = seconds["streamed"] / runs * 1e6
    return {
        "reply_tokens": tokens,
        "runs_each": runs,
        "deltas_per_streamed_run": deltas / runs,
        "same_reply": texts == {WORD * tokens},
        "us_per_run_completed": round(completed_us, 1),
        "us_per_run_streamed": round(streamed_us, 1),
        "us_per_delta_streamed": round(streamed_us / tokens, 2),
        "extra_us_per_delta": round((streamed_us - completed_us) / tokens, 2),
        "ratio_streamed_to_completed": round(streamed_us / completed_us, 2),
    }


# -- (b) the cut-off -----------------------------------------------------------------------------


async def cutoff(wire: Wire, *, max_tokens: int, db: Path) -> dict[str, Any]:
    """One capped run against a server that streams forever, cut at ``max_tokens``."""
    transport = CountingTransport()
    caps = Budgets({"default": BudgetPolicy(per_run_usd=Decimal("10"))})
    with sse_provider([lambda: endless(wire)]) as (url, asked, served):
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
            store = await stack.enter_async_context(SqliteEventStore(db))
            engine = await stack.enter_async_context(
                Engine(store, budgets=caps, stream_models=True)
            )
            agent = agent_for(wire, model_for(wire, url, client), max_tokens=max_tokens)
            started = time.perf_counter()
            result = await engine.run(agent, "Talk.", user_id="bench")
            seconds = time.perf_counter() - started
            events = [r.event for r in await store.read_stream(f"run-{result.run_id}")]
        written = settled(served, len(asked))
    (answer,) = [e for e in events if isinstance(e, ModelCallResponded)]
    (reserved,) = [e for e in events if isinstance(e, BudgetReserved)]
    (settlement,) = [e for e in events if isinstance(e, BudgetSettled)]
    (read,) = transport.reads.events
    return {
        "max_tokens": max_tokens,
        "status": result.status,
        "finish_reason": answer.finish_reason,
        "output_tokens_recorded": answer.usage.output_tokens,
        "text_tokens_kept": answer.text.count(WORD),
        "reserved_usd": str(reserved.amount_usd),
        "settled_usd": str(settlement.actual_usd),
        "settled_within_reserved": settlement.actual_usd <= settlement.reserved_usd,
        "events_read_past_limit": read - EVENTS_BEFORE_TEXT[wire] - max_tokens,
        "events_server_wrote": written[0] if written else None,
        "ms_to_cut": round(seconds * 1e3, 1),
        "us_per_token_to_cut": round(seconds / max_tokens * 1e6, 1),
    }


# -- (c) a stream dropped mid-way --------------------------------------------------------------


async def dropped(wire: Wire, *, every_time: bool, tokens: int, db: Path) -> dict[str, Any]:
    """A run whose stream breaks off after a third of its events, once or on every attempt."""
    drop_after = (tokens + EVENTS_BEFORE_TEXT[wire]) // 3
    script: list[Callable[[], Stream]] = [lambda: streamed(wire, tokens, drop_after)]
    if not every_time:
        script.append(lambda: streamed(wire, tokens))
    retry = RetryPolicy(base_delay=0.01, max_delay=0.05)
    with sse_provider(script) as (url, asked, _):
        agent = agent_for(wire, model_for(wire, url), retry=retry, max_tokens=2 * tokens)
        async with SqliteEventStore(db) as store, Engine(store) as engine:
            started = time.perf_counter()
            items = [item async for item in engine.stream(agent, "Count.", deltas=True)]
            seconds = time.perf_counter() - started
            result = await engine.result(items[0].run_id)
            replay = await engine.replay(result.run_id)
    events = [i.event for i in items if not isinstance(i, Delta)]
    failed = [e for e in events if isinstance(e, ModelCallFailed)]
    return {
        "drops": "every attempt" if every_time else "first attempt",
        "attempts": len(asked),
        "failed_attempts": len(failed),
        "errors": sorted({e.error_type for e in failed}),
        "status": result.status,
        "output_is_whole_reply": result.output == WORD * tokens,
        "deltas_handed_out": sum(isinstance(i, Delta) for i in items),
        "replay_matches": replay.matches,
        "ms": round(seconds * 1e3, 1),
    }


async def measure(
    workdir: Path,
    *,
    tokens: int = 500,
    runs: int = 200,
    limits: tuple[int, ...] = CUT_LIMITS,
    wires: tuple[Wire, ...] = WIRES,
) -> dict[str, Any]:
    """All three parts for each wire format, each on a SQLite file of its own in ``workdir``."""
    figures: dict[str, Any] = {}
    for wire in wires:
        figures[wire] = {
            "completed_vs_streamed": await side_by_side(
                wire, tokens=tokens, runs=runs, db=workdir / f"{wire}-side.db"
            ),
            "cutoff_endless_server": [
                await cutoff(wire, max_tokens=limit, db=workdir / f"{wire}-cut-{limit}.db")
                for limit in limits
            ],
            "dropped_stream": [
                await dropped(
                    wire, every_time=every, tokens=min(tokens, 100), db=workdir / f"{wire}-{n}.db"
                )
                for n, every in enumerate((False, True))
            ],
        }
    return figures


async def main(quick: bool) -> dict[str, object]:
    tokens, runs = (100, 20) if quick else (500, 200)
    with tempfile.TemporaryDirectory() as tmp:
        figures = await measure(Path(tmp), tokens=tokens, runs=runs)
    return {
        "benchmark": "streaming",
        "store": "sqlite (file, WAL, synchronous=NORMAL)",
        "server": "threaded local HTTP/1.1, one chunk per event (tests/sse_server.py)",
        "quick": quick,
        **figures,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, options.quick)))
