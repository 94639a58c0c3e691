"""Sub-agents: an agent offered to another agent's model as a tool.

A ``SubAgentTool`` is a ``Tool`` like any other to the model (a name, a description, an argument
schema: ``{"task": "..."}``) and to validation, but it has no implementation of its own: the loop
sees the call is a sub-agent's and starts a child run of ``agent`` through the engine's
child-run port (tools sit below the loop and the façade, so a tool cannot drive a run itself).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ._tools import Tool, ToolContext


class SubAgentArgs(BaseModel):
    """What the model hands a sub-agent: the task, in words, as a user would ask it."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, description="The task for the sub-agent, self-contained.")


async def _delegated(args: SubAgentArgs, ctx: ToolContext) -> object:
    raise RuntimeError("a sub-agent runs as a child run of the engine, never as a tool tier")


class SubAgentTool(Tool[SubAgentArgs]):
    """A tool whose calls start a run of ``agent`` (an ``Agent``) as a child of the calling run.

    Made by ``subagent(agent, ...)``. The child runs for the same user and surface as the
    parent, within what is left of the parent's run cap; its answer (or why it has none), its
    run id and its cost are the call's result.
    """

    __slots__ = ("agent",)
    agent: Any

    def __init__(self, agent: Any, *, name: str, description: str) -> None:
        super().__init__(_delegated, name=name, description=description)
        object.__setattr__(self, "agent", agent)

    def __repr__(self) -> str:
        return f"<SubAgentTool {self.name} agent={getattr(self.agent, 'name', '?')!r}>"
