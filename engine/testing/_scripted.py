"""A whole scripted run: what the model answers each turn, the failures before it, the answer.

``ScriptedRun`` is plain data (the Hypothesis strategies in ``strategies`` generate it, a test
may also write one); ``ScriptedRun.model()`` makes the ``ScriptedModel`` that plays it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentledger.engine._agent import Agent
from agentledger.engine._errors import (
    ModelConnectionError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelServerError,
    ModelTimeoutError,
)
from agentledger.engine.loop._requests import SUMMARY_INSTRUCTIONS
from agentledger.engine.models._model import ModelReply, ModelRequest
from agentledger.engine.models._pricing import Price
from agentledger.engine.tools._tool_validation import RejectedCall, validate_call
from agentledger.engine.tools._tools import Tool
from agentledger.events import ToolCall, ToolRejection

from ._doubles import ScriptedModel, reply

FailureKind = Literal[
    "server", "overloaded", "rate_limit", "timeout", "connection", "malformed", "bad_request"
]
"""How a model call fails: HTTP 5xx, 529 overloaded, 429 (with or without ``Retry-After``), no
reply in time, no connection, a reply that breaks the API's promise (all retryable), or a 4xx
that retrying cannot fix (``bad_request``)."""

CallOutcome = Literal["valid"] | ToolRejection
"""What the engine's validation makes of a tool call: it runs (``valid``) or is rejected."""


@dataclass(frozen=True, slots=True)
class ModelFailure:
    """A failed model call, as data: ``error(model)`` makes the ``ModelError`` to raise."""

    kind: FailureKind
    retry_after: float | None = None
    """For ``rate_limit``: the provider's ``Retry-After`` in seconds, if it sent one."""

    def error(self, model: str) -> ModelError:
        """A fresh exception of this kind, from ``model``."""
        text = f"scripted {self.kind} failure"
        if self.kind == "rate_limit":
            return ModelRateLimitedError(model, text, retry_after=self.retry_after)
        if self.kind in ("server", "overloaded"):
            status = 529 if self.kind == "overloaded" else 503
            return ModelServerError(model, text, status_code=status)
        if self.kind == "timeout":
            return ModelTimeoutError(model, text)
        if self.kind == "connection":
            return ModelConnectionError(model, text)
        if self.kind == "malformed":
            return ModelResponseError(model, text)
        return ModelRequestError(model, text, status_code=400)


@dataclass(frozen=True, slots=True)
class ScriptedTurn:
    """One turn of the model: ``failures`` come first (one per request of the turn), then
    ``reply`` (tool calls, or text)."""

    reply: ModelReply
    failures: tuple[ModelFailure, ...] = ()


@dataclass(frozen=True, slots=True)
class ScriptedRun:
    """What the model does over a run: ``turns`` in order, then ``answer`` (with its own
    ``answer_failures`` first) for every request after them, revisions included.

    The turn a request belongs to is the number of assistant messages it holds, so a run that
    is resumed after a crash, or compacted, gets the same replies. Failures are counted per
    turn by each model made with ``model()``: the first requests of a turn fail, the next one
    gets the reply (a transient fault, as a real provider's). A memory summary request gets
    ``summary``.
    """

    turns: tuple[ScriptedTurn, ...]
    answer: str = "Done."
    answer_failures: tuple[ModelFailure, ...] = ()
    summary: str = "Summary of the earlier tool results."

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """Every tool call of the script, in order."""
        return tuple(c for turn in self.turns for c in turn.reply.tool_calls)

    def expected(self, tools: Agent | Sequence[Tool[Any]]) -> dict[str, CallOutcome]:
        """What validation makes of each tool call of the script (by call id) with ``tools``."""
        index = _tools_by_name(tools)
        outcomes: dict[str, CallOutcome] = {}
        for tool_call in self.tool_calls:
            checked = validate_call(index, tool_call)
            outcomes[tool_call.id] = (
                checked.error_type if isinstance(checked, RejectedCall) else "valid"
            )
        return outcomes

    def model(
        self,
        name: str = "scripted",
        *,
        price: Price | None = None,
        failures: bool = True,
        chunk: int = 8,
    ) -> ScriptedModel:
        """A ``ScriptedModel`` named ``name`` that plays this run (``failures=False``: never
        fails, e.g. for a fallback model); streamed, it hands out pieces of ``chunk``
        characters."""
        tried: Counter[int] = Counter()

        def answer(request: ModelRequest) -> ModelReply | BaseException:
            messages = request.messages
            if messages and messages[0].content == SUMMARY_INSTRUCTIONS:
                return reply(self.summary)
            turn = sum(1 for m in messages if m.role == "assistant")
            script = self.turns[turn] if turn < len(self.turns) else None
            planned = script.failures if script is not None else self.answer_failures
            attempt = tried[min(turn, len(self.turns))]
            tried[min(turn, len(self.turns))] += 1
            if failures and attempt < len(planned):
                return planned[attempt].error(name)
            return script.reply if script is not None else reply(self.answer)

        return ScriptedModel(answer, name=name, price=price, chunk=chunk)


def _tools_by_name(tools: Agent | Sequence[Tool[Any]]) -> Mapping[str, Tool[Any]]:
    if isinstance(tools, Agent):
        return tools.tools_by_name
    return {t.name: t for t in tools}
