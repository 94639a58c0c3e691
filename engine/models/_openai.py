"""An OpenAI-compatible chat completions client (``POST {base_url}/chat/completions``) with tools.

Servers that speak the format differ in small ways (what an assistant's tool turn carries as
content, which output-limit field they honour, what they do with ``tool_choice`` and structured
output): the client builds each body through a ``WireProfile`` (``_wire.py``), chosen with
``server=``.

Usage convention (shared with the Anthropic client): ``Usage.input_tokens`` counts every prompt
token, cached ones included, and ``cached_input_tokens`` is the cached subset. That is OpenAI's own
convention (``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, assert_never

import httpx
from pydantic import Field

from agentledger.events import ToolCall
from agentledger.projections._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)

from ._http import HttpModel, StrictWire, endpoint
from ._model import (
    DeltaSink,
    ModelReply,
    ModelRequest,
    Sampling,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)
from ._openai_stream import OpenAIUsage, read_openai_stream
from ._sse import input_estimate, server_sent_events
from ._wire import ServerName, WireProfile, wire_profile

OPENAI_BASE_URL = "https://api.openai.com/v1"


def openai_tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """A tool in the chat completions format: ``{"type": "function", "function": {...}}``."""
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def openai_messages(
    messages: Sequence[Message], *, tool_turn_content: Literal["null", "empty"] = "null"
) -> list[dict[str, Any]]:
    """The conversation as chat completions messages; tool results keep their ``tool_call_id``.

    ``tool_turn_content``: what an assistant turn of only tool calls carries as ``content``:
    ``null`` (what OpenAI itself returns and accepts) or ``""`` (for servers that answer
    ``null`` with an error, see ``WireProfile``).
    """
    empty = None if tool_turn_content == "null" else ""
    return [_openai_message(message, empty) for message in messages]


def _openai_message(message: Message, empty: str | None) -> dict[str, Any]:
    match message:
        case SystemMessage() | UserMessage():
            return {"role": message.role, "content": message.content}
        case AssistantMessage():
            if not message.tool_calls:
                return {"role": "assistant", "content": message.content}
            return {
                "role": "assistant",
                "content": message.content or empty,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in message.tool_calls
                ],
            }
        case ToolResultMessage():
            return {
                "role": "tool",
                "tool_call_id": message.tool_call_id,
                "content": message.content,
            }
        case _:
            assert_never(message)


def openai_sampling(sampling: Sampling, temperature: float | None = None) -> dict[str, Any]:
    """The sampling fields of a body; ``temperature`` is the request's own (the judge's), used
    when ``sampling`` sets none. Unset settings are left out: the server's default holds."""
    fields: dict[str, Any] = {}
    chosen = sampling.temperature if sampling.temperature is not None else temperature
    if chosen is not None:
        fields["temperature"] = chosen
    if sampling.top_p is not None:
        fields["top_p"] = sampling.top_p
    if sampling.stop:
        fields["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    return fields


class OpenAIChatModel(HttpModel):
    """A chat model behind the OpenAI chat completions API, or any server that speaks it.

    ``server`` names the server family, whose ``WireProfile`` shapes every request body:
    ``"openai"`` (default), ``"vllm"``, ``"llama.cpp"`` (llama-cpp-python's server) or
    ``"ollama"``, or a ``WireProfile`` of your own. ``api_key`` defaults to
    ``$OPENAI_API_KEY``; with neither, no ``Authorization`` header is sent (local servers).
    ``base_url`` defaults to ``$OPENAI_BASE_URL`` (as in OpenAI's own SDK, with the ``/v1``),
    else OpenAI's API. ``extra_body`` is merged last into every request body
    (``reasoning_effort``...). ``max_tokens_field`` overrides the profile's output-limit field.

    ``timeout``: seconds a whole request may take when the client is used on its own; inside an
    engine, ``Agent.model_timeout`` bounds each attempt and ``timeout`` only bounds connecting.
    It applies also over a borrowed ``client``, which is never closed by this object.

    A reply without ``usage`` (some compatible servers omit it) is recorded with zero tokens.
    """

    def __init__(
        self,
        model: str,
        *,
        server: ServerName | WireProfile = "openai",
        api_key: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        extra_body: Mapping[str, Any] | None = None,
        max_tokens_field: Literal["max_completion_tokens", "max_tokens"] | None = None,
    ) -> None:
        profile = wire_profile(server)
        super().__init__(model, client=client, timeout=timeout)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        self._url = endpoint(base_url, "/chat/completions")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = ({"authorization": f"Bearer {key}"} if key else {}) | dict(
            extra_headers or {}
        )
        self._extra_body = dict(extra_body or {})
        self._profile = profile
        self._max_tokens_field = max_tokens_field or profile.max_tokens_field

    @property
    def profile(self) -> WireProfile:
        """The server profile request bodies are built with."""
        return self._profile

    def check_settings(
        self, tool_choice: ToolChoice, sampling: Sampling, tool_names: tuple[str, ...]
    ) -> None:
        """Raise ``AgentConfigError`` for a setting this client's server cannot honour."""
        self._profile.check_settings(tool_choice, sampling, tool_names)

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body ``complete`` sends for ``request`` (streaming adds its own fields)."""
        profile = self._profile
        body: dict[str, Any] = {
            "model": self._model,
            "messages": openai_messages(
                request.messages, tool_turn_content=profile.tool_turn_content
            ),
            self._max_tokens_field: request.max_tokens,
        }
        body |= openai_sampling(request.sampling, request.temperature)
        body |= profile.tool_fields(
            request.tool_choice, [openai_tool_schema(spec) for spec in request.tools]
        )
        if request.output is not None:
            body["response_format"] = profile.output_field(request.output)
        return body | self._extra_body

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Send one chat completion request and parse the first choice."""
        response = await self._post_json(self._url, self._headers, self.request_body(request))
        reply = self._parse(_Completion, response)
        choice = reply.choices[0]
        return ModelReply(
            text=choice.message.content or "",
            tool_calls=tuple(
                ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in choice.message.tool_calls or ()
            ),
            usage=(reply.usage or OpenAIUsage()).as_usage(),
            finish_reason=choice.finish_reason,
            model=reply.model or self._model,
        )

    async def stream(self, request: ModelRequest, on_delta: DeltaSink) -> ModelReply:
        """Send the request with ``"stream": true`` and read its server-sent events, handing
        each piece to ``on_delta``; the whole reply equals what ``complete`` gives.

        Asks for usage (``stream_options.include_usage``); a server that sends none is recorded
        with the pieces counted as output and ``input_estimate`` of the body as input. The
        output is cut at ``request.max_tokens`` even if the server ignores its limit (see
        ``docs/streaming.md``). A stream that breaks off raises a retryable ``ModelError``.

        A request that lets the model choose a tool, to a server that cannot stream it
        (``WireProfile.streams_auto_tools``), is made whole with ``complete``; its reply is
        handed to ``on_delta`` at once.
        """
        body = self.request_body(request)
        if not self._profile.streams_auto_tools and _chooses_tools(body):
            reply = await self.complete(request)
            _hand_out(reply, on_delta)
            return reply
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        async with self._post_stream(self._url, self._headers, body) as response:
            return await read_openai_stream(
                server_sent_events(response.aiter_lines()),
                model=self._model,
                max_tokens=request.max_tokens,
                input_estimate=input_estimate(body),
                on_delta=on_delta,
            )


def _chooses_tools(body: Mapping[str, Any]) -> bool:
    """Whether ``body`` offers tools and leaves the choice to the model (``"auto"``)."""
    return bool(body.get("tools")) and body.get("tool_choice", "auto") == "auto"


def _hand_out(reply: ModelReply, on_delta: DeltaSink) -> None:
    """A whole reply as the deltas a stream of it would have given, in one piece each."""
    if reply.text:
        on_delta(TextDelta(reply.text))
    for index, call in enumerate(reply.tool_calls):
        on_delta(ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments))


# The reply shape, as far as we read it.


class _Function(StrictWire):
    name: str
    arguments: str


class _ToolCall(StrictWire):
    id: str
    type: Literal["function"] = "function"
    function: _Function


class _Message(StrictWire):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(StrictWire):
    message: _Message
    finish_reason: str | None = None


class _Completion(StrictWire):
    model: str | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: OpenAIUsage | None = None
