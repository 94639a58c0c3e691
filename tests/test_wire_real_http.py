"""Real local HTTP: a whole tool-call run against a server that, like llama.cpp's, answers a
null tool-turn content with HTTP 500; the timeout story; connection errors naming the URL."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from llama_like_server import llama_like_server
from pydantic import BaseModel
from wire_cases import load

from agentledger.engine import (
    Agent,
    Engine,
    ModelConnectionError,
    ModelTimeoutError,
    Price,
    RetryPolicy,
    ToolContext,
    tool,
)
from agentledger.engine.models._http import engine_attempt
from agentledger.engine.models._model import ModelRequest
from agentledger.engine.models._openai import OpenAIChatModel
from agentledger.engine.testing import SequentialIds
from agentledger.events import MemoryEventStore, ModelCallFailed, RecordedEvent, ToolCallSucceeded
from agentledger.projections._messages import UserMessage

NAME = "smollm2-135m"
FREE = {NAME: Price.free()}
HELLO = ModelRequest(messages=[UserMessage(content="Hi")], max_tokens=16)


class Order(BaseModel):
    order_id: int


@tool
async def lookup_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up."""
    return {"order_id": args.order_id, "state": "shipped"}


async def run(agent: Agent) -> tuple[str, list[RecordedEvent]]:
    async with MemoryEventStore() as store, Engine(store, ids=SequentialIds()) as engine:
        result = await engine.run(agent, "Look up order 123456.", run_id="r1")
        return result.status, await store.read_stream("run-r1")


async def test_a_tool_call_run_completes_against_a_llama_cpp_like_server() -> None:
    with llama_like_server() as (url, sent):
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url) as model:
            agent = Agent(name="a", model=model, tools=[lookup_order], prices=FREE)
            status, events = await run(agent)

    assert status == "completed"
    assert [e.event.tool_name for e in events if isinstance(e.event, ToolCallSucceeded)] == [
        "lookup_order"
    ]
    assert not [e for e in events if isinstance(e.event, ModelCallFailed)]
    first, follow_up = sent
    assert first["tool_choice"] == "auto" and first["max_tokens"] == 1024
    assert "max_completion_tokens" not in first
    assert follow_up["messages"][-2]["role"] == "assistant"
    assert follow_up["messages"][-2]["content"] == ""


async def test_with_openais_shape_the_same_server_500s_and_it_is_not_retried() -> None:
    with llama_like_server() as (url, sent):
        async with OpenAIChatModel(NAME, base_url=url) as model:  # server="openai"
            # The openai shape sends no tool_choice, so that server would offer no tools: force
            # the call, as the recorded run did.
            agent = Agent(
                name="a", model=model, tools=[lookup_order], prices=FREE, tool_choice="lookup_order"
            )
            status, events = await run(agent)

    assert status == "failed"
    [failed] = [e.event for e in events if isinstance(e.event, ModelCallFailed)]
    assert (failed.error_type, failed.retryable, failed.status_code) == (
        "ModelRequestError",
        False,
        500,
    )
    assert f"{NAME} at {url}/chat/completions: HTTP 500, request rejected as invalid" in (
        failed.message
    )
    assert len(sent) == 2  # the tool call, then one follow-up: not three retries


async def test_the_clients_timeout_bounds_a_request_made_on_its_own() -> None:
    with llama_like_server(delay=0.4) as (url, _):
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url, timeout=0.1) as model:
            with pytest.raises(ModelTimeoutError) as caught:
                await model.complete(HELLO)

    assert str(caught.value).startswith(f"{NAME} at {url}/chat/completions: no answer within 0.1s")


async def test_inside_the_engine_the_agents_model_timeout_is_the_authority() -> None:
    with llama_like_server(delay=0.4) as (url, _):
        # The client alone would give up after 0.1 s; the agent allows 5 s per attempt.
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url, timeout=0.1) as model:
            status, _ = await run(Agent(name="a", model=model, prices=FREE, model_timeout=5))
    assert status == "completed"

    with llama_like_server(delay=1.0) as (url, _):
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url, timeout=30) as model:
            agent = Agent(
                name="a",
                model=model,
                prices=FREE,
                model_timeout=0.2,
                retry=RetryPolicy(max_attempts=1),
            )
            status, events = await run(agent)

    assert status == "failed"
    [failed] = [e.event for e in events if isinstance(e.event, ModelCallFailed)]
    assert failed.error_type == "ModelTimeoutError" and failed.retryable
    assert failed.message == (
        f"{NAME} at {url}/chat/completions: no reply within 0.2s (Agent.model_timeout)"
    )


async def test_a_refused_connection_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    async with OpenAIChatModel(NAME, base_url=url, api_key="sk-secret-key-123") as model:
        with pytest.raises(ModelConnectionError) as caught:
            await model.complete(HELLO)

    message = str(caught.value)
    assert message.startswith(f"{NAME} at {url}/chat/completions: ConnectError")
    assert "\n" not in message and "sk-secret" not in message


async def test_within_an_engine_attempt_the_client_bounds_only_connecting() -> None:
    seen: list[dict[str, float | None]] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=load("llama-cpp-server/01-chat.response.json"))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    model = OpenAIChatModel(NAME, server="llama.cpp", client=client, timeout=7)
    await model.complete(HELLO)
    with engine_attempt():
        await model.complete(HELLO)

    assert seen == [
        {"connect": 7, "read": 7, "write": 7, "pool": 7},
        {"connect": 7, "read": None, "write": None, "pool": None},
    ]
