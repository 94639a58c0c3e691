"""Tools that misbehave: timeouts hold, blocking is isolated or reported, nothing leaks, and
results are bounded before an event is built. (The figures are in benchmarks/faults_tools.py.)

Timing bounds are loose on purpose: the machine is shared; what is asserted is the kind of
outcome (a timeout, never a success after it) and an order of magnitude.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    InvalidInputError,
    ModelReply,
    ModelRequest,
    Reconciled,
    Tool,
    ToolContext,
    tool,
)
from agentledger.engine.loop._live import LiveTools
from agentledger.engine.loop._ports import SystemClock
from agentledger.engine.loop._tool_tasks import ToolTasks
from agentledger.engine.policies._sizes import SizePolicy
from agentledger.engine.testing import ScriptedModel, call, reply
from agentledger.engine.tools._isolation import tool_threads
from agentledger.events import (
    Event,
    MemoryEventStore,
    SqliteEventStore,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolTierFailed,
)

TIMEOUT = 0.3


class Hold(BaseModel):
    seconds: float


@tool
async def shields(args: Hold, ctx: ToolContext) -> str:
    """Waits in a shielded scope."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(args.seconds)
    return "finished"


@tool
async def swallows(args: Hold, ctx: ToolContext) -> str:
    """Waits, swallowing every cancellation."""
    end = time.monotonic() + args.seconds
    while (left := end - time.monotonic()) > 0:
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(left)
    return "finished"


@tool
async def blocks_the_loop(args: Hold, ctx: ToolContext) -> str:
    """Blocks the event loop."""
    time.sleep(args.seconds)  # noqa: ASYNC251 - the misbehaviour under test
    return "finished"


@tool(isolation="thread")
def sleeps_in_thread(args: Hold, ctx: ToolContext) -> dict[str, Any]:
    """Blocks, in a thread of its own."""
    time.sleep(args.seconds)
    return {"slept": args.seconds, "run": ctx.run_id}


@tool(isolation="process")
def sleeps_in_process(args: Hold, ctx: ToolContext) -> dict[str, Any]:
    """Sleeps in a process of its own, then answers or fails."""
    if args.seconds < 0:
        raise ValueError("a negative time")
    time.sleep(args.seconds)
    print("this goes to stderr, not into the answer")
    return {"slept": args.seconds, "pid": os.getpid(), "run": ctx.run_id}


class Size(BaseModel):
    size: int


@tool
async def huge(args: Size, ctx: ToolContext) -> dict[str, str]:
    """Returns a large object."""
    return {"text": "y" * args.size}


def _agent(bad: Tool[Any], arguments: dict[str, Any]) -> Agent:
    def answer(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("done")
        return reply(tool_calls=[call(bad.name, arguments, id="c1")])

    return Agent(
        name=f"t-{bad.name}", model=ScriptedModel(answer), tools=[bad], tool_timeout=TIMEOUT
    )


async def _run(
    tmp_path: Path, agent: Agent, db: str = "t.db", **engine: Any
) -> tuple[list[Event], float, float]:
    """Run once; the events of the run, seconds until ``run`` returned, and until closed."""
    started = time.monotonic()
    async with SqliteEventStore(tmp_path / db) as store:
        async with Engine(store, **engine) as running:
            result = await running.run(agent, "go")
            returned = time.monotonic() - started
        closed = time.monotonic() - started
        events = [r.event for r in await store.read_stream(f"run-{result.run_id}")]
    return events, returned, closed


def _timed_out(events: list[Event]) -> ToolTierFailed:
    assert not any(isinstance(e, ToolCallSucceeded) for e in events)
    failed = [e for e in events if isinstance(e, ToolTierFailed)]
    assert [f.error_type for f in failed] == ["TimeoutError"]
    return failed[0]


@pytest.mark.parametrize("bad", [shields, swallows], ids=["shields", "swallows"])
async def test_a_tool_that_ignores_cancellation_is_recorded_as_timed_out_at_its_deadline(
    tmp_path: Path, bad: Tool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentledger")
    tasks_before = len(asyncio.all_tasks())
    events, returned, closed = await _run(tmp_path, _agent(bad, {"seconds": 1.5}))

    failed = _timed_out(events)
    assert failed.message == f"no result within {TIMEOUT:g}s"
    assert failed.duration_ms < (TIMEOUT + 0.7) * 1000  # the tool went on for 1.5 s
    assert returned < 1.2
    # The close waited (bounded) for the abandoned call, which then ended: nothing is left.
    assert closed < 1.5 + 1.5
    assert len(asyncio.all_tasks()) == tasks_before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if bad is swallows:  # it went on after its cancellation: named in a warning
        assert any(
            "tool 'swallows' (run" in w and "ignores or shields cancellation" in w for w in warnings
        ), warnings
    else:
        # anyio's shield does not hold against the cancellation of the task it runs in, so
        # this one stopped at its deadline.
        assert warnings == []


async def test_a_blocking_async_tool_is_a_timeout_and_the_watchdog_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentledger")
    events, _, _ = await _run(
        tmp_path, _agent(blocks_the_loop, {"seconds": 0.8}), loop_block_warning=0.3
    )

    _timed_out(events)  # it returned after its deadline: not taken as a success
    blocked = [r.getMessage() for r in caplog.records if r.name == "agentledger.engine.loop"]
    assert len(blocked) == 1, blocked
    assert "the event loop was blocked for" in blocked[0]
    assert "tool 'blocks_the_loop'" in blocked[0]


async def test_the_watchdog_stays_quiet_when_nothing_blocks_and_can_be_turned_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentledger")
    await _run(tmp_path, _agent(sleeps_in_thread, {"seconds": 0.05}), loop_block_warning=0.3)
    unwatched = _agent(blocks_the_loop, {"seconds": 0.5})
    await _run(tmp_path, unwatched, "unwatched.db", loop_block_warning=None)

    assert [r for r in caplog.records if r.name == "agentledger.engine.loop"] == []


async def test_a_blocking_tool_in_a_thread_times_out_without_stalling_other_runs(
    tmp_path: Path,
) -> None:
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.monotonic()
            await anyio.sleep(0.01)
            gaps.append(time.monotonic() - before)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        events, returned, _ = await _run(tmp_path, _agent(sleeps_in_thread, {"seconds": 1}))
        done.set()

    _timed_out(events)
    assert returned < 0.9
    assert max(gaps) < 0.25  # the loop went on (a blocked loop would show ~1 s)
    # The engine's close waited for the thread, which ended when its function returned.
    assert tool_threads() == []


async def test_a_thread_tool_answers_like_any_tool(tmp_path: Path) -> None:
    events, _, _ = await _run(tmp_path, _agent(sleeps_in_thread, {"seconds": 0}))

    [succeeded] = [e for e in events if isinstance(e, ToolCallSucceeded)]
    assert succeeded.result == {"slept": 0, "run": succeeded.run_id}


async def test_a_process_tool_answers_fails_and_is_killed_at_its_deadline(
    tmp_path: Path,
) -> None:
    agent = _agent(sleeps_in_process, {"seconds": 0})
    agent = Agent(name=agent.name, model=agent.model, tools=agent.tools, tool_timeout=10)
    events, _, _ = await _run(tmp_path, agent)
    [succeeded] = [e for e in events if isinstance(e, ToolCallSucceeded)]
    assert isinstance(succeeded.result, dict)
    assert succeeded.result["pid"] != os.getpid()
    assert succeeded.result["run"] == succeeded.run_id

    failing = _agent(sleeps_in_process, {"seconds": -1})
    failing = Agent(name=failing.name, model=failing.model, tools=failing.tools, tool_timeout=10)
    events, _, _ = await _run(tmp_path, failing, "failing.db")
    [failed] = [e for e in events if isinstance(e, ToolTierFailed)]
    assert (failed.error_type, failed.message) == ("ValueError", "a negative time")

    hanging = _agent(sleeps_in_process, {"seconds": 3600})
    events, returned, _ = await _run(tmp_path, hanging, "hanging.db")
    _timed_out(events)
    assert returned < 1.5
    assert _children() == []  # killed at the deadline, not at the close


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == me:
                    found.append(int(entry))
    return found


def test_isolation_is_declared_with_the_right_kind_of_function() -> None:
    async def coroutine(args: Hold, ctx: ToolContext) -> str:
        """An async function."""
        return ""

    def plain(args: Hold, ctx: ToolContext) -> str:
        """A plain function, but local."""
        return ""

    with pytest.raises(TypeError, match="must be a plain def function with isolation='process'"):
        tool(isolation="process")(coroutine)
    with pytest.raises(TypeError, match="must be a plain def function with isolation='thread'"):
        tool(isolation="thread")(coroutine)
    with pytest.raises(TypeError, match="must be an async def function"):
        tool(plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="defined at module level"):
        tool(isolation="process")(plain)
    with pytest.raises(TypeError, match="isolation must be one of"):
        tool(isolation="fork")(plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tier 'backup'"):
        sleeps_in_thread.tier("backup")(coroutine)
    assert tool(isolation="thread")(plain).isolation == "thread"


async def test_a_huge_result_is_cut_before_an_event_is_built() -> None:
    sizes = SizePolicy(max_tool_result=4096)
    live = LiveTools({"huge": huge}, SystemClock(), 5.0, sizes)
    intended = ToolCallIntended(
        run_id="r", span_id="s", at=datetime.now(UTC), call_id="c", tool_name="huge"
    )
    outcome = await live.run_tier(intended, "primary", Size(size=3_000_000), "u", "t")

    assert isinstance(outcome, ToolCallSucceeded)
    assert outcome.result == sizes.cut_result({"text": "y" * 3_000_000})
    assert isinstance(outcome.result, dict) and outcome.result["truncated"] is True
    small = await live.run_tier(intended, "primary", Size(size=10), "u", "t")
    assert isinstance(small, ToolCallSucceeded) and small.result == {"text": "y" * 10}


class Order(BaseModel):
    item: str


@tool(side_effect=True)
async def order(args: Order, ctx: ToolContext) -> str:
    """Orders an item."""
    return "ordered"


@order.reconciler
async def _order_reconciler(args: Order, ctx: ToolContext) -> Reconciled:
    end = time.monotonic() + 1.5
    while (left := end - time.monotonic()) > 0:
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(left)
    return Reconciled.done("ordered")


async def test_a_reconcile_hook_that_ignores_cancellation_cannot_tell_at_its_deadline() -> None:
    tasks = ToolTasks()
    live = LiveTools({"order": order}, SystemClock(), TIMEOUT, tasks=tasks)
    intended = ToolCallIntended(
        run_id="r", span_id="s", at=datetime.now(UTC), call_id="c", tool_name="order"
    )
    started = time.monotonic()
    found = await live.reconcile(intended, Order(item="book"), "u")

    assert time.monotonic() - started < TIMEOUT + 0.7
    assert found.found == "unknown"
    assert found.message == (
        f"the reconcile hook failed: TimeoutError: no result within {TIMEOUT:g}s"
    )
    assert len(tasks) == 1  # abandoned, still going, kept track of
    await tasks.aclose(2.0)
    assert len(tasks) == 0


async def test_closing_waits_a_bounded_time_and_names_a_call_that_will_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentledger")
    tasks, release = ToolTasks(), anyio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    with pytest.raises(TimeoutError):
        await tasks.call(stubborn, seconds=0.05, label="tool 'stubborn' (run 'r')")
    started = time.monotonic()
    await tasks.aclose(0.2)

    assert 0.2 <= time.monotonic() - started < 1.0
    assert len(tasks) == 1
    assert any(
        "1 tool call(s) still running 0.2s after the engine closed" in r.getMessage()
        and "tool 'stubborn' (run 'r')" in r.getMessage()
        for r in caplog.records
    )
    release.set()
    await tasks.aclose(1.0)
    assert len(tasks) == 0


def test_the_watchdog_threshold_must_be_positive_seconds_or_none() -> None:
    store = MemoryEventStore()
    for bad in (0, -1, float("inf"), float("nan"), "1"):
        with pytest.raises(InvalidInputError, match="loop_block_warning"):
            Engine(store, loop_block_warning=bad)  # type: ignore[arg-type]
    Engine(store, loop_block_warning=None)
    Engine(store, loop_block_warning=2)
