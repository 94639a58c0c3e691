"""Agent settings (sampling, tool choice): validated when the agent is built, sent on the agent's
calls, and part of the request digest only when they are not the defaults."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from pydantic import BaseModel
from wire_cases import LOOKUP, LOOSE_ORDER, Replies, load

from agentledger.engine import (
    Agent,
    AgentConfigError,
    Engine,
    ModelRequestError,
    Price,
    ToolContext,
    tool,
)
from agentledger.engine.loop._requests import build_request, request_body, request_digest
from agentledger.engine.models._anthropic import AnthropicModel
from agentledger.engine.models._model import ModelRequest, Sampling
from agentledger.engine.models._openai import OpenAIChatModel
from agentledger.engine.testing import ScriptedModel, SequentialIds, reply
from agentledger.events import MemoryEventStore
from agentledger.projections._messages import UserMessage


class Order(BaseModel):
    order_id: int


@tool
async def lookup_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up."""
    return {"order_id": args.order_id, "state": "shipped"}


@tool
async def cancel_order(args: Order, ctx: ToolContext) -> dict[str, Any]:
    """Cancel an order."""
    return {"order_id": args.order_id, "state": "cancelled"}


def agent(**kwargs: Any) -> Agent:
    settings: dict[str, Any] = {"name": "a", "model": ScriptedModel([reply("Hi.")])}
    return Agent(**(settings | kwargs))


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"sampling": Sampling(temperature=2.5)}, "temperature must be from 0 to 2, not 2.5"),
        ({"sampling": Sampling(temperature=float("nan"))}, "temperature must be from 0 to 2"),
        ({"sampling": Sampling(temperature=-0.1)}, "temperature must be from 0 to 2"),
        ({"sampling": Sampling(top_p=0)}, "top_p must be above 0 and at most 1, not 0"),
        ({"sampling": Sampling(top_p=1.01)}, "top_p must be above 0 and at most 1"),
        ({"sampling": Sampling(stop=("",))}, "stop must be a tuple of non-empty strings"),
        ({"sampling": Sampling(stop=["x"])}, "stop must be a tuple of non-empty strings"),  # type: ignore[arg-type]
        ({"sampling": Sampling(seed=True)}, "seed must be a 64-bit int, not True"),  # type: ignore[arg-type]
        ({"sampling": Sampling(seed=2**63)}, "seed must be a 64-bit int"),
        ({"sampling": {"temperature": 0}}, "Agent.sampling must be a Sampling, not dict"),
        ({"tool_choice": "send_email"}, "tool_choice 'send_email' names no tool of agent 'a'"),
        ({"tool_choice": ""}, "tool_choice must be a non-empty string"),
        ({"tool_choice": "required"}, "tool_choice 'required' but agent 'a' has no tools"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_build(
    settings: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(AgentConfigError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        agent(**settings)


def test_settings_a_model_of_the_chain_cannot_honour_are_refused_at_build() -> None:
    claude = AnthropicModel("claude-sonnet-4-20250514", api_key="k")
    ollama = OpenAIChatModel("qwen2.5:1.5b", server="ollama", api_key="")
    with pytest.raises(AgentConfigError, match="no seed"):
        agent(fallback_models=[claude], sampling=Sampling(seed=1))
    with pytest.raises(AgentConfigError, match="ollama server ignores tool_choice"):
        agent(model=ollama, tools=[lookup_order], tool_choice="lookup_order", prices=_free(ollama))
    fine = agent(
        model=ollama,
        tools=[lookup_order, cancel_order],
        tool_choice="none",
        sampling=Sampling(temperature=0, top_p=1, stop=("\n",), seed=-(2**63)),
        prices=_free(ollama),
    )
    assert fine.tool_choice == "none"


def _free(model: Any) -> dict[str, Price]:
    return {model.name: Price.free()}


async def test_agent_calls_carry_the_settings_and_other_calls_do_not() -> None:
    model = ScriptedModel([reply("Hi.")])
    sampling = Sampling(temperature=0.3, stop=("END",))
    configured = Agent(
        name="a", model=model, tools=[lookup_order], tool_choice="lookup_order", sampling=sampling
    )
    async with MemoryEventStore() as store, Engine(store, ids=SequentialIds()) as engine:
        await engine.run(configured, "Hello", run_id="r1")
        state = await engine.load("r1")

    [sent] = model.requests
    assert (sent.tool_choice, sent.sampling) == ("lookup_order", sampling)
    assert build_request(state, configured, "agent").sampling == sampling
    plain = Agent(name="a", model=model)
    assert build_request(state, plain, "agent").tool_choice == "auto"


def test_default_settings_keep_the_digest_of_before_settings() -> None:
    request = ModelRequest(messages=[UserMessage(content="Hello")], tools=[LOOKUP], max_tokens=99)
    before = hashlib.sha256(
        request_body(request) + b"\0" + b"lookup_order" + b"\0" + b"99"
    ).hexdigest()[:32]

    assert request_digest(request) == before
    assert request_digest(dataclasses.replace(request, temperature=0.0)) == before  # the judge's
    changed = {
        request_digest(dataclasses.replace(request, **change))
        for change in (
            {"tool_choice": "none"},
            {"tool_choice": "required"},
            {"sampling": Sampling(temperature=0.5)},
            {"sampling": Sampling(temperature=0.6)},
            {"sampling": Sampling(seed=1)},
            {"sampling": Sampling(stop=("x",))},
            {"output": LOOSE_ORDER},
        )
    }
    assert before not in changed and len(changed) == 7


async def test_replay_with_a_changed_setting_is_a_divergence() -> None:
    recorded = Agent(name="a", model=ScriptedModel([reply("Hi.")]), sampling=Sampling(seed=7))
    async with MemoryEventStore() as store, Engine(store, ids=SequentialIds()) as engine:
        await engine.run(recorded, "Hello", run_id="r1")
        same = await engine.replay("r1", agent=recorded)
        changed = await engine.replay(
            "r1", agent=dataclasses.replace(recorded, sampling=Sampling(seed=8))
        )

    assert same.matches
    assert changed.divergence is not None
    assert "request_digest" in str(changed.divergence)


@pytest.mark.parametrize(
    ("server", "fixture", "said"),
    [
        ("vllm", "vllm/error-400-auto-tool-choice.json", 'auto" tool choice requires'),
        ("ollama", "ollama/error-400-tool-arguments.json", "invalid tool call arguments"),
    ],
)
async def test_a_compatible_servers_400_is_a_request_error_naming_model_and_url(
    server: str, fixture: str, said: str
) -> None:
    model = OpenAIChatModel(
        "m",
        server=server,  # type: ignore[arg-type]
        base_url="http://gpu:8000/v1",
        client=Replies(400, load(fixture)).client(),
    )
    with pytest.raises(ModelRequestError) as caught:
        await model.complete(ModelRequest(messages=[UserMessage(content="Hi")], tools=[LOOKUP]))

    assert str(caught.value).startswith("m at http://gpu:8000/v1/chat/completions: HTTP 400: ")
    assert said in str(caught.value)
    assert not caught.value.retryable
