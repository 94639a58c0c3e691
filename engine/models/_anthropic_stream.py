"""Reading an Anthropic messages stream into a reply.

The events, as Anthropic documents them: ``message_start`` (the message with its input usage),
then per content block ``content_block_start``, ``content_block_delta`` (``text_delta`` or
``input_json_delta``) and ``content_block_stop``, then ``message_delta`` (the stop reason and the
output usage so far), ``message_stop``; ``ping`` may come anywhere and an ``error`` event ends a
stream that failed. Unknown event types are skipped, as Anthropic asks of clients; unknown block
types fail as they do in ``complete`` (a reply we could not pass back faithfully).

A tool call's arguments arrive as pieces of JSON (handed out as they are); the reply carries them
re-serialised compactly, as ``complete`` gives them, so a streamed reply equals a completed one.
The structured answer (a ``tool_use`` of the output tool, ``answer_tool``) is the reply's text, as
in ``complete``: its pieces of JSON are handed out as text deltas.
The output stops at ``max_tokens`` (``OutputMeter``), the reply then is what arrived, with
``finish_reason="length"``, the input usage of ``message_start`` and ``max_tokens`` output tokens.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentledger.engine._errors import (
    ModelConnectionError,
    ModelError,
    ModelRateLimitedError,
    ModelResponseError,
    ModelServerError,
)
from agentledger.events import ToolCall, Usage

from ._model import DeltaSink, ModelReply, TextDelta, ToolCallDelta
from ._sse import OutputMeter, ServerSentEvent

_KNOWN_BLOCKS = ("text", "tool_use")


@dataclass(slots=True)
class _Tool:
    id: str
    name: str
    pieces: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Assembly:
    model: str
    text: list[str] = field(default_factory=list)
    tools: list[_Tool] = field(default_factory=list)
    tool_of_block: dict[int, int] = field(default_factory=dict)
    answer_tool: str | None = None
    answers: list[_Tool] = field(default_factory=list)
    answer_of_block: dict[int, int] = field(default_factory=dict)
    input_tokens: int | None = None
    cached_input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None

    def reply(self, usage: Usage, finish_reason: str | None, *, complete: bool) -> ModelReply:
        # A structured answer replaces the text (often a preamble), as in ``complete``.
        answer = self._arguments(self.answers[-1], complete) if self.answers else None
        return ModelReply(
            text=answer if answer is not None else "".join(self.text),
            tool_calls=tuple(
                ToolCall(id=t.id, name=t.name, arguments=self._arguments(t, complete))
                for t in self.tools
            ),
            usage=usage,
            finish_reason=finish_reason,
            model=self.model,
        )

    def _arguments(self, tool: _Tool, complete: bool) -> str:
        raw = "".join(tool.pieces)
        if not raw:
            return "{}"
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if not complete:  # cut off mid-call: the engine tells the model it is not JSON
                return raw
            raise ModelResponseError(
                self.model, f"malformed stream: tool_use {tool.id[:80]!r} input is not JSON"
            ) from None
        if complete and not isinstance(parsed, dict):
            raise ModelResponseError(
                self.model, f"malformed stream: tool_use {tool.id[:80]!r} input is not an object"
            )
        return orjson.dumps(parsed).decode()


async def read_anthropic_stream(
    events: AsyncGenerator[ServerSentEvent, None],
    *,
    model: str,
    max_tokens: int,
    input_estimate: int,
    on_delta: DeltaSink,
    answer_tool: str | None = None,
) -> ModelReply:
    """The reply ``events`` carry, handing each piece to ``on_delta`` as it arrives.

    ``answer_tool`` names the output tool of a structured-output request: its input is the text.

    ``input_estimate`` counts the input only if no ``message_start`` came before a cut-off.
    Raises ``ModelConnectionError`` for a stream that ends before ``message_stop``, the
    matching retryable ``ModelError`` for an ``error`` event, ``ModelResponseError`` for an
    event that is not what the API documents.
    """
    meter = OutputMeter(max_tokens)
    reply = _Assembly(model, answer_tool=answer_tool)
    async with aclosing(events):
        async for event in events:
            data = _data(model, event)
            kind = data.get("type", event.event)
            if kind == "message_stop":
                return reply.reply(_usage(reply), reply.stop_reason, complete=True)
            if kind == "error":
                raise _stream_error(model, data)
            if kind == "content_block_delta":
                piece = _piece(model, reply, data)
                if piece is None:
                    continue
                index, text = piece
                if text:
                    if meter.full:
                        return _cut(reply, meter, input_estimate)
                    meter.add(text)
                on_delta(_take(reply, index, text))
            else:
                _other(model, reply, kind, data, on_delta)
    raise ModelConnectionError(model, "the stream broke off: it ended before message_stop")


def _other(model: str, reply: _Assembly, kind: str, data: dict[str, Any], on: DeltaSink) -> None:
    """Take an event other than a delta, a stop or an error into ``reply``."""
    if kind == "message_start":
        message = _object(model, data, "message")
        if isinstance(message.get("model"), str) and message["model"]:
            reply.model = message["model"]
        _take_usage(model, reply, message.get("usage"))
    elif kind == "content_block_start":
        block = _object(model, data, "content_block")
        block_type = block.get("type")
        if block_type not in _KNOWN_BLOCKS:
            raise ModelResponseError(
                model, f"malformed stream: a content block of type {block_type!r}"
            )
        if block_type == "tool_use":
            tool_id, name = block.get("id"), block.get("name")
            if not isinstance(tool_id, str) or not isinstance(name, str):
                raise ModelResponseError(model, "malformed stream: tool_use without id or name")
            if name == reply.answer_tool:
                reply.answer_of_block[_index(model, data)] = len(reply.answers)
                reply.answers.append(_Tool(tool_id, name))
                return
            reply.tool_of_block[_index(model, data)] = len(reply.tools)
            reply.tools.append(_Tool(tool_id, name))
            on(ToolCallDelta(index=len(reply.tools) - 1, id=tool_id, name=name, arguments=""))
        elif isinstance(block.get("text"), str) and block["text"]:
            reply.text.append(block["text"])
            on(TextDelta(block["text"]))
    elif kind == "message_delta":
        delta = data.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            reply.stop_reason = delta["stop_reason"]
        _take_usage(model, reply, data.get("usage"))
    # ping, content_block_stop and event types added later carry nothing we read.


def _piece(model: str, reply: _Assembly, data: dict[str, Any]) -> tuple[int, str] | None:
    """``(block index, text)`` of a ``content_block_delta``; ``None`` for a kind we skip."""
    delta = _object(model, data, "delta")
    index = _index(model, data)
    if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
        return index, delta["text"]
    if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
        if index not in reply.tool_of_block and index not in reply.answer_of_block:
            raise ModelResponseError(model, "malformed stream: input_json_delta outside tool_use")
        return index, delta["partial_json"]
    raise ModelResponseError(
        model, f"malformed stream: a content_block_delta of type {delta.get('type')!r}"
    )


def _take(reply: _Assembly, index: int, text: str) -> TextDelta | ToolCallDelta:
    answer = reply.answer_of_block.get(index)
    if answer is not None:
        reply.answers[answer].pieces.append(text)
        return TextDelta(text)
    position = reply.tool_of_block.get(index)
    if position is None:
        reply.text.append(text)
        return TextDelta(text)
    reply.tools[position].pieces.append(text)
    return ToolCallDelta(index=position, id=None, name=None, arguments=text)


def _take_usage(model: str, reply: _Assembly, usage: object) -> None:
    """Usage of ``message_start`` or ``message_delta`` (cumulative counts: the last one holds)."""
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise ModelResponseError(model, "malformed stream: usage is not an object")
    counts = {key: usage.get(key) for key in _USAGE_KEYS}
    for key, count in counts.items():
        if count is not None and (type(count) is not int or count < 0):
            raise ModelResponseError(model, f"malformed stream: usage {key} is {count!r}")
    if counts["input_tokens"] is not None:
        writes = counts["cache_creation_input_tokens"] or 0
        reads = counts["cache_read_input_tokens"] or 0
        reply.input_tokens = counts["input_tokens"] + writes + reads
        reply.cached_input_tokens = reads
    if counts["output_tokens"] is not None:
        reply.output_tokens = counts["output_tokens"]


_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def _usage(reply: _Assembly) -> Usage:
    return Usage(
        input_tokens=reply.input_tokens or 0,
        output_tokens=reply.output_tokens,
        cached_input_tokens=reply.cached_input_tokens,
    )


def _cut(reply: _Assembly, meter: OutputMeter, input_estimate: int) -> ModelReply:
    """The reply as far as it was read, at the output limit."""
    usage = Usage(
        input_tokens=reply.input_tokens if reply.input_tokens is not None else input_estimate,
        output_tokens=meter.max_tokens,
        cached_input_tokens=reply.cached_input_tokens,
    )
    return reply.reply(usage, "length", complete=False)


def _stream_error(model: str, data: dict[str, Any]) -> ModelError:
    """The retryable error an ``error`` event reports: the attempt failed mid-stream."""
    error = data.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    text = error.get("message") if isinstance(error, dict) else None
    message = f"the stream broke off with {kind or 'an error'}: {str(text or '')[:300]}"
    if kind == "rate_limit_error":
        return ModelRateLimitedError(model, message)
    return ModelServerError(model, message, status_code=529 if kind == "overloaded_error" else None)


def _data(model: str, event: ServerSentEvent) -> dict[str, Any]:
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise ModelResponseError(
            model, f"malformed stream: a {event.event} event is not JSON: {event.data[:200]!r}"
        ) from None
    if not isinstance(data, dict):
        raise ModelResponseError(model, f"malformed stream: a {event.event} event is not an object")
    return data


def _object(model: str, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ModelResponseError(model, f"malformed stream: {data.get('type')} without {key}")
    return value


def _index(model: str, data: dict[str, Any]) -> int:
    index = data.get("index")
    if type(index) is not int or index < 0:
        raise ModelResponseError(model, f"malformed stream: {data.get('type')} without an index")
    return index
