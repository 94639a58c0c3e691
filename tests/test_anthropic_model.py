"""The Anthropic messages client, over ``httpx.MockTransport`` and recorded API bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.engine._errors import (
    ModelConnectionError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    ModelTimeoutError,
)
from agentledger.engine.models._anthropic import (
    AnthropicModel,
    anthropic_messages,
    anthropic_tool_schema,
)
from agentledger.engine.models._model import Model, ModelReply, ModelRequest, ToolSpec
from agentledger.events import ToolCall, Usage
from agentledger.projections._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
URL = "https://api.anthropic.com/v1/messages"

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["city"],
    },
)
LOCAL_TIME = ToolSpec(
    name="get_local_time",
    description="Current local time in an IANA time zone.",
    parameters={
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
)
SYSTEM = SystemMessage(content="You are a concise travel assistant. Use the tools for live data.")
QUESTION = UserMessage(content="What's the weather in Paris and in Tokyo right now?")
PARIS = ToolCall(
    id="toolu_01A09q90qw90lq917835lq9",
    name="get_weather",
    arguments='{"city":"Paris","unit":"celsius"}',
)
TOKYO = ToolCall(
    id="toolu_01BmRkXj4Y8nLcT2vQp7sWz3",
    name="get_weather",
    arguments='{"city":"Tokyo","unit":"celsius"}',
)
SIMPLE = ModelRequest(messages=[QUESTION])

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Provider:
    """A fake provider: answers every request with one scripted response and keeps the requests."""

    def __init__(self, status: int, body: Any = None, **kwargs: Any) -> None:
        self.requests: list[httpx.Request] = []
        self._status = status
        self._body = body
        self._kwargs = kwargs

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self._body, bytes):
            return httpx.Response(self._status, content=self._body, **self._kwargs)
        return httpx.Response(self._status, json=self._body, **self._kwargs)


def model_over(handler: Handler, **kwargs: Any) -> AnthropicModel:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AnthropicModel(
        "claude-sonnet-4-20250514", api_key="sk-ant-test", client=client, **kwargs
    )


async def test_parallel_tool_use_request_and_reply() -> None:
    provider = Provider(200, fixture("tool_use.response.json"))
    model = model_over(
        provider, extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"}
    )
    request = ModelRequest(messages=[SYSTEM, QUESTION], tools=[WEATHER, LOCAL_TIME])

    reply = await model.complete(request)

    [sent] = provider.requests
    assert sent.method == "POST"
    assert str(sent.url) == URL
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content) == fixture("tool_use.request.json")
    assert reply == ModelReply(
        text="I'll look up the current weather in both cities.",
        tool_calls=(PARIS, TOKYO),
        usage=Usage(input_tokens=612, output_tokens=118, cached_input_tokens=0),
        finish_reason="tool_use",
        model="claude-sonnet-4-20250514",
    )


async def test_tool_results_merge_into_one_user_message_after_their_calls() -> None:
    provider = Provider(200, fixture("after_tools.response.json"))
    model = model_over(provider, anthropic_version="2023-06-01")
    conversation: list[Message] = [
        SYSTEM,
        QUESTION,
        AssistantMessage(
            content="I'll look up the current weather in both cities.", tool_calls=(PARIS, TOKYO)
        ),
        ToolResultMessage(
            tool_call_id=PARIS.id,
            tool_name="get_weather",
            content='{"status":"ok","result":{"city":"Paris","temperature":18,'
            '"conditions":"light rain"}}',
        ),
        ToolResultMessage(
            tool_call_id=TOKYO.id,
            tool_name="get_weather",
            content='{"status":"ok","result":{"city":"Tokyo","temperature":24,'
            '"conditions":"clear"}}',
        ),
        SystemMessage(
            content="The tool get_local_time is degraded: do not call it again in this run."
        ),
        UserMessage(content="Please also say which city is better for a walk."),
    ]
    request = ModelRequest(messages=conversation, tools=[WEATHER], max_tokens=512, temperature=0.0)

    reply = await model.complete(request)

    [sent] = provider.requests
    assert json.loads(sent.content) == fixture("after_tools.request.json")
    # Cache reads and writes both count as input; only reads are "cached" (see module docs).
    assert reply == ModelReply(
        text="Paris: 18 °C with light rain. Tokyo: 24 °C and clear. "
        "Tokyo is the better city for a walk right now.",
        usage=Usage(input_tokens=96 + 248 + 1536, output_tokens=31, cached_input_tokens=1536),
        finish_reason="end_turn",
        model="claude-sonnet-4-20250514",
    )


async def test_max_tokens_stop_and_null_cache_fields() -> None:
    body = fixture("after_tools.response.json")
    body["stop_reason"] = "max_tokens"
    body["usage"] = {"input_tokens": 20, "output_tokens": 512, "cache_read_input_tokens": None}
    provider = Provider(200, body)

    reply = await model_over(provider).complete(SIMPLE)

    assert reply.finish_reason == "max_tokens"
    assert reply.usage == Usage(input_tokens=20, output_tokens=512, cached_input_tokens=0)
    assert json.loads(provider.requests[0].content) == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION.content}]}],
    }


async def test_unparseable_arguments_in_history_are_sent_wrapped() -> None:
    broken = ToolCall(id="call_x1", name="get_weather", arguments='{"city": "Par')
    _, messages = anthropic_messages(
        [
            QUESTION,
            AssistantMessage(tool_calls=(broken,)),
            ToolResultMessage(tool_call_id="call_x1", tool_name="get_weather", content="{}"),
        ]
    )
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "call_x1",
                "name": "get_weather",
                "input": {"_unparsed_arguments": '{"city": "Par'},
            }
        ],
    }


async def test_api_key_from_environment_and_custom_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    model = AnthropicModel("claude-3-5-haiku-latest", base_url="https://gw.example/", client=client)

    await model.complete(SIMPLE)

    [sent] = provider.requests
    assert str(sent.url) == "https://gw.example/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-env"


async def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:8080")
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))

    await AnthropicModel("claude-3-5-haiku-latest", client=client).complete(SIMPLE)

    assert [str(r.url) for r in provider.requests] == ["http://127.0.0.1:8080/v1/messages"]


async def test_rate_limit_with_retry_after_seconds() -> None:
    provider = Provider(
        429,
        fixture("error_429.json"),
        headers={"retry-after": "23", "request-id": "req_011CSHpR4w2v8XkLmN3qZtYa"},
    )

    with pytest.raises(ModelRateLimitedError) as caught:
        await model_over(provider).complete(SIMPLE)

    error = caught.value
    assert error.retry_after == 23.0
    assert error.status_code == 429
    assert "rate_limit_error: This request would exceed the rate limit" in str(error)
    assert "req_011CSHpR4w2v8XkLmN3qZtYa" in str(error)


async def test_rate_limit_with_retry_after_date() -> None:
    provider = Provider(
        429,
        fixture("error_429.json"),
        headers={
            "date": "Tue, 03 Mar 2026 10:15:30 GMT",
            "retry-after": "Tue, 03 Mar 2026 10:16:00 GMT",
        },
    )

    with pytest.raises(ModelRateLimitedError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(("status", "name"), [(500, "error_500.json"), (529, "error_529.json")])
async def test_server_errors(status: int, name: str) -> None:
    provider = Provider(status, fixture(name))

    with pytest.raises(ModelServerError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.status_code == status
    assert caught.value.retryable
    assert fixture(name)["error"]["message"] in str(caught.value)


async def test_overloaded_message() -> None:
    provider = Provider(529, fixture("error_529.json"))

    with pytest.raises(ModelServerError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert str(caught.value) == (
        "claude-sonnet-4-20250514 at https://api.anthropic.com/v1/messages: "
        "HTTP 529: overloaded_error: Overloaded"
    )


async def test_bad_request_carries_the_provider_message() -> None:
    provider = Provider(400, fixture("error_400.json"))

    with pytest.raises(ModelRequestError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.status_code == 400
    assert not caught.value.retryable
    assert "invalid_request_error: messages.2.content.0: unexpected `tool_use_id` found" in str(
        caught.value
    )


async def test_timeout_and_connection_error() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    async def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)

    with pytest.raises(ModelTimeoutError):
        await model_over(slow).complete(SIMPLE)
    with pytest.raises(ModelConnectionError, match="Connection reset by peer"):
        await model_over(reset).complete(SIMPLE)


async def test_cancellation_is_not_turned_into_an_error() -> None:
    started = anyio.Event()

    async def never_answer(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.Event().wait()
        raise AssertionError("unreachable")

    model = model_over(never_answer)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(model.complete, SIMPLE)
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<html><body>Bad Gateway</body></html>", "body is not JSON"),
        (
            b'{"id": "msg_01", "type": "message", "model": "claude-sonnet-4-20250514",'
            b' "usage": {"input_tokens": 1, "output_tokens": 1}}',
            "content: Field required",
        ),
        (
            b'{"type": "message", "model": "m", "content": [{"type": "text", "text": "hi"}]}',
            "usage: Field required",
        ),
        (
            b'{"type": "message", "model": "m", "usage": {"input_tokens": 1, "output_tokens": 1},'
            b' "content": [{"type": "thinking", "thinking": "hmm", "signature": "EqQB"}]}',
            "content.0: Input tag 'thinking' found using 'type' does not match",
        ),
        (
            b'{"type": "message", "model": "m", "usage": {"input_tokens": 1, "output_tokens": 1},'
            b' "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": "{}"}]}',
            "content.0.tool_use.input",
        ),
        (
            b'{"type": "error",'
            b' "error": {"type": "api_error", "message": "Internal server error"}}',
            "provider said api_error: Internal server error",
        ),
    ],
)
async def test_malformed_reply(body: bytes, complaint: str) -> None:
    provider = Provider(200, body)

    with pytest.raises(ModelResponseError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert complaint in str(caught.value)


async def test_borrowed_client_stays_open_and_own_client_closes() -> None:
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    async with AnthropicModel("claude-sonnet-4-20250514", api_key="k", client=client) as model:
        await model.complete(SIMPLE)
    assert not client.is_closed
    await client.aclose()

    own = AnthropicModel("claude-sonnet-4-20250514", api_key="k")
    await own.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await own.complete(SIMPLE)


async def test_tool_schema_and_protocol() -> None:
    assert anthropic_tool_schema(WEATHER) == {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "input_schema": WEATHER.parameters,
    }
    async with AnthropicModel("claude-sonnet-4-20250514", api_key="k") as concrete:
        model: Model = concrete
        assert model.name == "claude-sonnet-4-20250514"


# Property: whatever the conversation, the API's pairing rules hold after conversion.


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    texts = st.text(min_size=0, max_size=5)
    messages: list[Message] = [UserMessage(content=draw(st.text(min_size=1, max_size=5)))]
    for turn in range(draw(st.integers(0, 4))):
        calls = tuple(
            ToolCall(id=f"toolu_{turn}_{i}", name="f", arguments=json.dumps({"i": i}))
            for i in range(draw(st.integers(0, 3)))
        )
        messages.append(AssistantMessage(content=draw(texts), tool_calls=calls))
        if draw(st.booleans()):  # a note slipped in before the results: still results first
            messages.append(UserMessage(content=draw(texts)))
        results = [
            ToolResultMessage(tool_call_id=call.id, tool_name="f", content='{"ok":true}')
            for call in draw(st.permutations(calls))
        ]
        messages.extend(results)
        if draw(st.booleans()):
            messages.append(SystemMessage(content=draw(texts)))
        if draw(st.booleans()) or not calls:
            messages.append(UserMessage(content=draw(texts)))
    return messages


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_conversion_keeps_roles_alternating_and_results_after_their_calls(
    conversation: list[Message],
) -> None:
    _, turns = anthropic_messages(conversation)

    assert turns[0]["role"] == "user"
    for before, after in pairwise(turns):
        assert before["role"] != after["role"]
    for index, turn in enumerate(turns):
        assert turn["content"], "no empty messages"
        assert all(block.get("text", "x") for block in turn["content"]), "no empty text blocks"
        used = [block["id"] for block in turn["content"] if block["type"] == "tool_use"]
        if used:
            answer = [block["type"] for block in turns[index + 1]["content"]]
            answered = [
                block["tool_use_id"]
                for block in turns[index + 1]["content"]
                if block["type"] == "tool_result"
            ]
            assert sorted(answered) == sorted(used)
            assert answer[: len(used)] == ["tool_result"] * len(used), "tool results first"
