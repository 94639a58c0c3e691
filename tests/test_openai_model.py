"""The OpenAI chat completions client, over ``httpx.MockTransport`` and recorded API bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentledger.engine._errors import (
    ModelConnectionError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    ModelTimeoutError,
)
from agentledger.engine.models._model import Model, ModelReply, ModelRequest, ToolSpec
from agentledger.engine.models._openai import OpenAIChatModel, openai_tool_schema
from agentledger.events import ToolCall, Usage
from agentledger.projections._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
URL = "https://api.openai.com/v1/chat/completions"

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
    id="call_9pTqXk2LmV0aB7cN4dE1fG6h",
    name="get_weather",
    arguments='{"city":"Paris","unit":"celsius"}',
)
TOKYO = ToolCall(
    id="call_Jr5sW8yZ3uQ1oP6iK2lM9nB0",
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


def model_over(handler: Handler, **kwargs: Any) -> OpenAIChatModel:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIChatModel("gpt-4o-mini", api_key="sk-test", client=client, **kwargs)


async def test_parallel_tool_calls_request_and_reply() -> None:
    provider = Provider(
        200,
        fixture("tool_calls.response.json"),
        headers={"x-request-id": "req_7f3a9c1e5b2d4f60"},
    )
    model = model_over(provider, extra_headers={"OpenAI-Organization": "org-3nRzQbW1kXy8"})
    request = ModelRequest(
        messages=[SYSTEM, QUESTION], tools=[WEATHER, LOCAL_TIME], max_tokens=512, temperature=0.2
    )

    reply = await model.complete(request)

    [sent] = provider.requests
    assert sent.method == "POST"
    assert str(sent.url) == URL
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-3nRzQbW1kXy8"
    assert json.loads(sent.content) == fixture("tool_calls.request.json")
    assert reply == ModelReply(
        text="",
        tool_calls=(PARIS, TOKYO),
        usage=Usage(input_tokens=143, output_tokens=52, cached_input_tokens=0),
        finish_reason="tool_calls",
        model="gpt-4o-mini-2024-07-18",
    )


async def test_tool_results_are_sent_paired_with_their_calls() -> None:
    provider = Provider(200, fixture("after_tools.response.json"))
    model = model_over(provider, extra_body={"seed": 7})
    conversation: list[Message] = [
        SYSTEM,
        QUESTION,
        AssistantMessage(tool_calls=(PARIS, TOKYO)),
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
        AssistantMessage(content="Paris: 18 °C, light rain. Tokyo: 24 °C, clear."),
        UserMessage(content="Thanks. Which one is better for a walk?"),
    ]

    reply = await model.complete(ModelRequest(messages=conversation, max_tokens=256))

    [sent] = provider.requests
    assert json.loads(sent.content) == fixture("after_tools.request.json")
    assert reply == ModelReply(
        text="Tokyo: it is clear and 24 °C, while Paris has light rain.",
        usage=Usage(input_tokens=2213, output_tokens=19, cached_input_tokens=1920),
        finish_reason="stop",
        model="gpt-4o-mini-2024-07-18",
    )


async def test_compatible_server_without_key_gets_no_auth_and_old_limit_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    body = fixture("after_tools.response.json")
    del body["usage"], body["system_fingerprint"], body["service_tier"]
    body["model"] = "llama-3.1-8b-instruct"
    provider = Provider(200, body)
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    model = OpenAIChatModel(
        "llama-3.1-8b-instruct",
        base_url="http://127.0.0.1:8000/v1/",
        client=client,
        max_tokens_field="max_tokens",
    )

    reply = await model.complete(SIMPLE)

    [sent] = provider.requests
    assert str(sent.url) == "http://127.0.0.1:8000/v1/chat/completions"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content) == {
        "model": "llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": QUESTION.content}],
        "max_tokens": 1024,
    }
    assert reply.usage == Usage()
    assert reply.model == "llama-3.1-8b-instruct"


async def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))

    await OpenAIChatModel("gpt-4o-mini", client=client).complete(SIMPLE)

    assert provider.requests[0].headers["authorization"] == "Bearer sk-from-env"


async def test_base_url_from_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/")
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))

    await OpenAIChatModel("gpt-4o-mini", client=client).complete(SIMPLE)
    given = "https://gw.example/v1"
    await OpenAIChatModel("gpt-4o-mini", base_url=given, client=client).complete(SIMPLE)

    sent = [str(request.url) for request in provider.requests]
    assert sent == [
        "http://127.0.0.1:8080/v1/chat/completions",
        "https://gw.example/v1/chat/completions",
    ]


async def test_a_base_url_with_a_query_keeps_it_after_the_path() -> None:
    # Azure OpenAI's deployments take ?api-version=...; the path goes before the query.
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    base = "https://res.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21"
    model = OpenAIChatModel("gpt-4o", base_url=base, client=client)
    await model.complete(SIMPLE)
    (request,) = provider.requests
    assert str(request.url) == (
        "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"
        "?api-version=2024-10-21"
    )
    assert model.url == "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"


async def test_timeout_is_applied_to_each_request_over_a_borrowed_client() -> None:
    provider = Provider(200, fixture("after_tools.response.json"))
    model = model_over(provider, timeout=12.5)

    await model.complete(SIMPLE)

    assert provider.requests[0].extensions["timeout"] == {
        "connect": 12.5,
        "read": 12.5,
        "write": 12.5,
        "pool": 12.5,
    }


async def test_rate_limit_with_retry_after_seconds() -> None:
    provider = Provider(
        429,
        fixture("error_429.json"),
        headers={"retry-after": "20", "x-request-id": "req_b41c0e7d2a9f8e13"},
    )

    with pytest.raises(ModelRateLimitedError) as caught:
        await model_over(provider).complete(SIMPLE)

    error = caught.value
    assert error.retry_after == 20.0
    assert error.status_code == 429
    assert error.retryable
    assert "tokens: Rate limit reached for gpt-4o-mini" in str(error)
    assert "req_b41c0e7d2a9f8e13" in str(error)


async def test_rate_limit_prefers_retry_after_ms() -> None:
    provider = Provider(
        429, fixture("error_429.json"), headers={"retry-after-ms": "248", "retry-after": "1"}
    )

    with pytest.raises(ModelRateLimitedError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.retry_after == pytest.approx(0.248)


async def test_rate_limit_with_retry_after_date_is_relative_to_the_response_date() -> None:
    provider = Provider(
        429,
        fixture("error_429.json"),
        headers={
            "date": "Wed, 21 Oct 2026 07:28:00 GMT",
            "retry-after": "Wed, 21 Oct 2026 07:28:45 GMT",
        },
    )

    with pytest.raises(ModelRateLimitedError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.retry_after == 45.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "Wed, 21 Oct 2026 07:28:45 GMT"}, None),  # no Date: no local clock
        (
            {
                "date": "Wed, 21 Oct 2026 07:29:00 GMT",
                "retry-after": "Wed, 21 Oct 2026 07:28:45 GMT",
            },
            0.0,
        ),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "1.5"}, 1.5),
        ({}, None),
    ],
)
async def test_rate_limit_retry_after_edge_cases(
    headers: dict[str, str], expected: float | None
) -> None:
    provider = Provider(429, fixture("error_429.json"), headers=headers)

    with pytest.raises(ModelRateLimitedError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.retry_after == expected


async def test_server_error() -> None:
    provider = Provider(500, fixture("error_500.json"))

    with pytest.raises(ModelServerError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert caught.value.status_code == 500
    assert caught.value.retryable
    assert "server_error: The server had an error" in str(caught.value)


async def test_bad_request_carries_the_provider_message_and_is_not_retryable() -> None:
    provider = Provider(400, fixture("error_400.json"))

    with pytest.raises(ModelRequestError) as caught:
        await model_over(provider).complete(SIMPLE)

    error = caught.value
    assert error.status_code == 400
    assert not error.retryable
    assert str(error) == (
        "gpt-4o-mini at https://api.openai.com/v1/chat/completions: HTTP 400: "
        "invalid_request_error: Invalid parameter: messages with role "
        "'tool' must be a response to a preceeding message with 'tool_calls'."
    )


async def test_error_body_that_is_not_json_is_quoted() -> None:
    provider = Provider(
        502, b"<html><head><title>502 Bad Gateway</title></head></html>", headers={}
    )

    with pytest.raises(ModelServerError, match="502 Bad Gateway"):
        await model_over(provider).complete(SIMPLE)


async def test_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ModelTimeoutError) as caught:
        await model_over(hang, timeout=3).complete(SIMPLE)

    assert "no answer within 3s" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_connection_error() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ModelConnectionError, match="Connection refused") as caught:
        await model_over(refuse).complete(SIMPLE)

    assert caught.value.retryable


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
        (b"<html><body>upstream connect error</body></html>", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"[]", "Input should be an object"),
        (b'{"id": "chatcmpl-1", "object": "chat.completion"}', "choices: Field required"),
        (b'{"object": "chat.completion", "choices": []}', "choices: List should have at least 1"),
        (b'{"choices": [{"index": 0, "finish_reason": "stop"}]}', "choices.0.message"),
        (
            b'{"choices": [{"message": {"role": "assistant", "content": 42}}]}',
            "choices.0.message.content",
        ),
        (
            b'{"choices": [{"message": {"tool_calls": [{"id": "call_1", "type": "function",'
            b' "function": {"name": "f", "arguments": {"city": "Paris"}}}]}}]}',
            "choices.0.message.tool_calls.0.function.arguments: Input should be a valid string",
        ),
        (
            b'{"choices": [{"message": {"tool_calls": [{"id": "call_1", "type": "custom",'
            b' "function": {"name": "f", "arguments": "{}"}}]}}]}',
            "tool_calls.0.type",
        ),
        (
            b'{"choices": [{"message": {"content": "hi"}}],'
            b' "usage": {"prompt_tokens": -1, "completion_tokens": 2}}',
            "usage.prompt_tokens",
        ),
        (
            b'{"error": {"message": "upstream model crashed", "type": "server_error"}}',
            "provider said server_error: upstream model crashed",
        ),
    ],
)
async def test_malformed_reply(body: bytes, complaint: str) -> None:
    provider = Provider(200, body, headers={"content-type": "application/json"})

    with pytest.raises(ModelResponseError) as caught:
        await model_over(provider).complete(SIMPLE)

    assert complaint in str(caught.value)
    assert caught.value.status_code == 200


async def test_borrowed_client_stays_open() -> None:
    provider = Provider(200, fixture("after_tools.response.json"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(provider))

    async with OpenAIChatModel("gpt-4o-mini", api_key="sk-test", client=client) as model:
        await model.complete(SIMPLE)

    assert not client.is_closed
    await OpenAIChatModel("gpt-4o-mini", api_key="sk-test", client=client).complete(SIMPLE)
    assert len(provider.requests) == 2
    await client.aclose()


async def test_own_client_is_closed_on_exit() -> None:
    async with OpenAIChatModel("gpt-4o-mini", api_key="sk-test") as model:
        pass

    # A closed httpx client refuses before touching the network.
    with pytest.raises(RuntimeError, match="client has been closed"):
        await model.complete(SIMPLE)


async def test_tool_schema_and_protocol() -> None:
    assert openai_tool_schema(LOCAL_TIME) == {
        "type": "function",
        "function": {
            "name": "get_local_time",
            "description": "Current local time in an IANA time zone.",
            "parameters": LOCAL_TIME.parameters,
        },
    }
    async with OpenAIChatModel("gpt-4o-mini", api_key="sk-test") as concrete:
        model: Model = concrete
        assert model.name == "gpt-4o-mini"
