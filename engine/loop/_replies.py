"""Model replies as the engine records them: checked at the model port.

Whatever a provider (or a client, or a user's own ``Model``) sends back, the engine records a
reply it can hold and use, or a failed attempt saying why (retried or fallen back like any model
error): impossible token counts, text that is not valid Unicode, tool calls without a usable id or
sharing one, tool-call arguments over the size limits. A reply's text over its limit is cut with a
marker; nothing else is changed.
"""

from __future__ import annotations

from dataclasses import replace

from agentledger.engine._errors import ModelResponseError
from agentledger.engine.models._model import ModelReply
from agentledger.engine.policies._sizes import SizePolicy, json_size

MAX_TOKEN_COUNT = 10**12
"""More tokens than any call could use: a count above it is a broken report, not a cost."""


def checked_reply(reply: ModelReply, model: str, sizes: SizePolicy) -> ModelReply:
    """``reply`` as it is recorded, or ``ModelResponseError`` naming what makes it unusable."""
    _check_usage(reply, model)
    _check_tool_calls(reply, model, sizes)
    for text in (reply.text, reply.finish_reason or "", reply.model):
        _check_unicode(text, model)
    text = sizes.cut_text(reply.text, sizes.max_model_text)
    return reply if text is reply.text else replace(reply, text=text)


def _check_usage(reply: ModelReply, model: str) -> None:
    usage = reply.usage
    counts = (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cached input", usage.cached_input_tokens),
    )
    for name, count in counts:
        if not 0 <= count <= MAX_TOKEN_COUNT:
            raise ModelResponseError(
                model, f"malformed reply: usage reports {count} {name} tokens, an impossible count"
            )
    if usage.cached_input_tokens > usage.input_tokens:
        raise ModelResponseError(
            model,
            f"malformed reply: usage reports {usage.cached_input_tokens} cached input tokens but "
            f"only {usage.input_tokens} input tokens (cached tokens are part of the input)",
        )


def _check_tool_calls(reply: ModelReply, model: str, sizes: SizePolicy) -> None:
    calls = reply.tool_calls
    if len(calls) > sizes.max_tool_calls:
        raise ModelResponseError(
            model,
            f"malformed reply: {len(calls)} tool calls, over the limit of {sizes.max_tool_calls}",
        )
    seen: set[str] = set()
    total = 0
    for call in calls:
        if not call.id or "\x00" in call.id or len(call.id) > 256:
            raise ModelResponseError(model, "malformed reply: a tool call has no usable id")
        if call.id in seen:
            raise ModelResponseError(
                model, f"malformed reply: two tool calls share the id {call.id[:80]!r}"
            )
        seen.add(call.id)
        for text in (call.id, call.name, call.arguments):
            _check_unicode(text, model)
        size = json_size(call.arguments)
        if size > sizes.max_tool_arguments:
            raise ModelResponseError(
                model,
                f"malformed reply: the arguments of tool call {call.id[:80]!r} are {size} bytes, "
                f"over the limit of {sizes.max_tool_arguments}",
            )
        total += size
    if total > sizes.max_tool_arguments_total:
        raise ModelResponseError(
            model,
            f"malformed reply: its tool calls' arguments are {total} bytes together, over the "
            f"limit of {sizes.max_tool_arguments_total}",
        )


def _check_unicode(text: str, model: str) -> int:
    """The size of ``text`` in UTF-8, or ``ModelResponseError`` if it is not valid Unicode."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ModelResponseError(
            model, "malformed reply: it holds text that is not valid Unicode (a lone surrogate)"
        ) from None
