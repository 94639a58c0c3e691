"""An Anthropic messages API client (``POST {base_url}/v1/messages``) with tool use.

The neutral conversation maps onto Anthropic's stricter shape: system messages go to the top-level
``system`` parameter, tool calls become ``tool_use`` blocks, and every run of consecutive tool
results becomes ONE user message of ``tool_result`` blocks, which is what the API requires after
an assistant turn with parallel tool calls.

Agent settings: ``tool_choice`` becomes ``{"type": "auto" | "any" | "none" | "tool", "name"}``;
sampling becomes ``temperature`` (Anthropic takes 0 to 1), ``top_p`` and ``stop_sequences``; the
API has no seed, so an agent with a seed and an Anthropic model is refused when it is built.
Structured output is tool-based: the schema is offered as a tool named after it, and a
``tool_use`` of that tool is the answer (its input, as JSON text), not a tool call.

Usage: ``input_tokens`` counts every prompt token, as OpenAI's ``prompt_tokens`` does, so it is
Anthropic's ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``;
``cached_input_tokens`` is ``cache_read_input_tokens``. Cache *writes* are thus counted as ordinary
input tokens (Anthropic bills them at a premium over the base input price, which ``Usage`` has no
field for).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, assert_never

import httpx
import orjson
from pydantic import Field

from agentledger.engine._errors import AgentConfigError, ModelRequestError, ModelResponseError
from agentledger.events import ToolCall, Usage
from agentledger.projections._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    UserMessage,
)

from ._anthropic_stream import read_anthropic_stream
from ._http import HttpModel, StrictWire, endpoint
from ._model import (
    DeltaSink,
    ModelReply,
    ModelRequest,
    OutputSchema,
    Sampling,
    ToolChoice,
    ToolSpec,
)
from ._sse import input_estimate, server_sent_events

OUTPUT_TOOL_DESCRIPTION = (
    "Give your final answer with this tool, its input following the schema; call it once, "
    "when you have everything the answer needs."
)
"""The description of the tool that carries a structured answer."""

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


def anthropic_tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """A tool in the messages API format: ``{"name", "description", "input_schema"}``."""
    return {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}


def anthropic_tool_choice(tool_choice: ToolChoice) -> dict[str, Any] | None:
    """``tool_choice`` in the messages API format; ``None`` for ``"auto"``, the API's default."""
    if tool_choice == "auto":
        return None
    if tool_choice == "required":
        return {"type": "any"}
    if tool_choice == "none":
        return {"type": "none"}
    return {"type": "tool", "name": tool_choice}


def anthropic_sampling(sampling: Sampling, temperature: float | None = None) -> dict[str, Any]:
    """The sampling fields of a body (``temperature`` is the request's own, used when
    ``sampling`` sets none). A seed has no field here: ``AnthropicModel`` refuses it."""
    fields: dict[str, Any] = {}
    chosen = sampling.temperature if sampling.temperature is not None else temperature
    if chosen is not None:
        fields["temperature"] = chosen
    if sampling.top_p is not None:
        fields["top_p"] = sampling.top_p
    if sampling.stop:
        fields["stop_sequences"] = list(sampling.stop)
    return fields


def anthropic_output_tool(output: OutputSchema) -> dict[str, Any]:
    """The tool that carries a structured answer: named after the schema, taking it as input."""
    return {
        "name": output.name,
        "description": OUTPUT_TOOL_DESCRIPTION,
        "input_schema": output.schema,
    }


def anthropic_messages(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """The conversation as ``(system, messages)`` for the messages API.

    Consecutive messages of one role are merged into one message (tool results after parallel
    calls, or a user note after them), with ``tool_result`` blocks first as the API demands. Empty
    text is dropped: the API rejects empty text blocks and messages without content.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return ("\n\n".join(system) if system else None), turns


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    match message:
        case UserMessage():
            return "user", _text_block(message.content)
        case AssistantMessage():
            return "assistant", _text_block(message.content) + [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
                for call in message.tool_calls
            ]
        case ToolResultMessage():
            return "user", [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                }
            ]
        case SystemMessage():
            raise AssertionError("system messages are collected, not turned into blocks")
        case _:
            assert_never(message)


def _text_block(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}] if text else []


def _input(call: ToolCall) -> dict[str, Any]:
    """The parsed arguments object of a tool call, as a ``tool_use`` block's ``input``.

    Arguments that are not a JSON object (a call another provider's model got wrong, rejected by
    the engine) cannot be sent as ``input``; they travel wrapped so the model still sees them
    next to the rejection it was told about.
    """
    try:
        parsed = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {"_unparsed_arguments": call.arguments}


class AnthropicModel(HttpModel):
    """A Claude model behind the Anthropic messages API.

    ``api_key`` defaults to ``$ANTHROPIC_API_KEY``; with neither, no ``x-api-key`` header is sent.
    ``base_url`` defaults to ``$ANTHROPIC_BASE_URL`` (as in Anthropic's own SDK, without the
    ``/v1``), else Anthropic's API.
    ``timeout`` applies to every request, also over a borrowed ``client``, which is never closed
    by this object. ``extra_headers`` are sent last (e.g. ``anthropic-beta``).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        anthropic_version: str = ANTHROPIC_VERSION,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(model, client=client, timeout=timeout)
        base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL
        self._url = endpoint(base_url, "/v1/messages")
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        self._headers = (
            ({"x-api-key": key} if key else {})
            | {"anthropic-version": anthropic_version}
            | dict(extra_headers or {})
        )

    def check_settings(
        self, tool_choice: ToolChoice, sampling: Sampling, tool_names: tuple[str, ...]
    ) -> None:
        """Raise ``AgentConfigError`` for a setting the messages API cannot honour: a seed (it
        has none) or a temperature above 1 (its range is 0 to 1)."""
        if sampling.seed is not None:
            raise AgentConfigError(
                f"Anthropic's messages API has no seed (model {self._model!r}): "
                "drop Sampling.seed or use another model"
            )
        if sampling.temperature is not None and sampling.temperature > 1:
            raise AgentConfigError(
                f"Anthropic takes a temperature from 0 to 1, not {sampling.temperature} "
                f"(model {self._model!r})"
            )

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body ``complete`` sends for ``request`` (streaming adds its own fields)."""
        if request.sampling.seed is not None:
            raise ModelRequestError(
                self._model, "Anthropic's messages API has no seed", url=self.url
            )
        system, messages = anthropic_messages(request.messages)
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        }
        if system is not None:
            body["system"] = system
        body |= anthropic_sampling(request.sampling, request.temperature)
        tools = [anthropic_tool_schema(spec) for spec in request.tools]
        choice = anthropic_tool_choice(request.tool_choice)
        output = request.output
        if output is not None:
            if any(spec.name == output.name for spec in request.tools):
                raise ModelRequestError(
                    self._model,
                    f"the output schema's name {output.name!r} is also a tool's name",
                    url=self.url,
                )
            tools.append(anthropic_output_tool(output))
            if not request.tools and choice is None:
                # Nothing else to call: the answer must come through the output tool.
                choice = {"type": "tool", "name": output.name}
        if tools:
            body["tools"] = tools
            if choice is not None:
                body["tool_choice"] = choice
        return body

    def _arguments(self, block: _ToolUse) -> str:
        """A ``tool_use`` input as the JSON text a tool call carries."""
        try:
            return orjson.dumps(block.input).decode()
        except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits, say
            raise ModelResponseError(
                self._model,
                f"malformed reply: tool_use {block.id[:80]!r} has an input JSON "
                f"cannot carry ({exc})",
                url=self.url,
            ) from None

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Send one messages request and parse its content blocks."""
        response = await self._post_json(self._url, self._headers, self.request_body(request))
        return self._reply(self._parse(_Message, response), request.output)

    def _reply(self, reply: _Message, output: OutputSchema | None) -> ModelReply:
        """The neutral reply of a parsed messages API answer. A ``tool_use`` of the output
        tool (``output.name``) is the structured answer: its input, as JSON, becomes the text."""
        usage = reply.usage
        cache_writes = usage.cache_creation_input_tokens or 0
        cache_reads = usage.cache_read_input_tokens or 0
        answer = output.name if output is not None else None
        answers = [
            self._arguments(block)
            for block in reply.content
            if isinstance(block, _ToolUse) and block.name == answer
        ]
        return ModelReply(
            # Anthropic splits one answer into several text blocks (e.g. around citations);
            # they are meant to be read as one string. A structured answer replaces the text
            # (often a preamble such as "Here is the result:").
            text=answers[-1]
            if answers
            else "".join(block.text for block in reply.content if isinstance(block, _Text)),
            tool_calls=tuple(
                ToolCall(id=block.id, name=block.name, arguments=self._arguments(block))
                for block in reply.content
                if isinstance(block, _ToolUse) and block.name != answer
            ),
            usage=Usage(
                input_tokens=usage.input_tokens + cache_writes + cache_reads,
                output_tokens=usage.output_tokens,
                cached_input_tokens=cache_reads,
            ),
            finish_reason=reply.stop_reason,
            model=reply.model,
        )

    async def stream(self, request: ModelRequest, on_delta: DeltaSink) -> ModelReply:
        """Send the request with ``"stream": true`` and read its server-sent events, handing
        each piece to ``on_delta``; the whole reply equals what ``complete`` gives.

        The output is cut at ``request.max_tokens`` even if the server ignores its limit (see
        ``docs/streaming.md``). A stream that breaks off (or an ``error`` event) raises a
        retryable ``ModelError``.
        """
        body = self.request_body(request) | {"stream": True}
        async with self._post_stream(self._url, self._headers, body) as response:
            return await read_anthropic_stream(
                server_sent_events(response.aiter_lines()),
                model=self._model,
                max_tokens=request.max_tokens,
                input_estimate=input_estimate(body),
                on_delta=on_delta,
                answer_tool=request.output.name if request.output is not None else None,
            )


# The reply shape, as far as we read it. Only the block types this client can ask for are known;
# any other (thinking, server tools) is a reply we could not faithfully pass back, so it fails.


class _Text(StrictWire):
    type: Literal["text"]
    text: str


class _ToolUse(StrictWire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class _Usage(StrictWire):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cache_creation_input_tokens: int | None = Field(default=None, ge=0)
    cache_read_input_tokens: int | None = Field(default=None, ge=0)


class _Message(StrictWire):
    type: Literal["message"]
    model: str
    content: list[Annotated[_Text | _ToolUse, Field(discriminator="type")]]
    stop_reason: str | None = None
    usage: _Usage
