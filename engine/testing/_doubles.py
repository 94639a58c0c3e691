"""Test doubles for agents built on agentledger: a scripted model, a fake clock, sequential ids.

They are the same doubles the engine's own test suite uses. A typical test::

    model = ScriptedModel([
        reply(tool_calls=[call("get_weather", {"city": "Paris"})]),
        reply("It is sunny in Paris."),
    ])
    agent = Agent(name="weather", model=model, tools=[get_weather])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Paris?")
    assert result.output == "It is sunny in Paris."
    assert model.requests[1].messages[-1].role == "tool"
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from agentledger.engine.models._model import (
    DeltaSink,
    ModelReply,
    ModelRequest,
    TextDelta,
    ToolCallDelta,
)
from agentledger.engine.models._pricing import Price
from agentledger.events import ToolCall, Usage


class FakeClock:
    """A clock that stands still unless told to move; ``sleep`` advances it instead of waiting.

    ``tick`` is added after every ``now()`` call, so successive events get distinct, ordered times.
    """

    def __init__(
        self,
        start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
        *,
        tick: timedelta = timedelta(0),
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start
        self._tick = tick
        self.slept: list[float] = []
        """Every ``sleep`` asked of this clock, in seconds, in order."""

    def now(self) -> datetime:
        current = self._now
        self._now += self._tick
        return current

    def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward by a timedelta or a number of seconds."""
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))


class SequentialIds:
    """Ids ``prefix-1``, ``prefix-2``, ...: readable and the same in every run of a test."""

    def __init__(self, prefix: str = "id") -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


def call(name: str, arguments: Mapping[str, Any] | str, *, id: str | None = None) -> ToolCall:
    """A tool call as a model would make it; a ``str`` is sent as raw (possibly broken) JSON.

    Without ``id``, the id is derived from name and arguments, so give two identical calls in one
    reply distinct ids yourself.
    """
    raw = arguments if isinstance(arguments, str) else orjson.dumps(dict(arguments)).decode()
    digest = hashlib.sha256(f"{name}\0{raw}".encode()).hexdigest()[:12]
    return ToolCall(id=id or f"call_{digest}", name=name, arguments=raw)


def reply(
    text: str = "",
    *,
    tool_calls: Sequence[ToolCall] = (),
    usage: Usage | None = None,
    finish_reason: str | None = None,
) -> ModelReply:
    """A model reply for a ``ScriptedModel`` script."""
    return ModelReply(
        text=text,
        tool_calls=tuple(tool_calls),
        usage=usage or Usage(input_tokens=10, output_tokens=5),
        finish_reason=finish_reason or ("tool_calls" if tool_calls else "stop"),
    )


Script = Sequence[ModelReply | BaseException] | Callable[[ModelRequest], ModelReply | BaseException]
"""A ``ScriptedModel``'s answers: a list used in order, or a function of the request."""


class ScriptedModel:
    """A ``Model`` that answers from a script instead of a provider.

    ``script`` is either a list of replies (an exception in the list is raised instead, e.g. a
    ``ModelRateLimitedError`` to test retries), used in order, or a function of the request
    (returning an exception raises it too). A function of the request answers a resumed run as
    it answered the first try, like a real service whose behaviour does not depend on our
    crashes; a list moves on with every call, including calls a crash cut off.
    Its calls cost nothing unless a ``price`` is given (to test budgets).
    Every request is kept in ``requests`` for assertions. Running out of replies raises
    ``AssertionError``: the test expected fewer calls than the engine made.

    It can also stream (a ``StreamingModel``): ``stream`` hands out its reply's text, then each
    tool call's arguments, in pieces of ``chunk`` characters (a call's first piece names its id
    and name), and returns the same reply ``complete`` would, so streaming code can be tested
    without a server.
    """

    def __init__(
        self,
        script: Script,
        *,
        name: str = "scripted",
        price: Price | None = None,
        chunk: int = 8,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least one character, not {chunk}")
        self._chunk = chunk
        self._name = name
        self.price = price or Price.free()
        """What the agent charges this model's calls at (free unless given)."""
        self._function = script if callable(script) else None
        self._replies: Iterator[ModelReply | BaseException] = iter(
            () if callable(script) else list(script)
        )
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if self._function is not None:
            answer: ModelReply | BaseException = self._function(request)
        else:
            try:
                answer = next(self._replies)
            except StopIteration:
                raise AssertionError(
                    f"ScriptedModel {self._name!r} ran out of replies after "
                    f"{len(self.requests) - 1} calls"
                ) from None
        if isinstance(answer, BaseException):
            raise answer
        return answer if answer.model else replace(answer, model=self._name)

    async def stream(self, request: ModelRequest, on_delta: DeltaSink) -> ModelReply:
        """Answer as ``complete`` does, handing the reply to ``on_delta`` in pieces first."""
        answer = await self.complete(request)
        size = self._chunk
        for start in range(0, len(answer.text), size):
            on_delta(TextDelta(answer.text[start : start + size]))
        for index, tool_call in enumerate(answer.tool_calls):
            pieces = [
                tool_call.arguments[start : start + size]
                for start in range(0, len(tool_call.arguments), size)
            ] or [""]
            on_delta(ToolCallDelta(index, tool_call.id, tool_call.name, pieces[0]))
            for piece in pieces[1:]:
                on_delta(ToolCallDelta(index, None, None, piece))
        return answer
