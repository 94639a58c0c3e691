"""The streaming clients over real local HTTP: both wire formats, recorded llama.cpp streams,
the output cut-off against a server that ignores its limit, and streams that break off."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sse_server import (
    Stream,
    anthropic_endless,
    anthropic_stream,
    openai_endless,
    openai_stream,
    recorded,
    settled,
    sse,
    sse_provider,
)

from agentledger.engine import (
    AnthropicModel,
    ModelConnectionError,
    ModelRateLimitedError,
    ModelReply,
    ModelRequest,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    OpenAIChatModel,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from agentledger.engine.models._model import ModelDelta, OutputSchema
from agentledger.engine.models._sse import (
    OutputMeter,
    ServerSentEvent,
    input_estimate,
    server_sent_events,
)
from agentledger.projections._messages import UserMessage

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ASK = ModelRequest(messages=[UserMessage(content="What's the weather in Paris and in Tokyo?")])


def load(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text())


def openai(url: str) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o-mini", base_url=f"{url}/v1", api_key="sk-test")


def anthropic(url: str) -> AnthropicModel:
    return AnthropicModel("claude-sonnet-4-20250514", base_url=url, api_key="test")


async def completed(model_type: type[OpenAIChatModel | AnthropicModel], body: Any) -> ModelReply:
    """What ``complete`` makes of ``body`` (a recorded reply), over a MockTransport."""

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        model = model_type("m", base_url="http://test", api_key="k", client=client)
        reply = await model.complete(ASK)
    return reply


async def streamed(
    model: OpenAIChatModel | AnthropicModel, request: ModelRequest = ASK
) -> tuple[ModelReply, list[ModelDelta]]:
    deltas: list[ModelDelta] = []
    async with model:
        reply = await model.stream(request, deltas.append)
    return reply, deltas


def joined(deltas: list[ModelDelta]) -> tuple[str, dict[int, str]]:
    """The text and the arguments per tool call that ``deltas`` add up to."""
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    arguments: dict[int, str] = {}
    for d in deltas:
        if isinstance(d, ToolCallDelta):
            arguments[d.index] = arguments.get(d.index, "") + d.arguments
    return text, arguments


# -- the SSE framing ---------------------------------------------------------------------------


async def test_server_sent_events_follow_the_framing_rules() -> None:
    lines = [
        ": a comment",
        "event: content_block_delta",
        "data: one",
        "data:two",
        "",
        "",
        "data: {}",
        "retry: 5",
        "",
        "data: cut before its blank line",
    ]

    async def feed() -> AsyncIterator[str]:
        for line in lines:
            yield line

    events = [event async for event in server_sent_events(feed())]
    assert events == [
        ServerSentEvent("content_block_delta", "one\ntwo"),
        ServerSentEvent("message", "{}"),
    ]


def test_the_meter_counts_pieces_or_long_text() -> None:
    meter = OutputMeter(max_tokens=4)
    for piece in ("a", "b", "c"):
        meter.add(piece)
    assert (meter.count, meter.full) == (3, False)
    meter.add("d")
    assert meter.full
    packed = OutputMeter(max_tokens=4)
    packed.add("x" * 100)  # one piece of many tokens
    assert packed.full and packed.recorded_tokens() == 4


# -- both formats: a streamed reply equals the completed one -----------------------------------


@pytest.mark.parametrize(
    "fixture", ["openai/tool_calls.response.json", "openai/after_tools.response.json"]
)
async def test_openai_stream_equals_complete(fixture: str) -> None:
    body = load(fixture)
    with sse_provider([lambda: Stream(openai_stream(body))]) as (url, asked, _):
        reply, deltas = await streamed(openai(url))
    expected = await completed(OpenAIChatModel, body)
    assert reply == expected
    text, arguments = joined(deltas)
    assert text == expected.text
    assert arguments == {i: c.arguments for i, c in enumerate(expected.tool_calls)}
    firsts = [d for d in deltas if isinstance(d, ToolCallDelta) and d.id is not None]
    assert [(d.id, d.name) for d in firsts] == [(c.id, c.name) for c in expected.tool_calls]
    ((path, sent),) = asked
    assert path == "/v1/chat/completions"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "fixture", ["anthropic/tool_use.response.json", "anthropic/after_tools.response.json"]
)
async def test_anthropic_stream_equals_complete(fixture: str) -> None:
    body = load(fixture)
    with sse_provider([lambda: Stream(anthropic_stream(body))]) as (url, asked, _):
        reply, deltas = await streamed(anthropic(url))
    expected = await completed(AnthropicModel, body)
    assert reply == expected
    text, arguments = joined(deltas)
    assert text == expected.text
    # The pieces are the JSON as streamed; the reply carries it compact, as ``complete`` does.
    assert {i: json.loads(a) for i, a in arguments.items()} == {
        i: json.loads(c.arguments) for i, c in enumerate(expected.tool_calls)
    }
    ((path, sent),) = asked
    assert path == "/v1/messages" and sent["stream"] is True


async def test_an_anthropic_structured_answer_streams_as_text() -> None:
    # Tool-based structured output: the output tool's input is the answer, as in ``complete``.
    body = load("wire/anthropic/03-structured-output.response.json")
    schema = {"type": "object", "properties": {"order_id": {"type": "integer"}}}
    request = ModelRequest(messages=ASK.messages, output=OutputSchema("OrderState", schema))
    with sse_provider([lambda: Stream(anthropic_stream(body))]) as (url, _, _):
        reply, deltas = await streamed(anthropic(url), request)

    async def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client,
        AnthropicModel("m", base_url="http://test", api_key="k", client=client) as model,
    ):
        expected = await model.complete(request)
    assert reply.text == expected.text == '{"order_id":123456,"state":"shipped"}'
    assert reply.tool_calls == expected.tool_calls == ()
    assert all(isinstance(d, TextDelta) for d in deltas)
    assert json.loads(joined(deltas)[0]) == json.loads(reply.text)


async def test_anthropic_documented_stream() -> None:
    events = recorded("anthropic/stream_tool_use.sse")
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        reply, deltas = await streamed(anthropic(url))
    assert reply.text == "Okay, let's check the weather for San Francisco, CA:"
    (call,) = reply.tool_calls
    assert (call.id, call.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert call.arguments == '{"location":"San Francisco, CA","unit":"fahrenheit"}'
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (472, 89)
    assert (reply.finish_reason, reply.model) == ("tool_use", "claude-sonnet-4-5")
    tool_deltas = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert tool_deltas[0] == ToolCallDelta(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", "")
    assert all(d.id is None and d.name is None for d in tool_deltas[1:])
    assert joined(deltas)[0] == reply.text


# -- llama.cpp's recorded streams -------------------------------------------------------------


async def test_llama_cpp_stream_without_usage_is_counted() -> None:
    events = recorded("wire/llama-cpp-server/06-stream-include-usage.response.sse")
    request = ModelRequest(messages=[UserMessage(content="Count to five.")], max_tokens=12)
    with sse_provider([lambda: Stream(events)]) as (url, asked, _):
        reply, deltas = await streamed(openai(url), request)
    words = [d.text for d in deltas if isinstance(d, TextDelta)]
    assert words[:3] == ["The", " new", " employee"] and len(words) == 12
    assert reply.text == "The new employee, Alex, was responsible for planning and executing"
    assert (reply.finish_reason, reply.model) == ("length", "smollm2-135m")
    # No usage chunk came: the pieces counted, and the conversation's estimate as input.
    assert reply.usage.output_tokens == 12
    assert reply.usage.input_tokens == input_estimate(asked[0][1]) > 0


async def test_llama_cpp_tool_call_stream_repeats_id_and_name() -> None:
    events = recorded("wire/llama-cpp-server/07-stream-forced-tool-call.response.sse")
    lookup = ToolSpec("lookup_order", "Look an order up.", {"type": "object"})
    request = ModelRequest(messages=[UserMessage(content="Look up order 123456.")], tools=[lookup])
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        reply, deltas = await streamed(openai(url), request)
    (call,) = reply.tool_calls
    assert call.id == "call__0_lookup_order_cmpl-5741bf6f-9f65-42d4-8a7e-1c65ab127d32"
    assert call.name == "lookup_order"  # not repeated once per piece
    assert json.loads(call.arguments) == {"order_id": 123456}
    assert call.arguments == joined(deltas)[1][0]
    named = [d for d in deltas if isinstance(d, ToolCallDelta) and d.name is not None]
    assert len(named) == 1 and named[0].id == call.id
    assert (reply.text, reply.finish_reason) == ("", "tool_calls")


# -- the output cut-off -----------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_server_that_ignores_the_limit_is_cut_off(wire: str) -> None:
    endless = openai_endless if wire == "openai" else anthropic_endless
    request = ModelRequest(messages=[UserMessage(content="Go on forever.")], max_tokens=40)
    with sse_provider([lambda: Stream(endless())]) as (url, _, served):
        model = openai(url) if wire == "openai" else anthropic(url)
        reply, deltas = await streamed(model, request)
        (events_written,) = settled(served)
    assert reply.text == " tok" * 40 and len(deltas) == 40
    assert (reply.finish_reason, reply.usage.output_tokens) == ("length", 40)
    if wire == "anthropic":
        assert reply.usage.input_tokens == 30  # message_start's, not an estimate
    assert events_written < 10_000  # the server stopped writing: the client hung up


async def test_a_tool_call_cut_mid_arguments_keeps_what_arrived() -> None:
    # The documented stream: 13 pieces of text, then the tool input; 16 pieces cut it.
    events = recorded("anthropic/stream_tool_use.sse")
    request = ModelRequest(messages=[UserMessage(content="Weather?")], max_tokens=16)
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        reply, deltas = await streamed(anthropic(url), request)
    (call,) = reply.tool_calls
    assert call.arguments == joined(deltas)[1][0] == '{"location": "San Francisc'
    assert (reply.finish_reason, reply.usage.output_tokens) == ("length", 16)
    assert reply.usage.input_tokens == 472


async def test_a_piece_packing_many_tokens_is_counted_by_its_text() -> None:
    head = {"object": "chat.completion.chunk", "model": "packer"}
    big = sse(head | {"choices": [{"index": 0, "delta": {"content": "word " * 200}}]})

    def events() -> AsyncIterator[bytes] | Any:
        yield big
        yield from openai_endless()

    request = ModelRequest(messages=[UserMessage(content="Hi")], max_tokens=50)
    with sse_provider([lambda: Stream(events())]) as (url, _, _):
        reply, deltas = await streamed(openai(url), request)
    assert len(deltas) == 1 and reply.text == "word " * 200
    assert (reply.finish_reason, reply.usage.output_tokens) == ("length", 50)


async def test_a_server_keeping_to_the_limit_gets_its_usage_read() -> None:
    completion = {
        "model": "honest",
        "choices": [{"message": {"content": "abcdefgh"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 8},
    }
    request = ModelRequest(messages=[UserMessage(content="Hi")], max_tokens=8)
    events = openai_stream(completion, size=1)  # exactly max_tokens pieces, then finish and usage
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        reply, _ = await streamed(openai(url), request)
    assert (reply.text, reply.finish_reason) == ("abcdefgh", "length")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (7, 8)


# -- streams that break off -------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_dropped_connection_is_a_retryable_connection_error(wire: str) -> None:
    body = load(
        "openai/after_tools.response.json"
        if wire == "openai"
        else "anthropic/after_tools.response.json"
    )
    events = openai_stream(body) if wire == "openai" else anthropic_stream(body)
    with sse_provider([lambda: Stream(events, drop_after=4)]) as (url, _, _):
        model = openai(url) if wire == "openai" else anthropic(url)
        deltas: list[ModelDelta] = []
        async with model:
            with pytest.raises(ModelConnectionError, match="broke off") as caught:
                await model.stream(ASK, deltas.append)
    assert caught.value.retryable and deltas  # some pieces were handed out before the break


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_stream_ending_before_its_end_event_is_a_connection_error(wire: str) -> None:
    body = load(
        "openai/after_tools.response.json"
        if wire == "openai"
        else "anthropic/after_tools.response.json"
    )
    events = (openai_stream(body) if wire == "openai" else anthropic_stream(body))[:-1]
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        model = openai(url) if wire == "openai" else anthropic(url)
        async with model:
            with pytest.raises(ModelConnectionError, match="ended before"):
                await model.stream(ASK, lambda delta: None)


@pytest.mark.parametrize(
    ("kind", "error"),
    [("overloaded_error", ModelServerError), ("rate_limit_error", ModelRateLimitedError)],
)
async def test_an_anthropic_error_event_fails_the_attempt(
    kind: str, error: type[Exception]
) -> None:
    failure = sse({"type": "error", "error": {"type": kind, "message": "Overloaded"}}, "error")
    events = [*anthropic_stream(load("anthropic/after_tools.response.json"))[:4], failure]
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        async with anthropic(url) as model:
            with pytest.raises(error, match=kind) as caught:
                await model.stream(ASK, lambda delta: None)
    assert getattr(caught.value, "retryable", False)


async def test_an_openai_error_object_mid_stream_fails_the_attempt() -> None:
    failure = sse({"error": {"message": "upstream model crashed", "type": "server_error"}})
    events = [*openai_stream(load("openai/after_tools.response.json"))[:3], failure]
    with sse_provider([lambda: Stream(events)]) as (url, _, _):
        async with openai(url) as model:
            with pytest.raises(ModelServerError, match="upstream model crashed"):
                await model.stream(ASK, lambda delta: None)


async def test_an_error_status_is_mapped_before_any_event() -> None:
    body = json.dumps({"error": {"type": "server_error", "message": "try later"}}).encode()
    with sse_provider([lambda: Stream([body], status=500)]) as (url, _, _):
        async with openai(url) as model:
            with pytest.raises(ModelServerError, match="HTTP 500: server_error: try later"):
                await model.stream(ASK, lambda delta: None)


async def test_a_chunk_that_is_not_json_is_a_malformed_reply() -> None:
    with sse_provider([lambda: Stream([b"data: {not json\n\n"])]) as (url, _, _):
        async with openai(url) as model:
            with pytest.raises(ModelResponseError, match="not JSON"):
                await model.stream(ASK, lambda delta: None)


async def test_a_server_that_does_not_stream_is_told_apart() -> None:
    whole = (FIXTURES / "openai/after_tools.response.json").read_bytes()
    answer = Stream([whole], content_type="application/json")
    with sse_provider([lambda: answer]) as (url, _, _):
        async with openai(url) as model:
            with pytest.raises(ModelRequestError, match="JSON, not an event stream") as caught:
                await model.stream(ASK, lambda delta: None)
    assert not caught.value.retryable
