"""Hypothesis strategies for what a model may do to an agent (needs ``agentledger[testing]``).

Point them at an agent's tools: ``scripted_runs(agent)`` draws whole runs (turns of tool calls
good and bad, model failures before replies, a final answer) to play with
``ScriptedRun.model()``; the smaller strategies draw one piece each. Valid tool arguments are
generated from each tool's JSON schema and kept only if the engine's own validation accepts
them; each kind of bad call is kept only if validation rejects it that way. So a drawn call's
kind is what the engine will make of it (``ScriptedRun.expected``).

    from hypothesis import given
    from agentledger.engine.testing.strategies import scripted_runs

    @given(run=scripted_runs([get_weather]))
    def test_weather_agent(run): ...
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson
from hypothesis import strategies as st
from pydantic import JsonValue

from agentledger.engine._agent import Agent
from agentledger.engine._errors import ModelError
from agentledger.engine.models._model import ModelReply
from agentledger.engine.tools._tool_validation import RejectedCall, validate_call
from agentledger.engine.tools._tools import Tool
from agentledger.events import ToolCall

from ._doubles import reply
from ._json_schema import any_json, json_values
from ._scripted import FailureKind, ModelFailure, ScriptedRun, ScriptedTurn

CallKind = Literal["valid", "invalid_arguments", "invalid_json", "unknown_tool"]
"""What a drawn tool call is: valid for its tool, or rejected by validation in that way."""

CALL_KINDS: tuple[CallKind, ...] = ("valid", "invalid_arguments", "invalid_json", "unknown_tool")
RETRYABLE_FAILURES: tuple[FailureKind, ...] = (
    "server",
    "overloaded",
    "rate_limit",
    "timeout",
    "connection",
    "malformed",
)
"""Failures a retry may cure (the default of ``model_failures``); ``bad_request`` is not one."""

Tools = Agent | Sequence[Tool[Any]]
"""An agent (its tools are used) or the tools themselves."""

__all__ = [
    "CALL_KINDS",
    "RETRYABLE_FAILURES",
    "CallKind",
    "any_json",
    "final_answers",
    "invalid_arguments",
    "json_values",
    "malformed_json",
    "model_errors",
    "model_failures",
    "replies",
    "scripted_runs",
    "tool_arguments",
    "tool_calls",
]


def _index(tools: Tools) -> Mapping[str, Tool[Any]]:
    if isinstance(tools, Agent):
        return tools.tools_by_name
    return {t.name: t for t in tools}


def _outcome(tools: Mapping[str, Tool[Any]], name: str, text: str) -> str:
    checked = validate_call(tools, ToolCall(id="probe", name=name, arguments=text))
    return checked.error_type if isinstance(checked, RejectedCall) else "valid"


def _dumps(value: JsonValue) -> str:
    return orjson.dumps(value).decode()


# Strategies are immutable: one per tool is made once (a tool's schema costs a pydantic call).
@functools.lru_cache(maxsize=256)
def tool_arguments(tool: Tool[Any]) -> st.SearchStrategy[dict[str, JsonValue]]:
    """Arguments ``tool`` accepts: drawn from its JSON schema, kept if its validation passes."""
    own = {tool.name: tool}
    return (
        json_values(tool.spec().parameters)
        .filter(lambda value: isinstance(value, dict))
        .map(lambda value: value if isinstance(value, dict) else {})
        .filter(lambda value: _outcome(own, tool.name, _dumps(value)) == "valid")
    )


@functools.lru_cache(maxsize=256)
def _required(tool: Tool[Any]) -> tuple[str, ...]:
    return tuple(tool.spec().parameters.get("required", ()))


def _wrong_value(value: JsonValue) -> st.SearchStrategy[JsonValue]:
    # Values no lax conversion turns into the original's type: an object for a scalar or a
    # list, a string for an object.
    if isinstance(value, dict):
        return st.sampled_from(["not an object", 12345])
    return st.just({"unexpected": ["object"]})


@st.composite
def _broken_arguments(draw: st.DrawFn, tool: Tool[Any]) -> str:
    value = draw(tool_arguments(tool))
    required = [k for k in _required(tool) if k in value]
    how = draw(st.sampled_from(["wrong_type", "drop_required", "not_object"]))
    if how == "drop_required" and required:
        dropped = draw(st.sampled_from(required))
        return _dumps({k: v for k, v in value.items() if k != dropped})
    if how == "wrong_type" and value:
        field = draw(st.sampled_from(sorted(value)))
        return _dumps({**value, field: draw(_wrong_value(value[field]))})
    # Integers exact in every JSON reader, as any_json draws them (orjson refuses past 64 bits).
    integers = st.integers(-(2**53), 2**53)
    other = st.one_of(st.lists(any_json(2), max_size=2), st.text(max_size=10), integers)
    return _dumps(draw(other))


@functools.lru_cache(maxsize=256)
def invalid_arguments(tool: Tool[Any]) -> st.SearchStrategy[str]:
    """Raw JSON arguments for ``tool`` that parse but that it rejects (``invalid_arguments``): a
    required field dropped, a field of the wrong type, or not a JSON object at all."""
    own = {tool.name: tool}
    return _broken_arguments(tool).filter(
        lambda text: _outcome(own, tool.name, text) == "invalid_arguments"
    )


@st.composite
def _garbled(draw: st.DrawFn, tool: Tool[Any]) -> str:
    value = draw(tool_arguments(tool))
    text = _dumps(value)
    how = draw(
        st.sampled_from(
            ["truncated", "single_quotes", "trailing_comma", "nan", "duplicate_key", "prose"]
        )
    )
    if how == "truncated":
        return text[: draw(st.integers(1, len(text) - 1))]
    if how == "single_quotes" and '"' in text:
        return text.replace('"', "'")
    if how == "nan":
        return text[:-1] + (", " if value else "") + '"x": NaN}'
    if how == "duplicate_key" and value:
        return text[:-1] + f', "{next(iter(value))}": null}}'
    if how == "prose":
        return f"Sure, here are the arguments: {text}"
    return text[:-1] + ",}"  # a trailing comma


@functools.lru_cache(maxsize=256)
def malformed_json(tool: Tool[Any]) -> st.SearchStrategy[str]:
    """Raw arguments for ``tool`` that are not strict JSON (``invalid_json``): cut short, single
    quotes, a trailing comma, ``NaN``, a key twice, or prose around the object."""
    own = {tool.name: tool}
    return _garbled(tool).filter(lambda text: _outcome(own, tool.name, text) == "invalid_json")


def _unknown_names(known: Mapping[str, Tool[Any]]) -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z][a-z0-9_]{2,20}", fullmatch=True).filter(lambda n: n not in known)


def _named_texts(tools: Mapping[str, Tool[Any]], kind: CallKind) -> st.SearchStrategy[Any]:
    """(tool name, raw arguments) of calls of ``kind``."""
    if kind == "unknown_tool":
        arguments = st.dictionaries(st.text(max_size=8), any_json(2), max_size=2).map(_dumps)
        return st.tuples(_unknown_names(tools), arguments)
    per_tool = []
    for name, tool in tools.items():
        if kind == "valid":
            texts = tool_arguments(tool).map(_dumps)
        elif kind == "invalid_arguments":
            texts = invalid_arguments(tool)
        else:
            texts = malformed_json(tool)
        per_tool.append(st.tuples(st.just(name), texts))
    return st.one_of(per_tool)


def tool_calls(
    tools: Tools, *, kinds: Sequence[CallKind] = CALL_KINDS, id: str = "call_1"
) -> st.SearchStrategy[ToolCall]:
    """One tool call (with call id ``id``) of one of ``kinds`` for ``tools``: valid arguments,
    invalid ones, malformed JSON, or a tool that does not exist."""
    index = _index(tools)
    usable = [k for k in kinds if k == "unknown_tool" or index]
    if not usable:
        raise ValueError("with no tools, the only kind of call there is is 'unknown_tool'")
    by_kind = {k: _named_texts(index, k) for k in usable}
    return (
        st.sampled_from(usable)
        .flatmap(lambda kind: by_kind[kind])
        .map(lambda named: ToolCall(id=id, name=named[0], arguments=named[1]))
    )


def replies(
    tools: Tools,
    *,
    turn: int = 1,
    min_calls: int = 1,
    max_calls: int = 3,
    kinds: Sequence[CallKind] = CALL_KINDS,
) -> st.SearchStrategy[ModelReply]:
    """A reply with ``min_calls`` to ``max_calls`` tool calls of ``kinds`` (call ids
    ``call_<turn>_<n>``, unique within a run when each turn has its own ``turn``)."""
    calls = [tool_calls(tools, kinds=kinds, id=f"call_{turn}_{n}") for n in range(max_calls)]
    return (
        st.integers(min_calls, max_calls)
        .flatmap(lambda count: st.tuples(st.sampled_from(["", "Let me check."]), *calls[:count]))
        .map(lambda drawn: reply(drawn[0], tool_calls=drawn[1:]))
    )


def final_answers() -> st.SearchStrategy[str]:
    """A final answer's text (never blank)."""
    return st.text(min_size=1, max_size=200).filter(str.strip)


def model_failures(
    kinds: Sequence[FailureKind] = RETRYABLE_FAILURES,
) -> st.SearchStrategy[ModelFailure]:
    """A failed model call of one of ``kinds``; a rate limit with or without ``Retry-After``."""
    retry_after = st.none() | st.floats(0, 5)
    return st.sampled_from(list(kinds)).flatmap(
        lambda kind: (
            st.builds(ModelFailure, st.just(kind), retry_after)
            if kind == "rate_limit"
            else st.just(ModelFailure(kind))
        )
    )


def model_errors(
    model: str = "scripted", kinds: Sequence[FailureKind] = RETRYABLE_FAILURES
) -> st.SearchStrategy[ModelError]:
    """The ``ModelError`` a failed call of ``model`` raises (for a ``ScriptedModel`` list)."""
    return model_failures(kinds).map(lambda failure: failure.error(model))


def scripted_runs(
    tools: Tools,
    *,
    max_turns: int = 3,
    min_calls: int = 1,
    max_calls: int = 3,
    kinds: Sequence[CallKind] = CALL_KINDS,
    failures: Sequence[FailureKind] = RETRYABLE_FAILURES,
    max_failures: int = 2,
) -> st.SearchStrategy[ScriptedRun]:
    """Whole runs for an agent with ``tools``: up to ``max_turns`` turns of tool calls (see
    ``replies``), each after up to ``max_failures`` model failures of ``failures`` (keep it
    below the agent's ``RetryPolicy.max_attempts`` to stay on the first model), then a final
    answer. Play one with ``run.model()``, with a ``FakeClock`` so back-offs take no time."""
    failure_lists = (
        st.lists(model_failures(failures), max_size=max_failures).map(tuple)
        if failures and max_failures > 0
        else st.just(())
    )
    turns = [
        st.builds(
            ScriptedTurn,
            replies(tools, turn=n, min_calls=min_calls, max_calls=max_calls, kinds=kinds),
            failure_lists,
        )
        for n in range(1, max_turns + 1)
    ]

    @st.composite
    def runs(draw: st.DrawFn) -> ScriptedRun:
        count = draw(st.integers(0, max_turns))
        return ScriptedRun(
            tuple(draw(turns[n]) for n in range(count)),
            answer=draw(final_answers()),
            answer_failures=draw(failure_lists),
        )

    return runs()
