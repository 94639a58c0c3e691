"""A copy of an agent whose models and tools must not be touched: what a replay is checked with.

The copy has the same names, prices, prompts and tool contracts as the agent (so it asks for the
same things and replays the same run), but every model call, tool tier and reconcile hook
records that it was touched and raises ``UnexpectedCall``, a ``BaseException`` that no model's
or tool's error handling records as a failure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agentledger.engine._agent import Agent
from agentledger.engine.models._model import Model, ModelReply, ModelRequest
from agentledger.engine.models._pricing import Price
from agentledger.engine.tools._subagent import SubAgentTool
from agentledger.engine.tools._tools import Reconciled, Tool, ToolContext


class UnexpectedCall(BaseException):
    """Raised when a replay calls a model, runs a tool or asks a reconcile hook: it must answer
    every one of them from the recording."""


class _TrippingModel:
    """A model of the same name and price that fails if asked anything."""

    def __init__(self, name: str, price: Price, touched: list[str]) -> None:
        self._name = name
        self.price = price
        self._touched = touched

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelReply:
        what = f"called model {self._name!r}"
        self._touched.append(what)
        raise UnexpectedCall(what)


def _tripping_tool(tool: Tool[Any], touched: list[str]) -> Tool[Any]:
    if isinstance(tool, SubAgentTool) and isinstance(tool.agent, Agent):
        # A sub-agent's run is replayed with the copy of its agent: guarded the same way.
        child = _tripwired(tool.agent, touched)
        return SubAgentTool(child, name=tool.name, description=tool.description)

    async def tier(args: Any, ctx: ToolContext) -> object:
        what = f"ran tier {ctx.tier!r} of tool {tool.name!r}"
        touched.append(what)
        raise UnexpectedCall(what)

    async def reconcile(args: Any, ctx: ToolContext) -> Reconciled:
        what = f"asked the reconcile hook of tool {tool.name!r}"
        touched.append(what)
        raise UnexpectedCall(what)

    copy = tool.with_implementations([(name, tier) for name in tool.tier_names])
    if tool.has_reconciler:
        # The hook's declaration is checked against the tool's argument model.
        reconcile.__annotations__ = {
            "args": tool.args_model,
            "ctx": ToolContext,
            "return": Reconciled,
        }
        copy.reconciler(reconcile)
    return copy


def tripwired(agent: Agent) -> tuple[Agent, list[str]]:
    """A copy of ``agent`` whose models and tools raise ``UnexpectedCall`` when touched, and
    the list each touch is described in (its sub-agents' agents are such copies too)."""
    touched: list[str] = []
    return _tripwired(agent, touched), touched


def _tripwired(agent: Agent, touched: list[str]) -> Agent:
    copies: dict[int, Model] = {}

    def trip(model: Model) -> Model:
        # One model in several roles stays one model.
        if id(model) not in copies:
            copies[id(model)] = _TrippingModel(model.name, agent.price_of(model), touched)
        return copies[id(model)]

    critic = agent.critic
    if critic is not None and critic.judge is not None:
        judge = dataclasses.replace(critic.judge, model=trip(critic.judge.model))
        critic = dataclasses.replace(critic, judge=judge)
    guarded = dataclasses.replace(
        agent,
        model=trip(agent.model),
        fallback_models=[trip(m) for m in agent.fallback_models],
        summary_model=None if agent.summary_model is None else trip(agent.summary_model),
        critic=critic,
        tools=[_tripping_tool(t, touched) for t in agent.tools],
    )
    return guarded
