"""Every exception httpx can raise reaches the engine as a ``ModelError`` subclass, for both
clients: raised by the transport, or by a request that cannot be formed at all."""

from __future__ import annotations

import inspect

import httpx
import pytest

from agentledger.engine import (
    AnthropicModel,
    ModelError,
    ModelRequestError,
    OpenAIChatModel,
)
from agentledger.engine.models._model import ModelRequest
from agentledger.projections import UserMessage

REQUEST = ModelRequest(messages=[UserMessage(content="Hi.")])


def _httpx_errors() -> list[Exception]:
    request = httpx.Request("POST", "https://models.test/v1")
    response = httpx.Response(500, request=request)
    errors: list[Exception] = []
    for _, cls in inspect.getmembers(httpx, inspect.isclass):
        if not issubclass(cls, Exception):
            continue
        params = inspect.signature(cls).parameters
        kwargs: dict[str, object] = {}
        if "request" in params:
            kwargs["request"] = request
        if "response" in params:
            kwargs["response"] = response
        message = ("boom",) if "message" in params else ()
        errors.append(cls(*message, **kwargs))
    return errors


ERRORS = _httpx_errors()


def _models(client: httpx.AsyncClient) -> list[OpenAIChatModel | AnthropicModel]:
    return [
        OpenAIChatModel("gpt-test", api_key="k", base_url="https://models.test/v1", client=client),
        AnthropicModel("claude-test", api_key="k", base_url="https://models.test", client=client),
    ]


def test_the_list_holds_every_kind_of_httpx_error() -> None:
    names = {type(error).__name__ for error in ERRORS}
    assert {"ConnectError", "ReadTimeout", "InvalidURL", "StreamConsumed", "DecodingError"} <= names
    assert len(ERRORS) >= 25


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
async def test_an_httpx_error_from_the_transport_is_a_model_error(error: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
        for model in _models(client):
            with pytest.raises(ModelError):
                await model.complete(REQUEST)


async def test_a_request_that_cannot_be_formed_is_a_request_error() -> None:
    answer = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    async with httpx.AsyncClient(transport=answer) as client:
        broken = [
            OpenAIChatModel("m", api_key="k", base_url="http://[::1/v1", client=client),
            OpenAIChatModel(
                "m", api_key="k", base_url="http://a.test/" + "x" * 70_000, client=client
            ),
            OpenAIChatModel("m", api_key="key\u2019", base_url="https://a.test/v1", client=client),
            AnthropicModel("m", api_key="key\u2019", base_url="https://a.test", client=client),
        ]
        for model in broken:
            with pytest.raises(ModelRequestError):
                await model.complete(REQUEST)
