"""Size limits on what events carry, checks of model replies at the port, and the API's inputs."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    AgentConfigError,
    BreakerPolicy,
    Engine,
    InvalidInputError,
    ModelResponseError,
    RetryPolicy,
    SizePolicy,
    ToolContext,
    tool,
)
from agentledger.engine.loop._replies import checked_reply
from agentledger.engine.policies._sizes import json_size
from agentledger.engine.testing import FakeClock, ScriptedModel, call, reply
from agentledger.events import (
    EventCodec,
    MemoryEventStore,
    ModelCallFailed,
    RunFailed,
    ToolCall,
    ToolCallSucceeded,
    Usage,
)

SIZES = SizePolicy()
T0 = FakeClock().now()


# -- cutting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["x" * 300_000, "\x01" * 100_000, "é" * 200_000, '"q"' * 90_000, "🙂" * 70_000]
)
def test_long_text_is_cut_to_its_limit_with_the_original_size_and_cutting_twice_changes_nothing(
    text: str,
) -> None:
    cut = SIZES.cut_text(text, SIZES.max_model_text)
    assert json_size(cut) <= SIZES.max_model_text
    assert f"cut: {json_size(text)} bytes in all, over the limit of 262144" in cut
    assert text.startswith(cut[: cut.index(" [... cut")])
    assert SIZES.cut_text(cut, SIZES.max_model_text) is cut


def test_text_that_fits_is_the_same_object() -> None:
    text = "a" * 1000
    assert SIZES.cut_text(text, SIZES.max_model_text) is text


def test_an_oversized_tool_result_is_replaced_by_a_stand_in_that_says_so() -> None:
    result = {"rows": ["x" * 1000] * 1000}
    event = ToolCallSucceeded(
        run_id="r", span_id="s", at=T0, call_id="c", tool_name="t", result=result
    )
    limited = SIZES.event_filter()(event)
    assert isinstance(limited, ToolCallSucceeded) and isinstance(limited.result, dict)
    assert limited.result["truncated"] is True
    assert limited.result["original_bytes"] == len(orjson.dumps(result))
    assert len(EventCodec.encode(limited)) < 16 * 1024
    small = event.model_copy(update={"result": {"rows": []}})
    assert SIZES.event_filter()(small) is small


def test_error_texts_are_cut_and_lone_surrogates_replaced() -> None:
    failed = RunFailed(run_id="r", span_id="r", at=T0, error_type="x", message="e" * 50_000)
    limited = SIZES.event_filter()(failed)
    assert isinstance(limited, RunFailed) and json_size(limited.message) <= SIZES.max_error_text
    broken = ModelCallFailed(
        run_id="r", span_id="s", at=T0, call_id="c", model="m", error_type="E", message="bad \ud800"
    )
    fixed = SIZES.event_filter()(broken)
    assert isinstance(fixed, ModelCallFailed) and fixed.message == "bad \ufffd"
    EventCodec.encode(fixed)  # the log can hold it now


def test_a_size_policy_refuses_limits_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="max_tool_result"):
        SizePolicy(max_tool_result=0)


# -- model replies at the port -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (reply("hi", usage=Usage(input_tokens=1, cached_input_tokens=50)), "50 cached input"),
        (reply("hi", usage=Usage(output_tokens=10**15)), "impossible count"),
        (reply("hi \ud800"), "not valid Unicode"),
        (
            reply(tool_calls=[call("t", {"a": 1}, id="x"), call("t", {"a": 2}, id="x")]),
            "share the id 'x'",
        ),
        (reply(tool_calls=[ToolCall(id="", name="t", arguments="{}")]), "no usable id"),
        (
            reply(tool_calls=[ToolCall(id="c", name="t", arguments='"' + "x" * 300_000 + '"')]),
            "over the limit of 262144",
        ),
        (reply(tool_calls=[call("t", {}, id=f"c{i}") for i in range(200)]), "200 tool calls"),
    ],
)
def test_a_reply_the_engine_cannot_hold_or_use_is_a_malformed_reply(
    bad: object, reason: str
) -> None:
    with pytest.raises(ModelResponseError, match=reason):
        checked_reply(bad, "m", SIZES)  # type: ignore[arg-type]


def test_a_long_answer_is_kept_cut() -> None:
    long = reply("x" * 400_000)
    kept = checked_reply(long, "m", SIZES)
    assert json_size(kept.text) <= SIZES.max_model_text and kept.text.startswith("xxx")
    fine = reply("Sunny.")
    assert checked_reply(fine, "m", SIZES) is fine


class Query(BaseModel):
    q: str


@tool
async def lookup(args: Query, ctx: ToolContext) -> str:
    """Look something up."""
    return args.q


async def test_two_tool_calls_sharing_an_id_are_a_failed_attempt_and_the_retry_goes_on() -> None:
    model = ScriptedModel(
        [
            reply(
                tool_calls=[call("lookup", {"q": "a"}, id="x"), call("lookup", {"q": "b"}, id="x")]
            ),
            reply(tool_calls=[call("lookup", {"q": "a"}, id="x")]),
            reply("Done."),
        ]
    )
    agent = Agent(name="a", model=model, tools=[lookup], retry=RetryPolicy(base_delay=0))
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "Look.", run_id="r1")
        events = await store.read_stream("run-r1")
    assert (result.status, result.output) == ("completed", "Done.")
    (failed,) = [e.event for e in events if isinstance(e.event, ModelCallFailed)]
    assert failed.error_type == "ModelResponseError" and "share the id 'x'" in failed.message


# -- inputs of the API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"user_id": "ad\x00a"}, "user_id must not hold control characters"),
        ({"run_id": ""}, "run_id must not be empty"),
        ({"run_id": "r" * 300}, "run_id is 300 characters long"),
        ({"surface": "free\x1b[31m"}, "surface must not hold control characters"),
        ({"task": "hi \ud800"}, "task is not valid Unicode"),
        ({"task": "x" * 300_000}, "task is 300000 bytes; the size limit is 262144"),
    ],
)
async def test_run_refuses_unusable_inputs_before_anything_is_written(
    arguments: dict[str, str], message: str
) -> None:
    model = ScriptedModel([reply("Hi.")])
    agent = Agent(name="a", model=model)
    task = arguments.pop("task", "Hello")
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        with pytest.raises(InvalidInputError, match=message):
            await engine.run(agent, task, **arguments)  # type: ignore[arg-type]
        assert await store.read_all() == [] and model.requests == []


async def test_the_other_entry_points_check_run_ids_too() -> None:
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        for call_it in (engine.load, engine.result, engine.cancel, engine.resume):
            with pytest.raises(InvalidInputError, match="run_id"):
                await call_it("bad\x00id")  # type: ignore[operator]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda m: Agent(name="a", model=m, max_tokens=-5),
            "max_tokens must be an int of at least 1",
        ),
        (
            lambda m: Agent(name="a", model=m, model_timeout=-1),
            "model_timeout must be a finite, positive",
        ),
        (
            lambda m: Agent(name="a", model=m, tool_timeout=0),
            "tool_timeout must be a finite, positive",
        ),
        (lambda m: Agent(name="", model=m), "name must be a non-empty string"),
        (lambda m: RetryPolicy(base_delay=-1), "base_delay must be a finite, non-negative"),
        (lambda m: RetryPolicy(max_retry_after=float("inf")), "max_retry_after"),
        (lambda m: RetryPolicy(multiplier=0.5), "multiplier"),
        (lambda m: BreakerPolicy(threshold=0), "threshold"),
        (lambda m: BreakerPolicy(cooldown=timedelta(seconds=-1)), "cooldown"),
    ],
)
def test_settings_that_cannot_work_are_refused_when_built(build: object, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        build(ScriptedModel([]))  # type: ignore[operator]


def test_typed_errors_stay_value_errors_for_callers_that_catch_those() -> None:
    assert issubclass(InvalidInputError, ValueError) and issubclass(AgentConfigError, ValueError)
