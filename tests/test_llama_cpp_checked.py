"""What checking the engine against a real llama-cpp-python server found, as tests over real local
HTTP with the bodies recorded there (``fixtures/wire/llama-cpp-server/09-*`` to ``11-*``):

- that server cannot stream a request with tools and ``tool_choice: "auto"`` (it answers 200
  and an empty event stream), so the llama.cpp profile makes such requests whole;
- an error raised while a stream is read names the URL, like every other client error;
- a forced tool choice (a named tool, ``"required"``) held on every call, so a run could never
  answer: it now holds until a tool result follows the last user message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_like_server import llama_like_server
from pydantic import BaseModel
from sse_server import Stream, anthropic_stream, sse_provider

from agentledger.engine import (
    Agent,
    AnthropicModel,
    Delta,
    Engine,
    ModelConnectionError,
    OpenAIChatModel,
    Price,
    TextDelta,
    ToolCallDelta,
    ToolContext,
    tool,
)
from agentledger.engine.loop._requests import tool_choice_now
from agentledger.engine.models._model import ModelRequest, ToolSpec
from agentledger.engine.testing import SequentialIds
from agentledger.events import (
    MemoryEventStore,
    ModelCallFailed,
    ModelCallResponded,
    ToolCall,
    ToolCallSucceeded,
)
from agentledger.projections._messages import AssistantMessage, ToolResultMessage, UserMessage

RECORDED = Path(__file__).resolve().parent / "fixtures" / "wire" / "llama-cpp-server"
NAME = "smollm2-135m"
FREE = {NAME: Price.free()}


class Order(BaseModel):
    order_id: int


@tool
async def lookup_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up by its number."""
    return {"order_id": args.order_id, "state": "shipped"}


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return loaded


async def test_a_streamed_tool_run_completes_on_llama_cpp() -> None:
    with llama_like_server() as (url, sent):
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url) as model:
            agent = Agent(name="orders", model=model, tools=[lookup_order], prices=FREE)
            items: list[Any] = []
            async with (
                MemoryEventStore() as store,
                Engine(store, ids=SequentialIds()) as engine,
            ):
                async for item in engine.stream(
                    agent, "Where is my order 123456?", run_id="r1", deltas=True
                ):
                    items.append(item)
                result = await engine.result("r1")

    events = [item.event for item in items if not isinstance(item, Delta)]
    assert result.status == "completed"
    assert not [e for e in events if isinstance(e, ModelCallFailed)]
    assert [e.tool_name for e in events if isinstance(e, ToolCallSucceeded)] == ["lookup_order"]
    # Both requests let the model choose (auto): made whole, not streamed.
    assert [body.get("tool_choice") for body in sent] == ["auto", "auto"]
    assert not [body for body in sent if "stream" in body]
    # The whole replies were still handed out as deltas, one piece each, before their events.
    deltas = [item.delta for item in items if isinstance(item, Delta)]
    call = recorded("10-auto-tool-choice.response.json")["choices"][0]["message"]["tool_calls"][0]
    answer = recorded("04-tool-followup-content-empty.response.json")["choices"][0]["message"]
    assert deltas == [
        ToolCallDelta(
            index=0, id=call["id"], name="lookup_order", arguments=call["function"]["arguments"]
        ),
        TextDelta(answer["content"]),
    ]
    replies = [e for e in events if isinstance(e, ModelCallResponded)]
    assert replies[-1].text == answer["content"]


async def test_a_request_with_a_named_tool_still_streams_on_llama_cpp() -> None:
    request = ModelRequest(
        messages=[UserMessage(content="Look up order 123456.")],
        tools=[
            ToolSpec(
                name="lookup_order",
                description="Look an order up.",
                parameters=Order.model_json_schema(),
            )
        ],
        tool_choice="lookup_order",
        max_tokens=64,
    )
    deltas: list[Any] = []
    with llama_like_server() as (url, sent):
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url) as model:
            reply = await model.stream(request, deltas.append)

    assert sent[0]["stream"] is True
    assert [c.name for c in reply.tool_calls] == ["lookup_order"]
    assert len(deltas) > 1  # piece by piece, as the recorded stream came


async def test_streaming_auto_tools_to_that_server_breaks_and_the_error_names_the_url() -> None:
    """What a profile that streams such requests meets there: the recorded empty stream."""
    request = ModelRequest(
        messages=[UserMessage(content="Where is my order 123456?")],
        tools=[ToolSpec(name="lookup_order", description="", parameters={"type": "object"})],
    )
    with llama_like_server() as (url, sent):
        # The openai profile leaves "auto" out, and that server offers no tools without it.
        auto = {"tool_choice": "auto"}
        async with OpenAIChatModel(NAME, base_url=url, extra_body=auto) as model:
            assert model.profile.streams_auto_tools
            with pytest.raises(ModelConnectionError) as caught:
                await model.stream(request, lambda piece: None)

    assert [(body["stream"], body["tool_choice"]) for body in sent] == [(True, "auto")]
    assert str(caught.value) == (
        f"{NAME} at {url}/chat/completions: the stream broke off: it ended before [DONE]"
    )
    assert caught.value.url == f"{url}/chat/completions" and caught.value.retryable


async def test_an_anthropic_stream_that_ends_early_names_the_url() -> None:
    body = json.loads(
        (RECORDED.parent.parent / "anthropic" / "after_tools.response.json").read_text()
    )
    events = anthropic_stream(body)[:-1]
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        async with AnthropicModel("claude-sonnet-4-20250514", base_url=url, api_key="k") as model:
            with pytest.raises(ModelConnectionError) as caught:
                await model.stream(
                    ModelRequest(messages=[UserMessage(content="Hi")]), lambda piece: None
                )
    assert str(caught.value).startswith(f"claude-sonnet-4-20250514 at {url}/v1/messages: ")
    assert "ended before message_stop" in str(caught.value)


async def test_the_recorded_auto_tool_call_reads_its_tool_calls_not_the_legacy_field() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=recorded("11-tool-followup-auto.response.json"))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        model = OpenAIChatModel(NAME, server="llama.cpp", client=client)
        reply = await model.complete(ModelRequest(messages=[UserMessage(content="Hi")]))
    # The legacy function_call names "lookup_order:" (sic); tool_calls has the real name.
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("lookup_order", '{"order_id": 123456}')
    ]


async def test_a_run_with_a_forced_tool_answers_after_the_tools_result() -> None:
    with llama_like_server() as (url, sent):
        async with OpenAIChatModel(NAME, server="llama.cpp", base_url=url) as model:
            agent = Agent(
                name="orders",
                model=model,
                tools=[lookup_order],
                tool_choice="lookup_order",
                prices=FREE,
                max_turns=4,
            )
            async with MemoryEventStore() as store, Engine(store) as engine:
                result = await engine.run(agent, "Where is my order 123456?")
                events = [r.event for r in await store.read_stream(f"run-{result.run_id}")]
                replay = await engine.replay(result.run_id, agent=agent)

    assert result.status == "completed"
    assert [e.tool_name for e in events if isinstance(e, ToolCallSucceeded)] == ["lookup_order"]
    forced = {"type": "function", "function": {"name": "lookup_order"}}
    assert [body["tool_choice"] for body in sent] == [forced, "auto"]
    assert replay.matches and len(sent) == 2


CALLED = ToolCall(id="c1", name="lookup_order", arguments="{}")


@pytest.mark.parametrize("choice", ["required", "lookup_order"])
def test_forcing_holds_until_a_tool_result_follows_the_last_user_message(choice: str) -> None:
    asked = [UserMessage(content="Where is my order?")]
    called = [
        *asked,
        AssistantMessage(tool_calls=(CALLED,)),
        ToolResultMessage(tool_call_id="c1", tool_name="lookup_order", content="{}"),
    ]
    revised = [*called, AssistantMessage(content="Shipped."), UserMessage(content="Check again.")]
    assert tool_choice_now(asked, choice) == choice
    assert tool_choice_now(called, choice) == "auto"
    assert tool_choice_now(revised, choice) == choice
    assert tool_choice_now(called, "none") == "none"
