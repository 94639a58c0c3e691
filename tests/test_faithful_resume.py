"""The log is the whole truth: resume and replay cannot drift from what was recorded.

Each test is a scenario as a user meets it: a crash during a back-off, a breaker that another
engine tripped and a replay of the run that skipped, two identical side effects in one reply, a
resumed turn whose calls settle in another order, a run id driven twice, a resume while a side
effect of the run is still in flight elsewhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    BreakerPolicy,
    Engine,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Reconciled,
    RetryPolicy,
    RunActiveError,
    RunBusyError,
    RunResult,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    EventStore,
    MemoryEventStore,
    ModelCallRequested,
    RecordedEvent,
    SqliteEventStore,
    ToolResultReused,
    ToolTierSkipped,
)
from agentledger.replay import NondeterminismError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


async def crash_when(entered: anyio.Event, work: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run ``work`` and cut it off, like a process dying, once ``entered`` is set."""
    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await entered.wait()
            crash.cancel()


class StallOnSleep(FakeClock):
    """A fake clock whose ``stall_at``-th back-off never ends: the process dies in it."""

    def __init__(self, stall_at: int, start: datetime = T0) -> None:
        super().__init__(start)
        self.stall_at = stall_at
        self.stalled = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if len(self.slept) == self.stall_at:
            self.stalled.set()
            await anyio.Event().wait()


# -- retries and fallbacks across crashes --------------------------------------------------------


async def _crash_twice(agent: Agent) -> tuple[RunResult, list[RecordedEvent]]:
    async with MemoryEventStore() as store:
        # First process: dies in the back-off after the primary's second attempt.
        first = StallOnSleep(stall_at=2)
        async with Engine(store, clock=first, ids=SequentialIds("a")) as engine:
            await crash_when(first.stalled, lambda: engine.run(agent, "Hello", run_id="r1"))
        # Second process: the primary's third attempt fails, the call falls back, and the
        # process dies in the back-off after the backup's first attempt.
        second = StallOnSleep(stall_at=1, start=T0 + timedelta(seconds=5))
        async with Engine(store, agents=[agent], clock=second, ids=SequentialIds("b")) as engine:
            await crash_when(second.stalled, lambda: engine.resume("r1"))
        # Third process: the backup's second attempt answers.
        third = FakeClock(T0 + timedelta(seconds=10))
        async with Engine(store, agents=[agent], clock=third, ids=SequentialIds("c")) as engine:
            result = await engine.resume("r1")
        return result, await store.read_stream("run-r1")


async def test_three_attempts_are_three_in_all_across_crashes_and_a_fallback_resumes_there() -> (
    None
):
    boom = ModelServerError
    primary = ScriptedModel([boom("primary", "down", status_code=503)] * 3, name="primary")
    backup = ScriptedModel([boom("backup", "down", status_code=503), reply("Hi.")], name="backup")
    agent = Agent(
        name="a", model=primary, fallback_models=[backup], retry=RetryPolicy(max_attempts=3)
    )
    with anyio.fail_after(10):
        result, events = await _crash_twice(agent)
    assert (result.status, result.output) == ("completed", "Hi.")
    requested = [r.event for r in events if isinstance(r.event, ModelCallRequested)]
    assert [(r.model, r.attempt) for r in requested] == [
        ("primary", 1),
        ("primary", 2),
        ("primary", 3),
        ("backup", 1),
        ("backup", 2),
    ]
    assert (len(primary.requests), len(backup.requests)) == (3, 2)
    assert types(events).count("model_fell_back") == 1
    assert types(events).count("turn_started") == 1


# -- the breaker is the store's, and its skips replay --------------------------------------------


class City(BaseModel):
    city: str


def flaky_weather(executions: list[str]) -> Any:
    @tool(name="weather")
    async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
        """The weather in a city."""
        executions.append("primary")
        raise ConnectionError("weather API down")

    @weather.tier("cache")
    async def cached(args: City, ctx: ToolContext) -> dict[str, str]:
        executions.append("cache")
        return {"city": args.city, "sky": "clear"}

    return weather


def weather_agent(executions: list[str], *, threshold: int = 2) -> tuple[Agent, ScriptedModel]:
    def script(request: ModelRequest) -> ModelReply:
        if request.messages[-1].role == "tool":
            return reply("Clear.")
        return reply(tool_calls=[call("weather", {"city": "Oslo"}, id="c1")])

    model = ScriptedModel(script)
    breaker = BreakerPolicy(threshold=threshold, cooldown=timedelta(hours=1))
    agent = Agent(
        name="forecaster", model=model, tools=[flaky_weather(executions)], breaker=breaker
    )
    return agent, model


async def test_a_breaker_tripped_by_one_engine_is_seen_by_another_and_its_skip_replays(
    store: EventStore,
) -> None:
    executions: list[str] = []
    agent, model = weather_agent(executions)
    async with Engine(store, clock=FakeClock(T0), ids=SequentialIds("a")) as tripping:
        await tripping.run(agent, "Oslo?", run_id="r1")
        await tripping.run(agent, "Oslo?", run_id="r2")
    assert executions == ["primary", "cache", "primary", "cache"]
    # Another engine (another process) on the same store: the primary tier is skipped.
    async with Engine(store, clock=FakeClock(T0), ids=SequentialIds("b")) as other:
        result = await other.run(agent, "Oslo?", run_id="r3")
        events = await store.read_stream("run-r3")
        assert result.status == "completed"
        assert executions[4:] == ["cache"]
        (skip,) = [r.event for r in events if isinstance(r.event, ToolTierSkipped)]
        # The skip records the health it saw: two failures in a row, the last at T0.
        assert (skip.tier, skip.failures_in_a_row, skip.last_failure_at) == ("primary", 2, T0)
        assert skip.until == T0 + timedelta(hours=1)

        calls, ran = len(model.requests), len(executions)
        report = await other.replay("r3", agent=agent)
    assert report.matches, report.divergence
    assert (len(model.requests), len(executions)) == (calls, ran)
    assert types(report.replayed) == types(events)


async def test_a_divergence_in_a_tool_is_reported_never_recorded_as_its_failure() -> None:
    executions: list[str] = []
    agent, _ = weather_agent(executions, threshold=100)
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        await engine.run(agent, "Oslo?", run_id="r1")
        recorded = await store.read_stream("run-r1")

        @tool(name="weather")
        async def weather(args: City, ctx: ToolContext) -> dict[str, str]:
            """The weather in a city."""
            raise ConnectionError("weather API down")

        @weather.tier("mirror")  # the fallback tier was renamed since the run was recorded
        async def mirror(args: City, ctx: ToolContext) -> dict[str, str]:
            return {"city": args.city, "sky": "clear"}

        changed = Agent(
            name="forecaster", model=agent.model, tools=[weather], breaker=agent.breaker
        )
        report = await engine.replay("r1", agent=changed)

    divergence = report.divergence
    assert divergence is not None
    cache_success = next(
        r for r in recorded if r.event.type == "tool_call_succeeded" and r.event.tier == "cache"
    )
    assert divergence.version == cache_success.version
    assert divergence.expected is not None and divergence.expected["tier"] == "cache"
    assert divergence.actual == {"call_id": "c1", "tier": "mirror"}
    # The replay's question about "mirror" was not taken for a failure of that tier.
    assert not any(
        r.event.type == "tool_tier_failed" and r.event.tier == "mirror" for r in report.replayed
    )
    with pytest.raises(NondeterminismError, match="mirror"):
        report.check()


# -- side effects: once per key, in one reply too, and claimed before they are settled ---------


class Email(BaseModel):
    to: str
    body: str


class Outbox:
    """A mail service outside the store that counts deliveries by idempotency key."""

    def __init__(self) -> None:
        self.delivered: dict[str, int] = {}
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()

    def tool(self, *, reconcile: bool = True) -> Any:
        @tool(name="send_email", side_effect=True)
        async def send_email(args: Email, ctx: ToolContext) -> dict[str, object]:
            """Send an email."""
            self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            assert ctx.idempotency_key is not None
            self.delivered[ctx.idempotency_key] = self.delivered.get(ctx.idempotency_key, 0) + 1
            return {"sent_to": args.to}

        if reconcile:

            @send_email.reconciler
            async def sent_already(args: Email, ctx: ToolContext) -> Reconciled:
                assert ctx.idempotency_key is not None
                if ctx.idempotency_key in self.delivered:
                    return Reconciled.done({"sent_to": args.to})
                return Reconciled.not_done()

        return send_email


def mailing_model(*calls: Any) -> ScriptedModel:
    def script(request: ModelRequest) -> ModelReply:
        results = [m for m in request.messages if m.role == "tool"]
        if results:
            return reply("Sent: " + " | ".join(m.content for m in results))
        return reply(tool_calls=list(calls))

    return ScriptedModel(script)


EMAIL = {"to": "ann@x.org", "body": "Hi"}


async def test_two_identical_side_effects_in_one_reply_run_once() -> None:
    outbox = Outbox()
    model = mailing_model(call("send_email", EMAIL, id="c1"), call("send_email", EMAIL, id="c2"))
    agent = Agent(name="mailer", model=model, tools=[outbox.tool()])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        result = await engine.run(agent, "Mail Ann", run_id="r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    assert list(outbox.delivered.values()) == [1]
    assert types(events)[4:7] == ["tool_call_intended", "tool_call_succeeded", "tool_result_reused"]
    reused = events[6].event
    assert isinstance(reused, ToolResultReused)
    assert (reused.call_id, reused.original_call_id, reused.original_run_id) == ("c2", "c1", "r1")
    # The model sees both calls answered, in its order, with the one result.
    tool_messages = [m for m in model.requests[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["c1", "c2"]
    assert [json.loads(m.content)["result"] for m in tool_messages] == [
        {"sent_to": "ann@x.org"}
    ] * 2


async def crash_during_delivery(store: EventStore, outbox: Outbox, agent: Agent) -> None:
    """Run ``agent`` until its delivery is under way, then cut it off (the delivery never lands)."""
    outbox.gate = anyio.Event()  # never set: the first process dies waiting
    async with Engine(store, clock=FakeClock(T0), ids=SequentialIds("crashed")) as engine:
        await crash_when(outbox.entered, lambda: engine.run(agent, "Mail Ann", run_id="r1"))
    outbox.gate = None
    outbox.entered = anyio.Event()


async def test_a_resume_while_a_side_effect_may_still_run_elsewhere_waits_for_its_deadline() -> (
    None
):
    outbox = Outbox()
    agent = Agent(
        name="mailer",
        model=mailing_model(call("send_email", EMAIL, id="c1")),
        tools=[outbox.tool()],
        tool_timeout=10,
    )
    async with MemoryEventStore() as store:
        await crash_during_delivery(store, outbox, agent)
        # The same moment, another engine: the delivery may still be in flight over there.
        clock = FakeClock(T0)
        async with Engine(store, agents=[agent], clock=clock, ids=SequentialIds("b")) as engine:
            with pytest.raises(RunBusyError) as busy:
                await engine.resume("r1")
            assert busy.value.retry_at == T0 + timedelta(seconds=11)  # its time limit + 1 s
            assert outbox.delivered == {}
            clock.advance(11)
            result = await engine.resume("r1")
        events = await store.read_stream("run-r1")
    assert result.status == "completed"
    assert list(outbox.delivered.values()) == [1]
    assert types(events)[4:10] == [
        "tool_call_intended",
        "run_resumed",
        "tool_call_claimed",
        "tool_call_reconciled",  # not done: it runs now, with the same key
        "tool_call_succeeded",
        "turn_started",
    ]


async def test_of_two_sessions_resuming_one_run_only_the_first_claim_settles_the_side_effect() -> (
    None
):
    outbox = Outbox()
    agent = Agent(
        name="mailer",
        model=mailing_model(call("send_email", EMAIL, id="c1")),
        tools=[outbox.tool()],
    )
    async with MemoryEventStore() as store:
        await crash_during_delivery(store, outbox, agent)
        outbox.gate = anyio.Event()
        outcomes: list[str] = []

        async def resume(prefix: str, clock: FakeClock) -> None:
            ids = SequentialIds(prefix)
            async with Engine(store, agents=[agent], clock=clock, ids=ids) as engine:
                try:
                    outcomes.append((await engine.resume("r1", takeover=True)).status)
                except RunBusyError:
                    outcomes.append("busy")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(resume, "a", FakeClock(T0))
                await outbox.entered.wait()  # the first session claimed it and is delivering
                # A second session (that knows no better than to take over) finds it claimed.
                late = FakeClock(T0 + timedelta(seconds=1))
                async with Engine(store, agents=[agent], clock=late) as engine:
                    with pytest.raises(RunBusyError):
                        await engine.resume("r1")
                outbox.gate.set()
        events = await store.read_stream("run-r1")
    assert outcomes == ["completed"]
    assert list(outbox.delivered.values()) == [1]
    assert types(events).count("tool_call_claimed") == 1


async def test_a_resumed_turn_gives_its_results_in_call_order_whatever_settled_first() -> None:
    delivered_first = Outbox()

    class Note(BaseModel):
        text: str

    entered = anyio.Event()
    gate: list[anyio.Event] = [anyio.Event()]

    @tool(name="log_note", side_effect=True, retry_safe=True)
    async def log_note(args: Note, ctx: ToolContext) -> str:
        """Write a note (the external log dedupes by key, so it may be run again)."""
        await delivered_first.entered.wait()  # the email of the same turn has gone out
        entered.set()
        await gate[0].wait()
        return f"noted {args.text}"

    model = mailing_model(
        call("log_note", {"text": "s1"}, id="c1"), call("send_email", EMAIL, id="c2")
    )
    send = delivered_first.tool()
    agent = Agent(name="mixed", model=model, tools=[log_note, send])

    # The uninterrupted run, for reference.
    gate[0].set()
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        reference = await engine.run(agent, "Note and mail", run_id="ref")

    # The crashed run: the email went out, the note did not; the crash came before either was
    # recorded.
    gate[0] = anyio.Event()
    entered = anyio.Event()
    delivered_first.entered = anyio.Event()
    async with MemoryEventStore() as store:
        async with Engine(store, clock=FakeClock(T0), ids=SequentialIds("a")) as engine:
            await crash_when(entered, lambda: engine.run(agent, "Note and mail", run_id="r1"))
        gate[0].set()
        later = FakeClock(T0 + timedelta(minutes=5))
        async with Engine(store, agents=[agent], clock=later, ids=SequentialIds("b")) as engine:
            result = await engine.resume("r1")
        events = await store.read_stream("run-r1")

    # The note (c1) is run again, the email (c2) is found sent by its reconcile hook: recorded
    # in the order of the calls, and the model gets the results in that order too.
    settled = [
        (r.event.call_id, r.event.tier) for r in events if r.event.type == "tool_call_succeeded"
    ]
    assert settled == [("c1", "primary"), ("c2", "reconciled")]
    tool_messages = [m for m in model.requests[-1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["c1", "c2"]
    assert result.output == reference.output
    assert sum(delivered_first.delivered.values()) == 2  # one per run: the reference's and r1's


# -- one run, one driver ---------------------------------------------------------------------------


class HangingModel:
    """A provider that takes the request and never answers, counting requests."""

    name = "hanging"

    def __init__(self) -> None:
        from agentledger.engine import Price

        self.price = Price.free()
        self.requests = 0
        self.called = anyio.Event()

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests += 1
        self.called.set()
        await anyio.Event().wait()
        raise AssertionError("unreachable")


async def test_one_engine_refuses_to_drive_one_run_twice() -> None:
    model = HangingModel()
    agent = Agent(name="a", model=model)
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock(T0)) as engine:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: engine.run(agent, "Hello", run_id="X"))
                await model.called.wait()
                with pytest.raises(RunActiveError, match="'X'"):
                    await engine.run(agent, "Hello again", run_id="X")
                with pytest.raises(RunActiveError, match="'X'"):
                    await engine.resume("X", agent=agent)
                assert model.requests == 1
                await engine.cancel("X")
        assert (await engine.result("X")).status == "cancelled"
    assert model.requests == 1


# -- two processes resuming one run ------------------------------------------------------------


RESUMER = Path(__file__).with_name("resume_worker.py")


async def _crash_mid_delivery(events_db: Path) -> None:
    """Record run r1 up to a delivery that was intended and never landed (the process died)."""
    sys.path.insert(0, str(RESUMER.parent))
    try:
        import resume_worker
    finally:
        sys.path.pop(0)
    entered = anyio.Event()

    @tool(name="deliver", side_effect=True)
    async def hangs(args: resume_worker.Delivery, ctx: ToolContext) -> str:
        """Deliver a message."""
        entered.set()
        await anyio.Event().wait()
        return "unreachable"

    agent = Agent(name="courier", model=resume_worker.Courier(), tools=[hangs])
    # Long ago: the delivery's time limit has passed, so it is in doubt for whoever resumes.
    async with SqliteEventStore(events_db) as store, Engine(store, clock=FakeClock(T0)) as engine:
        await crash_when(entered, lambda: engine.run(agent, "Deliver", run_id="r1"))


@pytest.mark.skipif(os.name != "posix", reason="starts worker processes")
@pytest.mark.parametrize("round_", range(4))
def test_two_processes_resuming_one_run_deliver_once(tmp_path: Path, round_: int) -> None:
    events_db, service_db, go = tmp_path / "events.db", tmp_path / "service.db", tmp_path / "go"
    anyio.run(_crash_mid_delivery, events_db)
    workers = [
        subprocess.Popen(
            [sys.executable, str(RESUMER), str(events_db), str(service_db), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.0 + 0.05 * round_)  # let both import and open the store, then start them
    go.touch()
    outcomes = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        outcomes.append(out.strip())
    with sqlite3.connect(service_db) as service:
        counts = [n for (n,) in service.execute("SELECT count FROM deliveries")]
    # Exactly one delivery, whoever won; the other session stopped before running it (or found
    # the run already over).
    assert counts == [1], outcomes
    assert "completed" in outcomes, outcomes
    assert set(outcomes) <= {"completed", "conflict", "busy"}, outcomes
