"""The critic (pattern 6) in real runs: verdicts, revision requests, flagged answers, the LLM
judge after the code checks, a judge that fails, critic stats folded from the log, and a critic
built from configuration.

Every assertion reads the log back from the store: the events are the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import anyio
import pytest

from agentledger.engine import (
    JUDGE_CHECK_NAME,
    Agent,
    BudgetPolicy,
    Budgets,
    Citations,
    Critic,
    Engine,
    LLMJudge,
    MaxLength,
    ModelReply,
    ModelRequest,
    ModelServerError,
    Price,
    RequiredKeywords,
    RetryPolicy,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, SequentialIds, reply
from agentledger.events import (
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    CheckResult,
    CriticVerdict,
    EventStore,
    MemoryEventStore,
    ModelCallRequested,
    ModelCallResponded,
    RecordedEvent,
    RevisionRequested,
    RunCompleted,
    TurnStarted,
    Usage,
)
from agentledger.projections import (
    AssistantMessage,
    CheckPassRate,
    CriticStatsRows,
    UserMessage,
    accept_rate,
    check_pass_rates,
    fold,
)

TASK = "What is the weather in Paris? Cite your source."
KEYWORD_ISSUE = 'the answer is missing required keyword(s): "Paris"'
CITATION_ISSUE = r"the answer has 0 citation marker(s) matching \[\d+\]; at least 1 are required"
LENGTH_ISSUE = "the answer is 61 characters long; the maximum is 60"


def checks() -> Critic:
    return Critic([RequiredKeywords(["Paris"]), Citations(), MaxLength(chars=60)])


def ok(name: str) -> CheckResult:
    return CheckResult(name=name, passed=True)


def failed(name: str, issue: str) -> CheckResult:
    return CheckResult(name=name, passed=False, issue=issue)


def answers(*texts: str) -> ScriptedModel:
    return ScriptedModel([reply(t) for t in texts], name="agent-model")


def critic_agent(model: Any, critic: Critic, *, name: str = "checked") -> Agent:
    return Agent(
        name=name, model=model, critic=critic, retry=RetryPolicy(max_attempts=2, base_delay=1.0)
    )


def engine_for(
    store: EventStore,
    prefix: str = "id",
    *,
    clock: FakeClock | None = None,
    budgets: Budgets | None = None,
) -> Engine:
    return Engine(store, clock=clock or FakeClock(), ids=SequentialIds(prefix), budgets=budgets)


async def run_log(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}")


def types(log: Sequence[RecordedEvent]) -> list[str]:
    """Event types; model events with their purpose, verdicts with their method and outcome."""
    named = []
    for r in log:
        e = r.event
        if isinstance(e, ModelCallRequested | ModelCallResponded):
            named.append(f"{e.type}:{e.purpose}")
        elif isinstance(e, CriticVerdict):
            named.append(f"verdict:{e.method}:{'accepted' if e.accepted else 'rejected'}")
        else:
            named.append(e.type)
    return named


def verdicts(log: Sequence[RecordedEvent]) -> list[CriticVerdict]:
    return [r.event for r in log if isinstance(r.event, CriticVerdict)]


def revisions(log: Sequence[RecordedEvent]) -> list[RevisionRequested]:
    return [r.event for r in log if isinstance(r.event, RevisionRequested)]


def completed(log: Sequence[RecordedEvent]) -> RunCompleted:
    last = log[-1].event
    assert isinstance(last, RunCompleted)
    return last


TURN = ["turn_started", "model_call_requested:agent", "model_call_responded:agent"]
JUDGE_CALL = ["model_call_requested:judge", "model_call_responded:judge"]


# -- code checks -------------------------------------------------------------------------------


async def test_a_rejected_answer_is_revised_and_the_revision_accepted(store: EventStore) -> None:
    first, second = "It is sunny.", "It is sunny in Paris [1]."
    model = answers(first, second)
    critic = checks()
    async with engine_for(store) as engine:
        result = await engine.run(critic_agent(model, critic), TASK, run_id="r1")
    log = await run_log(store, "r1")

    assert types(log) == [
        "run_started",
        *TURN,
        "verdict:deterministic:rejected",
        "revision_requested",
        *TURN,
        "verdict:deterministic:accepted",
        "run_completed",
    ]
    rejected, accepted = verdicts(log)
    assert rejected.agent == "checked" and rejected.revision == 0
    # Every check's result is recorded, not just the first failure.
    assert rejected.checks == (
        failed("required_keywords", KEYWORD_ISSUE),
        failed("citations", CITATION_ISSUE),
        ok("max_length"),
    )
    (revision,) = revisions(log)
    assert revision.revision == 1
    assert revision.issues == (KEYWORD_ISSUE, CITATION_ISSUE)
    assert revision.message == critic.revision_message(revision.issues)
    assert KEYWORD_ISSUE in revision.message and CITATION_ISSUE in revision.message
    # Verdict and revision request belong to the turn whose answer they judge.
    turn1 = log[1].event
    assert isinstance(turn1, TurnStarted)
    assert {r.event.parent_span_id for r in log[4:6]} == {turn1.span_id}

    # The model sees its answer and then the issues, as a user message, and answers again.
    sent = list(model.requests[1].messages)
    assert sent[-2:] == [AssistantMessage(content=first), UserMessage(content=revision.message)]
    assert accepted.revision == 1
    assert accepted.checks == (ok("required_keywords"), ok("citations"), ok("max_length"))
    done = completed(log)
    assert (done.output, done.flagged, done.turns) == (second, False, 2)
    assert (result.status, result.output, result.flagged) == ("completed", second, False)


async def test_an_answer_never_accepted_is_returned_flagged_after_two_revisions() -> None:
    texts = [
        "It is sunny [1].",
        "It is sunny in Paris.",
        "It is sunny in Paris [1], " + "x" * 35,  # 61 characters
    ]
    model = answers(*texts)
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(critic_agent(model, checks()), TASK, run_id="r1")
        log = await run_log(store, "r1")

    assert types(log) == [
        "run_started",
        *TURN,
        "verdict:deterministic:rejected",
        "revision_requested",
        *TURN,
        "verdict:deterministic:rejected",
        "revision_requested",
        *TURN,
        "verdict:deterministic:rejected",
        "run_completed",
    ]
    assert [v.revision for v in verdicts(log)] == [0, 1, 2]
    assert [(r.revision, r.issues) for r in revisions(log)] == [
        (1, (KEYWORD_ISSUE,)),
        (2, (CITATION_ISSUE,)),
    ]
    assert verdicts(log)[2].checks == (
        ok("required_keywords"),
        ok("citations"),
        failed("max_length", LENGTH_ISSUE),
    )
    assert len(model.requests) == 3
    # Each revision request is what the model was sent last before answering again.
    for request, revision in zip(model.requests[1:], revisions(log), strict=True):
        assert request.messages[-1] == UserMessage(content=revision.message)
    done = completed(log)
    assert (done.output, done.flagged, done.turns) == (texts[2], True, 3)
    assert (result.status, result.output, result.flagged) == ("completed", texts[2], True)


# -- the LLM judge -----------------------------------------------------------------------------


def judge_model(*replies: ModelReply | BaseException) -> ScriptedModel:
    # $1/M input, $2/M output: every judge reply below costs 240 micro-dollars.
    return ScriptedModel(list(replies), name="judge-model", price=Price(Decimal(1), Decimal(2)))


def judged(judge: ScriptedModel, max_revisions: int = 2) -> Critic:
    return Critic(
        [RequiredKeywords(["Paris"])],
        judge=LLMJudge(judge, "Polite, and explains why."),
        max_revisions=max_revisions,
    )


async def test_the_judge_is_asked_only_after_the_code_checks_pass_and_is_charged() -> None:
    judge = judge_model(
        reply(
            '{"accepted": false, "issues": ["Too curt: say why."]}',
            usage=Usage(input_tokens=200, output_tokens=20),
        ),
        reply('{"accepted": true, "issues": []}', usage=Usage(input_tokens=220, output_tokens=10)),
    )
    texts = ["It is sunny.", "Sunny in Paris.", "It is sunny in Paris: a high sits over France."]
    model = answers(*texts)
    critic = judged(judge)
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(critic_agent(model, critic, name="judged"), TASK, run_id="r1")
        log = await run_log(store, "r1")

    assert types(log) == [
        "run_started",
        *TURN,
        "verdict:deterministic:rejected",  # no judge for an answer the code rejects
        "revision_requested",
        *TURN,
        "verdict:deterministic:accepted",
        *JUDGE_CALL,
        "verdict:llm:rejected",
        "revision_requested",
        *TURN,
        "verdict:deterministic:accepted",
        *JUDGE_CALL,
        "verdict:llm:accepted",
        "run_completed",
    ]
    assert critic.judge is not None
    assert judge.requests == [critic.judge.request(TASK, t) for t in texts[1:]]
    llm = [v for v in verdicts(log) if v.method == "llm"]
    assert [(v.accepted, v.checks, v.revision) for v in llm] == [
        (False, (failed(JUDGE_CHECK_NAME, "Too curt: say why."),), 1),
        (True, (ok(JUDGE_CHECK_NAME),), 2),
    ]
    assert [(r.revision, r.issues) for r in revisions(log)] == [
        (1, (KEYWORD_ISSUE,)),
        (2, ("Too curt: say why.",)),
    ]

    # The judge's calls are charged like any call, under their own purpose.
    judge_replies = [
        r.event
        for r in log
        if isinstance(r.event, ModelCallResponded) and r.event.purpose == "judge"
    ]
    assert [(e.model, e.cost_usd) for e in judge_replies] == [
        ("judge-model", Decimal("0.00024")),
        ("judge-model", Decimal("0.00024")),
    ]
    done = completed(log)
    assert done.cost_usd == result.cost_usd == Decimal("0.00048")
    assert done.usage == Usage(input_tokens=3 * 10 + 420, output_tokens=3 * 5 + 30)
    assert (done.output, done.flagged) == (texts[2], False)
    assert (result.output, result.flagged) == (texts[2], False)


UNREACHABLE = [
    "verdict:deterministic:accepted",
    "model_call_requested:judge",
    "model_call_failed",
    "model_call_retried",
    "model_call_requested:judge",
    "model_call_failed",
]


@pytest.mark.parametrize(
    ("judge_replies", "judge_events", "issue"),
    [
        pytest.param(
            [reply("Looks fine to me!")],
            ["verdict:deterministic:accepted", *JUDGE_CALL],
            "the judge's reply was not valid JSON: ",
            id="malformed",
        ),
        pytest.param(
            [reply('{"verdict": "yes"}')],
            ["verdict:deterministic:accepted", *JUDGE_CALL],
            "the judge's reply did not follow the format ",
            id="wrong-shape",
        ),
        pytest.param(
            [ModelServerError("judge-model", "overloaded", status_code=503)] * 2,
            UNREACHABLE,
            "the judge model could not be reached",
            id="unreachable",
        ),
    ],
)
async def test_a_judge_that_cannot_judge_rejects_without_a_revision_and_the_answer_is_flagged(
    judge_replies: list[ModelReply | BaseException], judge_events: list[str], issue: str
) -> None:
    judge = judge_model(*judge_replies)
    model = answers("It is sunny in Paris.")
    async with MemoryEventStore() as store, engine_for(store) as engine:
        result = await engine.run(critic_agent(model, judged(judge)), TASK, run_id="r1")
        log = await run_log(store, "r1")

    # The complaint is about the judge, not the answer: nothing to send back for revision.
    assert types(log) == [
        "run_started",
        *TURN,
        *judge_events,
        "verdict:llm:rejected",
        "run_completed",
    ]
    (check,) = verdicts(log)[1].checks
    assert check.name == JUDGE_CHECK_NAME and not check.passed
    assert check.issue is not None and check.issue.startswith(issue)
    assert len(model.requests) == 1 and len(judge.requests) == len(judge_replies)
    done = completed(log)
    assert (done.output, done.flagged) == ("It is sunny in Paris.", True)
    assert (result.status, result.flagged) == ("completed", True)


class StallingClock(FakeClock):
    """A fake clock whose first retry back-off never ends: the process dies while waiting."""

    def __init__(self) -> None:
        super().__init__(datetime(2026, 1, 1, tzinfo=UTC))
        self.entered = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        self.entered.set()
        await anyio.sleep_forever()


async def interrupt_when(
    entered: anyio.Event, work: Callable[[], Coroutine[Any, Any, object]]
) -> None:
    """Run ``work`` and cut it off, like a process dying, once ``entered`` is set."""
    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await entered.wait()
            crash.cancel()


async def test_a_crash_while_the_judge_is_retried_does_not_skip_the_judge_on_resume() -> None:
    judge = judge_model(
        ModelServerError("judge-model", "overloaded", status_code=503),
        reply('{"accepted": false, "issues": ["Too curt."]}'),
        reply('{"accepted": true, "issues": []}'),
    )
    texts = ["It is sunny in Paris.", "It is sunny in Paris, as a high sits there."]
    model = answers(*texts)
    agent = critic_agent(model, judged(judge))
    clock = StallingClock()
    async with MemoryEventStore() as store:
        async with engine_for(store, "a", clock=clock) as engine:
            await interrupt_when(clock.entered, lambda: engine.run(agent, TASK, run_id="r1"))
        cut = ["run_started", *TURN, "verdict:deterministic:accepted"]
        cut += ["model_call_requested:judge", "model_call_failed", "model_call_retried"]
        assert types(await run_log(store, "r1")) == cut
        async with engine_for(store, "b") as engine:
            result = await engine.resume("r1", agent=agent)
        log = await run_log(store, "r1")

    # The code checks' verdict stands; the judge's call goes on at its second attempt, and the
    # run acts on the judge's verdict.
    assert types(log) == [
        *cut,
        "run_resumed",
        *JUDGE_CALL,
        "verdict:llm:rejected",
        "revision_requested",
        *TURN,
        "verdict:deterministic:accepted",
        *JUDGE_CALL,
        "verdict:llm:accepted",
        "run_completed",
    ]
    assert judge.requests == [
        LLMJudge(judge, "Polite, and explains why.").request(TASK, text)
        for text in (texts[0], texts[0], texts[1])
    ]
    assert [r.issues for r in revisions(log)] == [("Too curt.",)]
    assert (result.status, result.output, result.flagged) == ("completed", texts[1], False)


class StallingJudge:
    """A judge model whose first call never returns (the process dies meanwhile); later calls
    answer from ``replies``."""

    def __init__(self, *replies: ModelReply) -> None:
        self.replies = list(replies)
        self.price = Price(Decimal(1), Decimal(2))
        self.requests: list[ModelRequest] = []
        self.entered = anyio.Event()

    @property
    def name(self) -> str:
        return "judge-model"

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if len(self.requests) == 1:
            self.entered.set()
            await anyio.sleep_forever()
        return self.replies.pop(0)


async def test_a_budgeted_judge_is_charged_and_a_crash_in_its_call_skips_nothing() -> None:
    judge = StallingJudge(
        reply('{"accepted": true, "issues": []}', usage=Usage(input_tokens=200, output_tokens=20))
    )
    model = answers("It is sunny in Paris.")
    critic = Critic([RequiredKeywords(["Paris"])], judge=LLMJudge(judge, "Polite."))
    agent = critic_agent(model, critic)
    budgets = Budgets({"default": BudgetPolicy(per_run_usd=Decimal(1))})
    async with MemoryEventStore() as store:
        async with engine_for(store, "a", budgets=budgets) as engine:
            await interrupt_when(judge.entered, lambda: engine.run(agent, TASK, run_id="r1"))
        agent_call = [
            "turn_started",
            "model_call_requested:agent",
            "budget_reserved",
            "model_call_responded:agent",
            "budget_settled",
        ]
        # The judge's worst case is reserved before it is asked, like any call's.
        cut = ["run_started", *agent_call, "verdict:deterministic:accepted"]
        cut += ["model_call_requested:judge", "budget_reserved"]
        assert types(await run_log(store, "r1")) == cut
        async with engine_for(store, "b", budgets=budgets) as engine:
            result = await engine.resume("r1", agent=agent)
            state = await engine.load("r1")
        log = await run_log(store, "r1")

    # The cut-off request is closed and its reservation given back; the judge is asked again.
    assert types(log) == [
        *cut,
        "run_resumed",
        "model_call_interrupted",
        "budget_released",
        "model_call_requested:judge",
        "budget_reserved",
        "model_call_responded:judge",
        "budget_settled",
        "verdict:llm:accepted",
        "run_completed",
    ]
    reserved = [r.event for r in log if isinstance(r.event, BudgetReserved)]
    assert [e.model for e in reserved] == ["agent-model", "judge-model", "judge-model"]
    (released,) = [r.event for r in log if isinstance(r.event, BudgetReleased)]
    assert released.reservation_id == reserved[1].reservation_id
    assert released.amount_usd == reserved[1].amount_usd > 0
    settled = [r.event for r in log if isinstance(r.event, BudgetSettled)]
    assert [e.reservation_id for e in settled] == [
        reserved[0].reservation_id,
        reserved[2].reservation_id,
    ]
    assert settled[1].actual_usd == Decimal("0.00024")
    assert state.spent_usd == state.cost_usd == result.cost_usd == Decimal("0.00024")
    assert state.reservations == {}
    assert len(judge.requests) == 2 and judge.requests[0] == judge.requests[1]
    assert (result.status, result.flagged) == ("completed", False)


# -- critic stats ------------------------------------------------------------------------------


async def test_critic_stats_fold_the_verdicts_of_real_runs() -> None:
    judge = judge_model(
        reply('{"accepted": false, "issues": ["Too curt: say why."]}'),
        reply('{"accepted": true, "issues": []}'),
    )
    async with MemoryEventStore() as store, engine_for(store) as engine:
        accepted_late = answers("It is sunny.", "It is sunny in Paris [1].")
        await engine.run(critic_agent(accepted_late, checks()), TASK, run_id="a")
        never = answers(
            "It is sunny [1].", "It is sunny in Paris.", "It is sunny in Paris [1], " + "x" * 35
        )
        await engine.run(critic_agent(never, checks()), TASK, run_id="b")
        by_judge = answers("It is sunny.", "Sunny in Paris.", "It is sunny in Paris: a high.")
        await engine.run(critic_agent(by_judge, judged(judge), name="judged"), TASK, run_id="c")
        rows = fold(CriticStatsRows(), await store.read_all())

    assert set(rows) == {"agent:checked", "agent:judged"}
    # "checked": five answers judged by code, one accepted.
    assert accept_rate(rows, "checked") == Fraction(1, 5)
    assert accept_rate(rows, "checked", method="deterministic") == Fraction(1, 5)
    assert accept_rate(rows, "checked", method="llm") is None
    assert check_pass_rates(rows, "checked") == [
        CheckPassRate("citations", 5, 3, Fraction(3, 5)),
        CheckPassRate("required_keywords", 5, 3, Fraction(3, 5)),
        CheckPassRate("max_length", 5, 4, Fraction(4, 5)),
    ]
    # "judged": three answers; the code passed two, the judge one of those.
    assert accept_rate(rows, "judged", method="deterministic") == Fraction(2, 3)
    assert accept_rate(rows, "judged", method="llm") == Fraction(1, 2)
    assert accept_rate(rows, "judged") == Fraction(3, 5)
    assert check_pass_rates(rows, "judged") == [
        CheckPassRate(JUDGE_CHECK_NAME, 2, 1, Fraction(1, 2)),
        CheckPassRate("required_keywords", 3, 2, Fraction(2, 3)),
    ]
    assert accept_rate(rows, "nobody") is None and check_pass_rates(rows, "nobody") == []


# -- a critic from configuration ---------------------------------------------------------------


URL_ISSUE = "the answer links to a URL; give the facts instead"


def no_urls(answer: str) -> str | None:
    return URL_ISSUE if "http" in answer else None


async def test_a_critic_built_from_configuration_judges_an_agents_runs() -> None:
    judge = judge_model(reply('{"accepted": true, "issues": []}'))
    critic = Critic.from_config(
        {
            "max_revisions": 1,
            "checks": [
                {"type": "max_length", "words": 8, "name": "short"},
                {"type": "banned_phrases", "phrases": ["as an AI"]},
                {"type": "callable", "name": "no_urls"},
            ],
            "judge": {"model": "judge-model", "criteria": "Polite and on topic."},
        },
        callables={"no_urls": no_urls},
        models={"judge-model": judge},
    )
    texts = ["As an AI I cannot know; see http://weather.example", "As an AI: sunny."]
    model = answers(*texts, "Sunny in Paris today.")
    agent = critic_agent(model, critic)
    async with MemoryEventStore() as store, engine_for(store) as engine:
        flagged = await engine.run(agent, TASK, run_id="r1")
        passed = await engine.run(agent, TASK, run_id="r2")
        first, second = await run_log(store, "r1"), await run_log(store, "r2")

    # One revision, as configured, then the last answer is returned flagged; no judge for
    # answers the code rejects.
    assert types(first) == [
        "run_started",
        *TURN,
        "verdict:deterministic:rejected",
        "revision_requested",
        *TURN,
        "verdict:deterministic:rejected",
        "run_completed",
    ]
    banned = 'the answer contains banned phrase(s): "as an AI"'
    assert [v.checks for v in verdicts(first)] == [
        (ok("short"), failed("banned_phrases", banned), failed("no_urls", URL_ISSUE)),
        (ok("short"), failed("banned_phrases", banned), ok("no_urls")),
    ]
    assert [r.issues for r in revisions(first)] == [(banned, URL_ISSUE)]
    assert (flagged.output, flagged.flagged) == (texts[1], True)
    assert completed(first).flagged

    # The configured judge rules on an answer the code passes.
    assert types(second) == [
        "run_started",
        *TURN,
        "verdict:deterministic:accepted",
        *JUDGE_CALL,
        "verdict:llm:accepted",
        "run_completed",
    ]
    assert critic.judge is not None
    assert judge.requests == [critic.judge.request(TASK, "Sunny in Paris today.")]
    assert (passed.output, passed.flagged) == ("Sunny in Paris today.", False)
