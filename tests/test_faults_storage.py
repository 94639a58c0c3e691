"""The storage-fault sweep of ``benchmarks/faults_storage.py``, small: one scenario on SQLite,
every fifth store operation failed once and for good (typed errors, a commit reported as
failed, a crash), the disk filled at every size, and projection checkpoint saves failed.
Nothing acknowledged is lost, no run is left without a clear status, nothing untyped escapes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from agentledger.engine import Agent, Engine, ToolContext, tool
from agentledger.engine.testing import FakeClock, Fault, FaultyStore, ScriptedModel, call, reply
from agentledger.events import MemoryEventStore, StoreUnavailableError

ROOT = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "faults_storage", ROOT / "benchmarks" / "faults_storage.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_store_faults_lose_nothing_and_leave_no_run_stuck(tmp_path: Path) -> None:
    sweep = _benchmark().sweep
    figures: dict[str, Any] = await sweep(
        workdir=tmp_path, scenarios=1, stride=5, projection_stride=4
    )
    assert figures["problems"] == []
    assert figures["runs"] >= 30
    assert figures["first_session"]["typed_error"] > 0 and figures["first_session"]["crash"] > 0
    for name in (
        "silent_losses",
        "stuck_runs",
        "untyped_errors",
        "duplicate_side_effects",
        "differs_from_reference",
        "invariant_violations",
    ):
        assert figures[name] == 0, name
    projection = figures["projection"]
    assert projection["silent_losses"] == 0
    assert projection["typed_errors"] > 0 and projection["crashes"] > 0


class Query(BaseModel):
    q: str


async def test_a_failed_read_of_tool_health_with_calls_in_parallel_raises_the_typed_error() -> None:
    @tool
    async def lookup(args: Query, ctx: ToolContext) -> str:
        """Look something up."""
        return args.q

    calls = [call("lookup", {"q": "a"}, id="c1"), call("lookup", {"q": "b"}, id="c2")]
    agent = Agent(name="a", model=ScriptedModel([reply(tool_calls=calls)]), tools=[lookup])
    # Without a run id nothing is read before the tools: the first read is the tool health's.
    store = FaultyStore(MemoryEventStore(), fail=Fault("read", at=1))
    async with store, Engine(store, clock=FakeClock()) as engine:
        with pytest.raises(StoreUnavailableError):  # not an ExceptionGroup around it
            await engine.run(agent, "Look both up.")
    assert [i.method for i in store.injected] == ["load_checkpoint"]
