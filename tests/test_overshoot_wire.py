"""Budget overshoot over real HTTP: a server that ignores the output limit, on every store.

The local server answers every chat request with llama.cpp's recorded reply to
``max_completion_tokens: 5`` (``05-max-completion-tokens-ignored``): 979 completion tokens. The
overshoot is recorded, the run's next call is refused, and so is another run of the same user
that day, made by a second engine on its own store object (another process, for SQLite and
PostgreSQL); both runs replay without divergence.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentledger.engine import Agent, BudgetPolicy, Budgets, Critic, Engine, Price
from agentledger.engine.models._openai import OpenAIChatModel
from agentledger.engine.testing import FakeClock
from agentledger.events import BudgetExceeded, BudgetOvershot, BudgetReserved, EventStore

StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]

FIXTURE = (
    Path(__file__).resolve().parent
    / "fixtures/wire/llama-cpp-server/05-max-completion-tokens-ignored.response.json"
)
T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
DAY = date(2026, 11, 29)
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))
ACTUAL = Decimal(17 * 2 + 979 * 8) / 1_000_000
"""The recorded reply's cost: 17 prompt and 979 completion tokens at ``PRICE``."""
BUDGETS = Budgets(
    {"chat": BudgetPolicy(per_run_usd=Decimal("0.002"), per_user_day_usd=Decimal("0.01"))}
)


@contextmanager
def limit_ignoring_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local OpenAI-compatible server that answers every chat request with the recorded
    reply of a server that ignored the output limit: its base URL and the bodies it was sent."""
    asked: list[dict[str, Any]] = []
    reply = FIXTURE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", asked
    finally:
        server.shutdown()
        server.server_close()


def storyteller(base_url: str) -> Agent:
    """An agent whose critic sends the story back, so the run wants a second model call."""
    model = OpenAIChatModel("smollm2-135m", api_key="sk-local", base_url=base_url)
    critic = Critic.from_config(
        {"checks": [{"type": "banned_phrases", "phrases": ["Once upon a time"]}]}
    )
    return Agent(
        name="storyteller",
        model=model,
        max_tokens=5,
        prices={"smollm2-135m": PRICE},
        critic=critic,
    )


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    with limit_ignoring_server() as running:
        yield running


async def test_an_overshoot_over_http_closes_the_run_and_the_day_across_engines(
    store_factory: StoreFactory, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, asked = server
    agent = storyteller(url)
    task = "Write a long story about a cat."
    async with (
        store_factory() as one,
        store_factory() as two,
        Engine(one, clock=FakeClock(T0), budgets=BUDGETS, agents=[agent]) as first,
        Engine(two, clock=FakeClock(T0), budgets=BUDGETS, agents=[agent]) as second,
    ):
        result = await first.run(agent, task, user_id="ada", surface="chat", run_id="story")
        events = [r.event for r in await one.read_stream("run-story")]
        assert [e.type for e in events] == [
            "run_started",
            "turn_started",
            "model_call_requested",
            "budget_reserved",
            "model_call_responded",
            "budget_settled",
            "budget_overshot",
            "critic_verdict",
            "revision_requested",
            "turn_started",
            "model_call_requested",
            "budget_exceeded",
        ]
        reserved, overshot, refused = events[3], events[6], events[-1]
        assert isinstance(reserved, BudgetReserved) and isinstance(overshot, BudgetOvershot)
        assert isinstance(refused, BudgetExceeded)
        assert overshot.actual_usd == ACTUAL == result.cost_usd
        assert overshot.reserved_usd == reserved.amount_usd < Decimal("0.002") < ACTUAL
        assert overshot.over_usd == ACTUAL - reserved.amount_usd
        assert refused.scope == "run" and refused.closed_by == reserved.reservation_id
        assert len(asked) == 1  # the revision was never sent
        assert result.status == "budget_exceeded" and result.overshoots == (overshot,)

        # The ledger holds the real spend, and is closed, as the other engine reads it.
        day = await second.spend_for_user("ada", DAY)
        assert day.settled == ACTUAL and day.outstanding == {}
        assert day.closed_by == reserved.reservation_id and day.overshot_usd == overshot.over_usd

        # A second run of ada that day, through the other engine: refused before any request.
        other = await second.run(agent, "A short poem.", user_id="ada", surface="chat")
        assert other.status == "budget_exceeded" and other.cost_usd == 0
        last = (await two.read_stream(f"run-{other.run_id}"))[-1].event
        assert isinstance(last, BudgetExceeded)
        assert last.scope == "user_day" and last.closed_by == reserved.reservation_id
        assert len(asked) == 1

        for run_id in ("story", other.run_id):
            report = await first.replay(run_id)
            assert report.matches, report.divergence
        assert len(asked) == 1  # replays answer from the log
