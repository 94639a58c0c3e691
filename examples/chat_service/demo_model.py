"""The model the service runs on when none is named: scripted, streaming, no key, no network.

It plays a travel desk. Asked about a city's weather, it calls the ``forecast`` tool; given the
forecast, it answers with a ``TravelAnswer`` as JSON. A question that names no city ("and
there?") is about the city of an earlier message of the conversation, so the second message of
a conversation is answered only if the model was sent the first. Its reply is a function of the
request, so a resumed run gets the same answer; it streams the reply in small pieces, with a
pause between them (``delay``) that makes the stream visible in a browser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import anyio

from agentledger.engine import DeltaSink, ModelReply, ModelRequest, Price, TextDelta, ToolCallDelta
from agentledger.engine.testing import call, reply
from agentledger.projections import Message

from .answer import TravelAnswer

CITIES = ("Paris", "Tokyo", "Oslo", "Lisbon")
NAME = "demo-travel-desk"


def answer(request: ModelRequest) -> ModelReply:
    """What the demo model replies to ``request``."""
    messages = request.messages
    questions = [m.content for m in messages if m.role == "user"]
    if messages and messages[-1].role == "tool":
        return reply(_final_answer(questions, _forecast_of(messages)))
    city, _ = _city(questions)
    if city is None:
        return reply(
            TravelAnswer(
                reply="Which city do you mean? I know Paris, Tokyo, Oslo and Lisbon.",
                city="",
                temperature_c=0,
                umbrella=False,
            ).model_dump_json()
        )
    return reply(tool_calls=[call("forecast", {"city": city})])


class DemoModel:
    """A ``StreamingModel`` that answers with ``answer`` and streams it in pieces of ``piece``
    characters, ``delay`` seconds apart. ``calls`` counts what it was asked."""

    price = Price.free()

    def __init__(self, *, delay: float = 0.0, piece: int = 6) -> None:
        self.delay = delay
        self.piece = piece
        self.calls = 0

    @property
    def name(self) -> str:
        return NAME

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        return _named(answer(request))

    async def stream(self, request: ModelRequest, on_delta: DeltaSink) -> ModelReply:
        self.calls += 1
        result = _named(answer(request))
        for text in _pieces(result.text, self.piece):
            on_delta(TextDelta(text))
            await anyio.sleep(self.delay)
        for index, tool_call in enumerate(result.tool_calls):
            first = True
            for arguments in _pieces(tool_call.arguments, self.piece):
                on_delta(
                    ToolCallDelta(
                        index,
                        tool_call.id if first else None,
                        tool_call.name if first else None,
                        arguments,
                    )
                )
                first = False
                await anyio.sleep(self.delay)
        return result


def _named(result: ModelReply) -> ModelReply:
    return ModelReply(
        text=result.text,
        tool_calls=result.tool_calls,
        usage=result.usage,
        finish_reason=result.finish_reason,
        model=NAME,
    )


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def _city(questions: Sequence[str]) -> tuple[str | None, bool]:
    """The city the latest question is about, and whether it came from an earlier one."""
    for position, question in enumerate(reversed(questions)):
        for city in CITIES:
            if re.search(rf"\b{city}\b", question, flags=re.IGNORECASE):
                return city, position > 0
    return None, False


def _forecast_of(messages: Sequence[Message]) -> dict[str, Any]:
    """The forecast in the last tool result, wherever the tool's envelope put it."""
    last = messages[-1]
    found = _find_forecast(json.loads(last.content)) if last.role == "tool" else None
    return found or {"city": "?", "conditions": "unknown", "temperature_c": 0}


def _find_forecast(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        if "conditions" in value and "temperature_c" in value:
            return value
        items: list[Any] = list(value.values())
    elif isinstance(value, list):
        items = value
    elif isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return _find_forecast(json.loads(value))
        except ValueError:
            return None
    else:
        return None
    for item in items:
        found = _find_forecast(item)
        if found is not None:
            return found
    return None


def _final_answer(questions: Sequence[str], forecast: dict[str, Any]) -> str:
    city, remembered = _city(questions)
    conditions = str(forecast["conditions"])
    temperature = int(forecast["temperature_c"])
    umbrella = any(word in conditions for word in ("rain", "snow", "shower"))
    text = f"{city}: {conditions}, {temperature} °C."
    if remembered:
        text += f" ({city}, as you asked before.)"
    text += " Take an umbrella." if umbrella else " No umbrella needed."
    value = TravelAnswer(reply=text, city=city or "", temperature_c=temperature, umbrella=umbrella)
    return value.model_dump_json()
