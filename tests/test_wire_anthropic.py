"""Anthropic's wire: tool_choice, sampling and tool-based structured output.

Request bodies are compared with files written from Anthropic's API reference
(``fixtures/wire/anthropic``, see its README); the reply is parsed from a file of the documented
shape.
"""

from __future__ import annotations

import pytest
from wire_cases import AS_JSON, ASK, LOOKUP, LOOSE_ORDER, SAMPLING, Replies, load, matches_file

from agentledger.engine._errors import AgentConfigError, ModelRequestError
from agentledger.engine.models._anthropic import AnthropicModel
from agentledger.engine.models._model import (
    ModelReply,
    ModelRequest,
    OutputSchema,
    Sampling,
    ToolSpec,
)
from agentledger.events import ToolCall, Usage

MODEL = "claude-sonnet-4-20250514"


def body(request: ModelRequest) -> dict[str, object]:
    return AnthropicModel(MODEL, api_key="k").request_body(request)


async def test_structured_output_is_a_forced_tool_whose_input_is_the_answer() -> None:
    replies = Replies(200, load("anthropic/03-structured-output.response.json"))
    model = AnthropicModel(MODEL, api_key="k", client=replies.client())

    reply = await model.complete(ModelRequest(messages=AS_JSON, max_tokens=256, output=LOOSE_ORDER))

    assert matches_file(replies.sent[0], "anthropic/03-structured-output.request.json")
    assert reply == ModelReply(
        text='{"order_id":123456,"state":"shipped"}',
        usage=Usage(input_tokens=512, output_tokens=48),
        finish_reason="tool_use",
        model=MODEL,
    )


def test_with_tools_the_output_tool_is_offered_beside_them_and_not_forced() -> None:
    sent = body(ModelRequest(messages=ASK, tools=[LOOKUP], output=LOOSE_ORDER))
    assert [tool["name"] for tool in sent["tools"]] == ["lookup_order", "OrderState"]  # type: ignore[index]
    assert "tool_choice" not in sent


async def test_a_reply_with_the_output_tool_and_another_tool_keeps_the_other_as_a_call() -> None:
    answer = load("anthropic/03-structured-output.response.json")
    answer["content"].insert(
        0, {"type": "tool_use", "id": "toolu_2", "name": "lookup_order", "input": {"order_id": 1}}
    )
    model = AnthropicModel(MODEL, api_key="k", client=Replies(200, answer).client())

    reply = await model.complete(ModelRequest(messages=ASK, tools=[LOOKUP], output=LOOSE_ORDER))

    assert reply.text == '{"order_id":123456,"state":"shipped"}'
    assert reply.tool_calls == (
        ToolCall(id="toolu_2", name="lookup_order", arguments='{"order_id":1}'),
    )


async def test_without_an_output_schema_a_tool_use_stays_a_tool_call() -> None:
    answer = load("anthropic/03-structured-output.response.json")
    model = AnthropicModel(MODEL, api_key="k", client=Replies(200, answer).client())

    reply = await model.complete(ModelRequest(messages=ASK))

    assert reply.text == ""
    assert [call.name for call in reply.tool_calls] == ["OrderState"]


def test_tool_choice_and_sampling() -> None:
    request = ModelRequest(
        messages=ASK,
        tools=[LOOKUP],
        tool_choice="required",
        sampling=Sampling(temperature=0.2, top_p=0.9, stop=("\n\nHuman:",)),
        max_tokens=64,
    )
    assert matches_file(body(request), "anthropic/04-tool-choice-any-sampling.request.json")

    def choice(tool_choice: str) -> object:
        return body(ModelRequest(messages=ASK, tools=[LOOKUP], tool_choice=tool_choice)).get(
            "tool_choice"
        )

    assert choice("auto") is None  # the API's default: the recorded requests stay as they were
    assert choice("none") == {"type": "none"}
    assert choice("lookup_order") == {"type": "tool", "name": "lookup_order"}
    assert "tool_choice" not in body(ModelRequest(messages=ASK, tool_choice="none"))


def test_a_seed_and_a_temperature_above_one_are_refused() -> None:
    model = AnthropicModel(MODEL, api_key="k")
    with pytest.raises(AgentConfigError, match="Anthropic's messages API has no seed"):
        model.check_settings("auto", SAMPLING, ("lookup_order",))
    with pytest.raises(AgentConfigError, match=r"temperature from 0 to 1, not 1\.5"):
        model.check_settings("auto", Sampling(temperature=1.5), ())
    model.check_settings("required", Sampling(temperature=1.0, top_p=0.5, stop=("x",)), ("t",))
    # A request built by hand still cannot carry one silently.
    with pytest.raises(ModelRequestError, match="has no seed"):
        model.request_body(ModelRequest(messages=ASK, sampling=Sampling(seed=1)))


def test_an_output_schema_named_like_a_tool_is_refused() -> None:
    clash = OutputSchema(name="lookup_order", schema={"type": "object"})
    with pytest.raises(ModelRequestError, match="also a tool's name"):
        body(ModelRequest(messages=ASK, tools=[LOOKUP], output=clash))
    other = ToolSpec(name="OrderStatus", description="", parameters={"type": "object"})
    assert len(body(ModelRequest(messages=ASK, tools=[other], output=LOOSE_ORDER))["tools"]) == 2  # type: ignore[arg-type]
