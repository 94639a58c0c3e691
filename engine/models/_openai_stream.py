"""Reading an OpenAI chat completions stream (``chat.completion.chunk`` events) into a reply.

Each ``data:`` event is a chunk; ``data: [DONE]`` ends the stream. Text comes as
``delta.content``, tool calls as ``delta.tool_calls`` pieces keyed by ``index`` (OpenAI sends a
call's ``id`` and ``name`` with its first piece only; llama.cpp's server repeats them in every
piece, so a known id or name is never appended to). The legacy ``delta.function_call`` that some
servers send beside ``tool_calls`` is ignored: the client never offers ``functions``. With
``stream_options.include_usage`` the last chunk before ``[DONE]`` carries ``usage`` and no
choices; servers that do not send it (llama.cpp's) get the estimate described in
``docs/streaming.md``.

The output stops at ``max_tokens`` (``OutputMeter``): the reply is then what arrived, with
``finish_reason="length"`` and ``max_tokens`` output tokens, and the rest is never read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

import orjson
from pydantic import Field, ValidationError

from agentledger.engine._errors import ModelConnectionError, ModelResponseError, ModelServerError
from agentledger.events import ToolCall, Usage

from ._http import StrictWire
from ._model import DeltaSink, ModelDelta, ModelReply, TextDelta, ToolCallDelta
from ._sse import OutputMeter, ServerSentEvent

AFTER_FULL_EVENTS = 16
"""Events still read once the output count reached ``max_tokens`` (the finish reason and the
usage of a server that keeps to the limit); a server that goes on past them is cut off."""


@dataclass(slots=True)
class _Call:
    id: str | None
    name: str | None
    arguments: str = ""


class _Assembly:
    """The reply so far: text, tool calls in order of their first piece, finish, usage."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.positions: dict[int, int] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def take(self, item: str | _ToolCallPiece) -> ModelDelta:
        """Take one piece of text or of a tool call into the reply, as the delta it makes."""
        if isinstance(item, str):
            self.text.append(item)
            return TextDelta(item)
        return self._tool_piece(item)

    def _tool_piece(self, piece: _ToolCallPiece) -> ToolCallDelta:
        """The delta names a call's id and name the first time each is known."""
        function = piece.function or _NO_FUNCTION
        call = self.calls.get(piece.index)
        if call is None:
            self.positions[piece.index] = len(self.calls)
            call = self.calls[piece.index] = _Call(id=None, name=None)
        new_id = piece.id if call.id is None and piece.id else None
        new_name = function.name if call.name is None and function.name else None
        call.id = call.id or new_id
        call.name = call.name or new_name
        call.arguments += function.arguments or ""
        return ToolCallDelta(
            index=self.positions[piece.index],
            id=new_id,
            name=new_name,
            arguments=function.arguments or "",
        )

    def reply(self, usage: Usage, finish_reason: str | None) -> ModelReply:
        tool_calls = []
        for call in self.calls.values():
            if not call.name:
                raise ModelResponseError(
                    self.model, "malformed stream: a tool call came without a name"
                )
            tool_calls.append(ToolCall(id=call.id or "", name=call.name, arguments=call.arguments))
        return ModelReply(
            text="".join(self.text),
            tool_calls=tuple(tool_calls),
            usage=usage,
            finish_reason=finish_reason,
            model=self.model,
        )


async def read_openai_stream(
    events: AsyncGenerator[ServerSentEvent, None],
    *,
    model: str,
    max_tokens: int,
    input_estimate: int,
    on_delta: DeltaSink,
) -> ModelReply:
    """The reply ``events`` carry, handing each piece to ``on_delta`` as it arrives.

    ``input_estimate`` is recorded as the input tokens when the server sends no usage.
    Raises ``ModelConnectionError`` for a stream that ends before ``[DONE]``,
    ``ModelServerError`` for an error object in the stream, ``ModelResponseError`` for a chunk
    that is not one.
    """
    meter = OutputMeter(max_tokens)
    reply = _Assembly(model)
    after_full = 0
    async with aclosing(events):
        async for event in events:
            if event.data.strip() == "[DONE]":
                usage = reply.usage or Usage(
                    input_tokens=input_estimate, output_tokens=meter.recorded_tokens()
                )
                return reply.reply(usage, reply.finish_reason)
            chunk = _chunk(model, event.data)
            if chunk.model and reply.model == model:
                reply.model = chunk.model
            for item in _pieces(chunk):
                text = item if isinstance(item, str) else (item.function or _NO_FUNCTION).arguments
                if text:
                    if meter.full:
                        return _cut(reply, meter, input_estimate)
                    meter.add(text)
                on_delta(reply.take(item))
            reply.finish_reason = _finish_reason(chunk) or reply.finish_reason
            if chunk.usage is not None:
                reply.usage = chunk.usage.as_usage()
            if meter.full:
                after_full += 1
                if after_full > AFTER_FULL_EVENTS:
                    return _cut(reply, meter, input_estimate)
    raise ModelConnectionError(model, "the stream broke off: it ended before [DONE]")


def _cut(reply: _Assembly, meter: OutputMeter, input_estimate: int) -> ModelReply:
    """The reply as far as it was read, at the output limit."""
    input_tokens = reply.usage.input_tokens if reply.usage is not None else input_estimate
    cached = reply.usage.cached_input_tokens if reply.usage is not None else 0
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=meter.max_tokens,
        cached_input_tokens=cached,
    )
    return reply.reply(usage, "length")


def _pieces(chunk: _Chunk) -> list[str | _ToolCallPiece]:
    """The pieces of ``chunk``'s first choice, in order: its text, then its tool-call pieces."""
    pieces: list[str | _ToolCallPiece] = []
    for choice in chunk.choices:
        if choice.index == 0:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            pieces.extend(choice.delta.tool_calls or ())
    return pieces


def _finish_reason(chunk: _Chunk) -> str | None:
    return next((c.finish_reason for c in chunk.choices if c.index == 0), None)


def _chunk(model: str, data: str) -> _Chunk:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ModelResponseError(
            model, f"malformed stream: an event is not JSON: {data[:200]!r}"
        ) from None
    if isinstance(parsed, dict) and parsed.get("error") is not None:
        error = parsed["error"]
        text = error.get("message") if isinstance(error, dict) else error
        raise ModelServerError(model, f"the stream broke off with an error: {str(text)[:300]}")
    try:
        return _Chunk.model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "chunk"
        raise ModelResponseError(model, f"malformed stream: {where}: {first['msg']}") from None


# The chunk shape, as far as we read it.


class _FunctionPiece(StrictWire):
    name: str | None = None
    arguments: str | None = None


_NO_FUNCTION = _FunctionPiece()


class _ToolCallPiece(StrictWire):
    index: int = Field(default=0, ge=0)
    id: str | None = None
    function: _FunctionPiece | None = None


class _Delta(StrictWire):
    content: str | None = None
    tool_calls: list[_ToolCallPiece] | None = None


class _ChunkChoice(StrictWire):
    index: int = 0
    delta: _Delta = Field(default_factory=_Delta)
    finish_reason: str | None = None


class _PromptDetails(StrictWire):
    cached_tokens: int | None = Field(default=None, ge=0)


class OpenAIUsage(StrictWire):
    """The ``usage`` object of a chat completion, or of a stream's last chunk (the same shape)."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    prompt_tokens_details: _PromptDetails | None = None

    def as_usage(self) -> Usage:
        """Our usage: ``prompt_tokens`` counts cached tokens too, as ``Usage.input_tokens`` does."""
        details = self.prompt_tokens_details
        return Usage(
            input_tokens=self.prompt_tokens,
            output_tokens=self.completion_tokens,
            cached_input_tokens=(details.cached_tokens or 0) if details else 0,
        )


class _Chunk(StrictWire):
    model: str | None = None
    choices: list[_ChunkChoice] = Field(default_factory=list)
    usage: OpenAIUsage | None = None
