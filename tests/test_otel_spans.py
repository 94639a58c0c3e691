"""The pure span builder: a run's log -> OpenTelemetry GenAI spans, without the SDK.

Every expectation is read from the log itself: a span's times are its events' recorded times
and durations, so the test fails if the builder invents or moves any of them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest
from otel_runs import paused_run, refused_run, rich_run

from agentledger.engine import Agent, BudgetPolicy, Budgets, Engine, ModelReply, ModelRequest, Price
from agentledger.engine.otel import SpanRecord, build_spans, run_trace_id, span_id_of
from agentledger.engine.testing import FakeClock, SequentialIds, reply
from agentledger.events import (
    MemoryEventStore,
    ModelCallFailed,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RunStarted,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolTierFailed,
)


def of_type(events: Sequence[RecordedEvent], tag: str) -> list[object]:
    return [r.event for r in events if r.type == tag]


def named(spans: Sequence[SpanRecord], prefix: str) -> list[SpanRecord]:
    return [s for s in spans if s.name.startswith(prefix)]


async def test_a_run_becomes_an_agent_span_with_its_model_attempts_and_tool_calls() -> None:
    async with MemoryEventStore() as store:
        await rich_run(store)
        events = await store.read_stream("run-r1")
    spans = build_spans(events)

    (root,) = named(spans, "invoke_agent")
    chats = named(spans, "chat ")
    tools = named(spans, "execute_tool")
    (tier,) = named(spans, "tool_tier")
    assert len(spans) == 1 + len(chats) + len(tools) + 1
    # The tree: every model attempt and tool call under the run; a failed tier under its call.
    assert {s.trace_id for s in spans} == {run_trace_id("r1")}
    assert root.parent_span_id is None and root.span_id == span_id_of("r1", "r1")
    assert {s.parent_span_id for s in chats + tools} == {root.span_id}
    (weather,) = [t for t in tools if t.attributes["gen_ai.tool.call.id"] == "c1"]
    assert tier.parent_span_id == weather.span_id
    assert len({s.span_id for s in spans}) == len(spans)
    assert {s.attributes["gen_ai.conversation.id"] for s in spans} == {"r1"}

    # The run: its first and last events' times, the conventions' names, the run's totals.
    started = of_type(events, "run_started")[0]
    assert isinstance(started, RunStarted)
    assert (root.start, root.end) == (started.at, events[-1].event.at)
    assert root.name == "invoke_agent forecaster" and root.kind == "internal"
    responses = of_type(events, "model_call_responded")
    assert all(isinstance(e, ModelCallResponded) for e in responses)
    assert {k: root.attributes[k] for k in _ROOT_KEYS} == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "forecaster",
        "gen_ai.conversation.id": "r1",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 320,
        "gen_ai.usage.output_tokens": 38,
        "agentledger.run.status": "completed",
        "agentledger.run.turns": 2,
        "agentledger.run.user_id": "u1",
    }
    cost = sum(float(e.cost_usd) for e in responses)  # type: ignore[attr-defined]
    assert cost > 0 and root.attributes["agentledger.cost_usd"] == pytest.approx(cost)
    assert root.status == "unset"
    assert [e.name for e in root.events] == [
        "turn_started",
        "model_call_retried",
        "turn_started",
        "model_call_retried",
        "model_call_retried",
        "model_fell_back",
    ]

    # One chat span per request, in order; each ends at its answer and lasts what was measured.
    requests = of_type(events, "model_call_requested")
    answers = [r.event for r in events if r.type in ("model_call_responded", "model_call_failed")]
    assert len(chats) == len(requests) == len(answers) == 6
    for chat, request, answer in zip(chats, requests, answers, strict=True):
        assert isinstance(request, ModelCallRequested)
        assert isinstance(answer, ModelCallResponded | ModelCallFailed)
        assert chat.kind == "client" and chat.name == f"chat {request.model}"
        assert chat.end == answer.at
        assert chat.start == answer.at - timedelta(milliseconds=answer.duration_ms) > request.at
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == request.model
        assert chat.attributes["agentledger.model.attempt"] == request.attempt
        if isinstance(answer, ModelCallFailed):
            assert chat.status == "error" and chat.status_message == answer.message
            assert chat.attributes["error.type"] == "ModelServerError"
            assert chat.attributes["http.response.status_code"] == 503
        else:
            assert chat.status == "unset" and "error.type" not in chat.attributes
            assert chat.attributes["gen_ai.response.model"] == answer.model
            assert chat.attributes["gen_ai.usage.input_tokens"] == answer.usage.input_tokens
            assert chat.attributes["gen_ai.usage.output_tokens"] == answer.usage.output_tokens
            assert chat.attributes["gen_ai.response.finish_reasons"] == (answer.finish_reason,)
    assert [c.attributes["agentledger.turn"] for c in chats] == [1, 1, 2, 2, 2, 2]
    assert chats[1].attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert chats[-1].attributes["gen_ai.provider.name"] == "anthropic"

    # Tool calls: the rejected one in error at once; the other from its intent to its result.
    (rejected,) = [t for t in tools if t.attributes["gen_ai.tool.call.id"] == "c2"]
    assert rejected.status == "error" and rejected.start == rejected.end
    assert rejected.attributes["error.type"] == "invalid_arguments"
    assert rejected.attributes["agentledger.tool.outcome"] == "rejected"
    intended = of_type(events, "tool_call_intended")[0]
    succeeded = of_type(events, "tool_call_succeeded")[0]
    failed = of_type(events, "tool_tier_failed")[0]
    assert isinstance(intended, ToolCallIntended) and isinstance(succeeded, ToolCallSucceeded)
    assert isinstance(failed, ToolTierFailed)
    assert (weather.start, weather.end) == (intended.at, succeeded.at)
    assert weather.name == "execute_tool weather" and weather.status == "unset"
    assert {k: weather.attributes[k] for k in _TOOL_KEYS} == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "weather",
        "gen_ai.tool.call.id": "c1",
        "gen_ai.tool.type": "function",
        "agentledger.tool.tier": "cache",
        "agentledger.tool.outcome": "ok",
        "agentledger.turn": 1,
    }
    assert (tier.start, tier.end) == (
        failed.at - timedelta(milliseconds=failed.duration_ms),
        failed.at,
    )
    assert tier.status == "error" and tier.attributes["error.type"] == "RuntimeError"
    assert tier.status_message == "the weather service is down"


_ROOT_KEYS = (
    "gen_ai.operation.name",
    "gen_ai.agent.name",
    "gen_ai.conversation.id",
    "gen_ai.request.model",
    "gen_ai.provider.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "agentledger.run.status",
    "agentledger.run.turns",
    "agentledger.run.user_id",
)
_TOOL_KEYS = (
    "gen_ai.operation.name",
    "gen_ai.tool.name",
    "gen_ai.tool.call.id",
    "gen_ai.tool.type",
    "agentledger.tool.tier",
    "agentledger.tool.outcome",
    "agentledger.turn",
)


async def test_the_ids_come_from_the_log_so_a_second_build_is_the_same_trace() -> None:
    async with MemoryEventStore() as store:
        await rich_run(store, run_id="r1")
        await rich_run(store, run_id="r9")
        first = build_spans(await store.read_stream("run-r1"))
        again = build_spans(await store.read_stream("run-r1"))
        other = build_spans(await store.read_stream("run-r9"))
    assert first == again
    assert run_trace_id("r1") != run_trace_id("r9")
    assert not {s.span_id for s in first} & {s.span_id for s in other}
    # Each span names the events' span it was built from.
    assert all(s.span_id == span_id_of("r1", s.source) for s in first)


async def test_a_request_the_budget_refused_ends_in_error_with_the_run() -> None:
    async with MemoryEventStore() as store:
        await refused_run(store)
        events = await store.read_stream("run-r2")
    spans = build_spans(events)
    assert [s.name for s in spans] == ["chat gpt-4o", "invoke_agent spender"]
    chat, root = spans
    refused = events[-1].event
    assert chat.end == root.end == refused.at
    for span in spans:
        assert span.status == "error" and span.attributes["error.type"] == "budget_exceeded"
    assert "the run cap of $0.001" in (root.status_message or "")
    assert root.attributes["agentledger.run.status"] == "budget_exceeded"
    assert "gen_ai.usage.input_tokens" not in chat.attributes  # never sent, never answered


async def test_open_spans_wait_for_their_end_unless_asked_for() -> None:
    async with MemoryEventStore() as store:
        running = await paused_run(store)
        paused = await store.read_stream("run-r3")
        async with running:
            await running.cancel("r3", reason="nobody answered")
        cancelled = await store.read_stream("run-r3")

    # Paused on a confirmation: the model's attempt is closed; the run and the tool call are not.
    assert [s.name for s in build_spans(paused)] == ["chat gpt-4o"]
    opened = build_spans(paused, include_open=True)
    assert [s.name for s in opened] == ["chat gpt-4o", "execute_tool transfer", "invoke_agent bank"]
    last = paused[-1].event.at
    for span in opened[1:]:
        assert span.end == last and span.attributes["agentledger.span.open"] is True
    assert [e.name for e in opened[1].events] == ["confirmation_requested"]
    assert [e.name for e in opened[2].events] == ["turn_started", "run_paused"]

    # Cancelled: what was open ends with the run, for the run's reason, and is not "open".
    spans = build_spans(cancelled, include_open=True)
    assert [s.name for s in spans] == ["chat gpt-4o", "execute_tool transfer", "invoke_agent bank"]
    tool, root = spans[1], spans[2]
    assert tool.end == root.end == cancelled[-1].event.at
    assert tool.status == "error" and tool.attributes["error.type"] == "cancelled"
    assert root.status == "unset" and root.attributes["agentledger.run.status"] == "cancelled"
    assert not any("agentledger.span.open" in s.attributes for s in spans)
    # The same spans as built live: ids and times do not depend on when they were built.
    assert (tool.span_id, tool.start) == (opened[1].span_id, opened[1].start)


def test_a_forked_run_links_to_the_run_it_came_from() -> None:
    started = RunStarted(
        run_id="fork",
        span_id="fork",
        at=datetime(2026, 1, 1, tzinfo=UTC),
        agent="a",
        model="m",
        task="t",
        user_id="u",
        forked_from="origin",
        forked_at_version=7,
    )
    (root,) = build_spans([started], include_open=True)
    assert root.links == ((run_trace_id("origin"), span_id_of("origin", "origin")),)
    assert root.attributes["agentledger.run.forked_from"] == "origin"
    assert root.attributes["agentledger.run.forked_at_version"] == 7
    assert "gen_ai.provider.name" not in root.attributes  # "m" names no known provider


def test_the_attribute_names_are_the_conventions() -> None:
    semconv = pytest.importorskip("opentelemetry.semconv._incubating.attributes.gen_ai_attributes")
    from agentledger.engine.otel import _names

    ours = {k: v for k, v in vars(_names).items() if k.startswith("GEN_AI_")}
    assert len(ours) == 14
    for key, value in ours.items():
        assert getattr(semconv, key) == value, key
    error = pytest.importorskip("opentelemetry.semconv.attributes.error_attributes")
    assert error.ERROR_TYPE == _names.ERROR_TYPE
    ops = {op.value for op in semconv.GenAiOperationNameValues}
    assert {_names.OP_CHAT, _names.OP_EXECUTE_TOOL, _names.OP_INVOKE_AGENT} <= ops


async def test_a_run_cut_off_and_resumed_is_one_trace_across_its_sessions() -> None:
    asked = anyio.Event()
    calls: list[int] = []

    def answer(request: ModelRequest) -> ModelReply:
        calls.append(1)
        return reply("Sunny.")

    class Hanging:
        """Answers the second request; the first hangs until the process "dies"."""

        name = "gpt-4o"

        async def complete(self, request: ModelRequest) -> ModelReply:
            if not calls:
                calls.append(0)
                asked.set()
                await anyio.sleep_forever()
            return answer(request)

    # With a budget the request is written (with its reservation) before the model is asked.
    price = Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    agent = Agent(name="forecaster", model=Hanging(), prices={"gpt-4o": price})
    budgets = Budgets({"default": BudgetPolicy(per_run_usd=Decimal(1))})
    async with MemoryEventStore() as store:
        first = Engine(store, clock=FakeClock(), ids=SequentialIds("a"), budgets=budgets)
        async with first:
            with anyio.CancelScope() as crash:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(functools.partial(first.run, agent, "Paris?", run_id="r1"))
                    await asked.wait()
                    crash.cancel()
        cut = await store.read_stream("run-r1")
        later = FakeClock(datetime(2026, 1, 2, tzinfo=UTC), tick=timedelta(milliseconds=5))
        second = Engine(store, clock=later, ids=SequentialIds("b"), agents=[agent], budgets=budgets)
        async with second:
            assert (await second.resume("r1")).status == "completed"
        events = await store.read_stream("run-r1")

    # Before the resume: nothing has closed yet.
    assert build_spans(cut) == []
    spans = build_spans(events)
    assert [s.name for s in spans] == ["chat gpt-4o", "chat gpt-4o", "invoke_agent forecaster"]
    cut_off, answered, root = spans
    interrupted = next(r.event for r in events if r.type == "model_call_interrupted")
    assert cut_off.attributes["error.type"] == "interrupted" and cut_off.status == "error"
    # The request of the first session ends when the second one found it unanswered.
    requested = next(r.event for r in cut if r.type == "model_call_requested")
    assert (cut_off.start, cut_off.end) == (requested.at, interrupted.at)
    assert answered.status == "unset" and answered.start.day == 2
    assert (root.start, root.end) == (events[0].event.at, events[-1].event.at)
    assert "run_resumed" in [e.name for e in root.events]
