"""Idempotent side effects (pattern 7): keys, reuse, retention, intents first, in-doubt calls.

In-doubt calls are made the way they happen: the process dies (an outer cancel scope cuts the
run off) while the tool runs, after its intent was written and before its outcome was; then a
new ``Engine`` resumes the run from the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    ModelReply,
    ModelRequest,
    Reconciled,
    RunBusyError,
    Tool,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, call, reply
from agentledger.events import (
    EventStore,
    MemoryEventStore,
    RecordedEvent,
    RunResumed,
    ToolCall,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolOutcomeUnknown,
    ToolResultReused,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KeyScope = Literal["run", "user"]


class EmailArgs(BaseModel):
    to: str
    body: str
    request_id: str = ""


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


def email_call(request_id: str = "req-1", *, id: str = "c1") -> ToolCall:
    return call("send_email", {"to": "ann@x.org", "body": "Hi", "request_id": request_id}, id=id)


class Outbox:
    """A mail service that remembers each send with the idempotency key it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    def tool(self, **options: Any) -> Tool[EmailArgs]:
        @tool(name="send_email", side_effect=True, volatile=["request_id"], **options)
        async def send_email(args: EmailArgs, ctx: ToolContext) -> dict[str, object]:
            """Send an email."""
            self.sent.append((ctx.run_id, ctx.idempotency_key))
            return {"message_id": f"m-{len(self.sent)}"}

        return send_email


def mail_model(first_call: ToolCall) -> ScriptedModel:
    def script(request: ModelRequest) -> ModelReply:
        last = request.messages[-1]
        if last.role == "tool":
            return reply(f"Result: {last.content}")
        return reply(tool_calls=[first_call])

    return ScriptedModel(script)


SEND_ONCE = [
    "run_started",
    "turn_started",
    "model_call_requested",
    "model_call_responded",
    "tool_call_intended",
    "tool_call_succeeded",
    "turn_started",
    "model_call_requested",
    "model_call_responded",
    "run_completed",
]


async def test_a_user_scoped_side_effect_runs_once_for_two_runs_of_that_user(
    store: EventStore,
) -> None:
    outbox = Outbox()
    send = outbox.tool(key_scope="user")
    first = Agent(name="mailer", model=mail_model(email_call("req-1")), tools=[send])
    # The second run sends the same email with another request id: a volatile field.
    second = Agent(name="mailer", model=mail_model(email_call("req-2")), tools=[send])
    async with Engine(store, clock=FakeClock(), ids=SequentialIds()) as engine:
        await engine.run(first, "Mail Ann", user_id="u1", run_id="r1")
        result = await engine.run(second, "Mail Ann again", user_id="u1", run_id="r2")
        # Another user is another scope.
        await engine.run(first, "Mail Ann", user_id="u2", run_id="r3")
    one = await store.read_stream("run-r1")
    two = await store.read_stream("run-r2")
    assert types(one) == SEND_ONCE
    assert types(two) == [*SEND_ONCE[:4], "tool_result_reused", *SEND_ONCE[6:]]
    intended, succeeded, reused = one[4].event, one[5].event, two[4].event
    assert isinstance(intended, ToolCallIntended) and isinstance(succeeded, ToolCallSucceeded)
    assert isinstance(reused, ToolResultReused)
    key = send.idempotency_key(
        {"to": "ann@x.org", "body": "Hi", "request_id": "anything"}, run_id="r9", user_id="u1"
    )
    assert key is not None and key.startswith("send_email:")
    assert intended.idempotency_key == succeeded.idempotency_key == reused.idempotency_key == key
    assert (intended.key_scope, intended.arguments["request_id"]) == ("user", "req-1")
    assert (reused.result, reused.original_run_id, reused.original_call_id) == (
        {"message_id": "m-1"},
        "r1",
        "c1",
    )
    assert result.output == 'Result: {"result":{"message_id":"m-1"},"status":"ok"}'
    # The body ran once for u1 (with the key forwarded) and once for u2.
    assert [run for run, _ in outbox.sent] == ["r1", "r3"]
    assert outbox.sent[0][1] == key and outbox.sent[1][1] not in (None, key)
    # The key's ledger holds the intent and the outcome; a reuse adds nothing.
    assert types(await store.read_stream(f"idem-{key}")) == [
        "tool_call_intended",
        "tool_call_succeeded",
    ]


async def test_a_run_scoped_side_effect_runs_again_in_another_run_but_not_in_its_own() -> None:
    outbox = Outbox()
    send = outbox.tool()  # key_scope="run"
    agent = Agent(name="mailer", model=mail_model(email_call()), tools=[send])
    repeat = Agent(
        name="mailer",
        model=ScriptedModel(
            [
                reply(tool_calls=[email_call(id="c1")]),
                reply(tool_calls=[email_call("req-9", id="c2")]),  # the model repeats itself
                reply("Sent."),
            ]
        ),
        tools=[send],
    )
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        await engine.run(agent, "Mail Ann", user_id="u1", run_id="r1")
        await engine.run(agent, "Mail Ann", user_id="u1", run_id="r2")
        await engine.run(repeat, "Mail Ann", user_id="u1", run_id="r3")
        three = await store.read_stream("run-r3")
    assert [run for run, _ in outbox.sent] == ["r1", "r2", "r3"]
    assert len({key for _, key in outbox.sent}) == 3
    assert [t for t in types(three) if t.startswith("tool_")] == [
        "tool_call_intended",
        "tool_call_succeeded",
        "tool_result_reused",
    ]


async def test_a_recorded_outcome_expires_after_the_retention() -> None:
    outbox = Outbox()
    send = outbox.tool(key_scope="user", retention=timedelta(hours=1))
    agent = Agent(name="mailer", model=mail_model(email_call()), tools=[send])
    clock = FakeClock(T0)
    async with MemoryEventStore() as store, Engine(store, clock=clock) as engine:
        await engine.run(agent, "Mail Ann", user_id="u1", run_id="r1")
        clock.advance(timedelta(minutes=59))
        await engine.run(agent, "Mail Ann", user_id="u1", run_id="r2")
        clock.advance(timedelta(minutes=2))
        await engine.run(agent, "Mail Ann", user_id="u1", run_id="r3")
        tools_of = [
            [t for t in types(await store.read_stream(f"run-{run}")) if t.startswith("tool_")]
            for run in ("r1", "r2", "r3")
        ]
        key = outbox.sent[0][1]
        ledger = types(await store.read_stream(f"idem-{key}"))
    assert [run for run, _ in outbox.sent] == ["r1", "r3"]
    assert outbox.sent[1][1] == key
    assert tools_of == [
        ["tool_call_intended", "tool_call_succeeded"],
        ["tool_result_reused"],
        ["tool_call_intended", "tool_call_succeeded"],
    ]
    assert ledger == ["tool_call_intended", "tool_call_succeeded"] * 2


async def test_the_intent_is_durable_before_the_side_effect_runs() -> None:
    seen_in_log: list[list[str]] = []
    async with MemoryEventStore() as store:

        @tool(side_effect=True)
        async def send_email(args: EmailArgs, ctx: ToolContext) -> str:
            """Send an email."""
            run = await store.read_stream(f"run-{ctx.run_id}")
            ledger = await store.read_stream(f"idem-{ctx.idempotency_key}")
            for events in (run, ledger):
                last = events[-1].event
                assert isinstance(last, ToolCallIntended)
                assert (last.call_id, last.idempotency_key) == (ctx.call_id, ctx.idempotency_key)
            seen_in_log.append(types(run))
            return "sent"

        agent = Agent(name="mailer", model=mail_model(email_call()), tools=[send_email])
        async with Engine(store, clock=FakeClock()) as engine:
            result = await engine.run(agent, "Mail Ann", run_id="r1")
    assert result.status == "completed"
    assert seen_in_log == [SEND_ONCE[:5]]


async def interrupt_when(
    entered: anyio.Event, work: Callable[[], Coroutine[Any, Any, object]]
) -> None:
    """Run ``work`` and cut it off, like a process dying, once ``entered`` is set."""
    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await entered.wait()
            crash.cancel()


async def crash_during_send(store: EventStore, *, key_scope: KeyScope = "run") -> str:
    """Leave run ``r1`` with a recorded intent to send and no outcome; return the key."""
    entered = anyio.Event()

    @tool(
        name="send_email",
        side_effect=True,
        volatile=["request_id"],
        key_scope=key_scope,
    )
    async def hangs(args: EmailArgs, ctx: ToolContext) -> str:
        """Send an email."""
        entered.set()
        await anyio.Event().wait()
        return "unreachable"

    agent = Agent(name="mailer", model=mail_model(email_call()), tools=[hangs])
    async with Engine(store, clock=FakeClock(), ids=SequentialIds("crashed")) as engine:
        await interrupt_when(entered, lambda: engine.run(agent, "Mail Ann", run_id="r1"))
    events = await store.read_stream("run-r1")
    assert types(events) == SEND_ONCE[:5]
    intent = events[-1].event
    assert isinstance(intent, ToolCallIntended) and intent.idempotency_key is not None
    return intent.idempotency_key


def in_doubt_tool(outbox: Outbox, variant: str, checked: list[str | None]) -> Tool[EmailArgs]:
    send = outbox.tool(retry_safe=variant == "retry_safe")
    answers = {
        "done": Reconciled.done({"message_id": "m-0"}),
        "not_done": Reconciled.not_done(),
        "unknown": Reconciled.unknown(),
    }
    if variant in answers or variant == "broken":

        @send.reconciler
        async def look(args: EmailArgs, ctx: ToolContext) -> Reconciled:
            checked.append(ctx.idempotency_key)
            if variant == "broken":
                raise RuntimeError("mail server unreachable")
            return answers[variant]

    return send


CLAIM, FOUND = "tool_call_claimed", "tool_call_reconciled"


@pytest.mark.parametrize(
    ("variant", "settling", "executed", "status"),
    [
        ("done", [CLAIM, FOUND, "tool_call_succeeded"], False, "ok"),
        ("not_done", [CLAIM, FOUND, "tool_call_succeeded"], True, "ok"),
        ("retry_safe", [CLAIM, "tool_call_succeeded"], True, "ok"),
        ("unknown", [CLAIM, FOUND, "tool_outcome_unknown"], False, "unknown_outcome"),
        ("broken", [CLAIM, FOUND, "tool_outcome_unknown"], False, "unknown_outcome"),
        ("neither", ["tool_outcome_unknown"], False, "unknown_outcome"),
    ],
)
async def test_an_in_doubt_side_effect_is_settled_on_resume(
    variant: str, settling: list[str], executed: bool, status: str
) -> None:
    outbox = Outbox()
    async with MemoryEventStore() as store:
        key = await crash_during_send(store)
        model = mail_model(email_call())
        checked: list[str | None] = []
        send = in_doubt_tool(outbox, variant, checked)
        agent = Agent(name="mailer", model=model, tools=[send])
        clock = FakeClock()
        async with Engine(store, agents=[agent], clock=clock, ids=SequentialIds()) as e:
            # Until the send's time limit it may still be running in the crashed process.
            with pytest.raises(RunBusyError) as busy:
                await e.resume("r1")
            assert busy.value.retry_at == FakeClock().now() + timedelta(seconds=31)
            assert outbox.sent == [] and checked == []
            clock.advance(31)
            result = await e.resume("r1")
        events = await store.read_stream("run-r1")
        ledger = types(await store.read_stream(f"idem-{key}"))

    assert result.status == "completed"
    settled = settling[-1]
    assert types(events) == [*SEND_ONCE[:5], "run_resumed", *settling, *SEND_ONCE[6:]]
    resumed, outcome = events[5].event, events[5 + len(settling)].event
    assert isinstance(resumed, RunResumed) and resumed.reason == "interrupted"
    intent = events[4].event
    assert isinstance(intent, ToolCallIntended)
    assert isinstance(outcome, ToolCallSucceeded | ToolOutcomeUnknown)
    assert (outcome.call_id, outcome.span_id, outcome.idempotency_key) == (
        intent.call_id,
        intent.span_id,
        key,
    )
    # Re-executed at most once, and only with the key of the intent, which a hook is given too.
    assert outbox.sent == ([("r1", key)] if executed else [])
    assert checked == ([key] if send.has_reconciler else [])
    if variant == "done":
        assert isinstance(outcome, ToolCallSucceeded)
        assert (outcome.tier, outcome.result) == ("reconciled", {"message_id": "m-0"})
    elif executed:
        assert isinstance(outcome, ToolCallSucceeded) and outcome.tier == "primary"
    (payload,) = [json.loads(m.content) for m in model.requests[0].messages if m.role == "tool"]
    assert payload["status"] == status
    assert ledger == ["tool_call_intended", settled]


async def test_a_cancelled_send_is_never_repeated_silently_by_a_later_run() -> None:
    outbox = Outbox()
    async with MemoryEventStore() as store:
        key = await crash_during_send(store, key_scope="user")
        agent = Agent(
            name="mailer",
            model=mail_model(email_call("req-2")),
            tools=[outbox.tool(key_scope="user")],
        )
        async with Engine(store, agents=[agent], clock=FakeClock(), ids=SequentialIds()) as e:
            # The crashed run is abandoned; a new run of the same user asks for the same email.
            result = await e.run(agent, "Mail Ann", user_id="anonymous", run_id="r2")
        events = await store.read_stream("run-r2")
    assert result.status == "completed"
    assert types(events) == [*SEND_ONCE[:4], "tool_outcome_unknown", *SEND_ONCE[6:]]
    unknown = events[4].event
    assert isinstance(unknown, ToolOutcomeUnknown) and unknown.idempotency_key == key
    assert outbox.sent == []


async def test_concurrent_runs_of_one_user_send_one_email(store: EventStore) -> None:
    outbox = Outbox()
    send = outbox.tool(key_scope="user")
    runs = 8
    async with Engine(store, clock=FakeClock(), ids=SequentialIds()) as engine:
        agents = [
            Agent(name="mailer", model=mail_model(email_call(f"req-{n}")), tools=[send])
            for n in range(runs)
        ]
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n, agent in enumerate(agents):
                    tg.start_soon(
                        partial(engine.run, agent, "Mail Ann", user_id="u1", run_id=f"r{n}")
                    )
        settled = [types(await store.read_stream(f"run-r{n}"))[4:-4] for n in range(runs)]
    assert len(outbox.sent) == 1
    # One run sent it; each other one reused its result or, while it was in flight, was told
    # the outcome is unknown. None sent a second email.
    assert settled.count(["tool_call_intended", "tool_call_succeeded"]) == 1
    assert all(
        s in (["tool_result_reused"], ["tool_outcome_unknown"])
        for s in settled
        if s != ["tool_call_intended", "tool_call_succeeded"]
    )
