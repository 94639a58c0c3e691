"""Structured output: ``Agent(output_type=M)`` validates the final answer into ``M``.

A valid answer gives ``RunResult.value``; an invalid one goes back to the model as a revision
(an ``output`` verdict and a ``RevisionRequested`` with one issue per validation error) until
``output_revisions`` are spent, then the run fails ``invalid_output``. Tool turns, the critic,
a crash between the revision and the answer, replay and ``engine.result`` all give the same
value. Every assertion on events reads the log back from the store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar

import pytest
from pydantic import BaseModel, Field

from agentledger.engine import (
    OUTPUT_CHECK_NAME,
    Agent,
    AgentConfigError,
    AnthropicModel,
    BudgetPolicy,
    Budgets,
    Critic,
    Engine,
    InvalidOutputError,
    ModelReply,
    ModelRequest,
    OpenAIChatModel,
    Price,
    RequiredKeywords,
    RunResult,
    ToolContext,
    tool,
)
from agentledger.engine.loop._requests import request_digest
from agentledger.engine.models._model import OutputSchema
from agentledger.engine.policies._output import INSTRUCTION, StructuredOutput
from agentledger.engine.testing import (
    FakeClock,
    Fault,
    FaultyStore,
    ScriptedModel,
    SequentialIds,
    SimulatedCrash,
    call,
    check_invariants,
    reply,
    tripwired,
)
from agentledger.events import (
    CheckResult,
    CriticVerdict,
    EventStore,
    MemoryEventStore,
    RecordedEvent,
    RevisionRequested,
    RunCompleted,
    RunFailed,
)
from agentledger.projections import (
    CheckPassRate,
    CriticStatsRows,
    UserMessage,
    accept_rate,
    check_pass_rates,
    fold,
)
from agentledger.projections._run_state import fold_run


class Weather(BaseModel):
    city: str
    temp_c: float


class Forecast(BaseModel):
    days: list[Weather]
    source: str = Field(alias="Source")


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


T = TypeVar("T")
PRICE = Price(input_per_mtok=Decimal("2.00"), output_per_mtok=Decimal("8.00"))

PARIS = '{"city": "Paris", "temp_c": 21.5}'
VALUE = Weather(city="Paris", temp_c=21.5)
NOT_A_NUMBER = "temp_c: Input should be a valid number, unable to parse string as a number"
MISSING_CITY = "city: Field required"


def model(*answers: str | ModelReply) -> ScriptedModel:
    """Replies by turn (the number of assistant messages in the request), the last one for
    every later request: a resumed run gets the same replies as the first try."""
    replies = [a if isinstance(a, ModelReply) else reply(a) for a in answers]

    def answer(request: ModelRequest) -> ModelReply:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        return replies[min(turn, len(replies) - 1)]

    return ScriptedModel(answer, name="agent-model")


def weather_agent(m: ScriptedModel, **settings: Any) -> Agent[Weather]:
    return Agent(name="weather", model=m, output_type=Weather, **settings)


def engine_for(store: EventStore, prefix: str = "id") -> Engine:
    return Engine(store, clock=FakeClock(), ids=SequentialIds(prefix))


async def run_log(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}")


def kinds(log: Sequence[RecordedEvent]) -> list[str]:
    """Event types; verdicts with their method and outcome."""
    named = []
    for r in log:
        e = r.event
        if isinstance(e, CriticVerdict):
            named.append(f"verdict:{e.method}:{'accepted' if e.accepted else 'rejected'}")
        else:
            named.append(e.type)
    return named


def of_type(log: Sequence[RecordedEvent], kind: type[Any]) -> list[Any]:
    return [r.event for r in log if isinstance(r.event, kind)]


ONE_TURN = [
    "run_started",
    "turn_started",
    "model_call_requested",
    "model_call_responded",
    "verdict:output:accepted",
    "run_completed",
]


# -- the happy path and the request ------------------------------------------------------------


async def test_a_valid_first_answer_is_the_typed_value(store: EventStore) -> None:
    m = model(f"```json\n{PARIS}\n```\n")
    agent = weather_agent(m)
    async with engine_for(store) as engine:
        result = await engine.run(agent, "Weather in Paris?", run_id="r1")

    assert result.status == "completed"
    assert isinstance(result.value, Weather) and result.value == VALUE
    assert result.output == PARIS  # the JSON the model wrote, without its fence
    log = await run_log(store, "r1")
    assert kinds(log) == ONE_TURN
    [verdict] = of_type(log, CriticVerdict)
    assert verdict.checks == (CheckResult(name=OUTPUT_CHECK_NAME, passed=True),)
    assert of_type(log, RunCompleted)[0].output == PARIS

    # The request carries the schema; the system prompt says the answer is JSON.
    [request] = m.requests
    assert request.output == OutputSchema(name="Weather", schema=Weather.model_json_schema())
    assert request.output == agent.output_schema
    assert request.messages[0].content == INSTRUCTION.format(name="Weather")


async def test_the_result_the_store_gives_has_the_same_value(store: EventStore) -> None:
    agent = weather_agent(model(PARIS))
    async with engine_for(store) as engine:
        ran = await engine.run(agent, "Weather in Paris?", run_id="r1")
        assert (await engine.result("r1")).value == VALUE  # the agent is registered by name
        assert (await engine.resume("r1", agent=agent)).value == VALUE  # ended: a no-op
    async with engine_for(store, "stranger") as stranger:
        unknown = await stranger.result("r1")
        typed = await stranger.result("r1", agent=agent)
    assert unknown.value is None  # no agent of that name: nothing to type the value with
    assert typed.value == VALUE and typed == ran == unknown
    assert agent.output_value(typed.output or "") == VALUE


async def test_a_plain_agent_answers_its_text(store: EventStore) -> None:
    m = model("Sunny.")
    async with engine_for(store) as engine:
        result = await engine.run(Agent(name="plain", model=m), "Weather?", run_id="r1")
    assert result.value == result.output == "Sunny."
    assert m.requests[0].output is None
    assert "JSON" not in m.requests[0].messages[0].content


# -- revisions ---------------------------------------------------------------------------------


async def test_an_invalid_answer_is_sent_back_with_one_issue_per_error(store: EventStore) -> None:
    m = model('{"temp_c": "warm"}', PARIS)
    async with engine_for(store) as engine:
        result = await engine.run(weather_agent(m), "Weather in Paris?", run_id="r1")

    assert result.status == "completed" and result.value == VALUE and result.turns == 2
    log = await run_log(store, "r1")
    assert kinds(log) == [
        *ONE_TURN[:4],
        "verdict:output:rejected",
        "revision_requested",
        *ONE_TURN[1:],
    ]
    rejected, accepted = of_type(log, CriticVerdict)
    issues = (MISSING_CITY, NOT_A_NUMBER)
    assert rejected.checks == (
        CheckResult(
            name=OUTPUT_CHECK_NAME,
            passed=False,
            issue="not a valid Weather: " + "; ".join(issues),
        ),
    )
    assert (rejected.revision, accepted.revision) == (0, 1)
    [revision] = of_type(log, RevisionRequested)
    assert revision.revision == 1 and revision.issues == issues
    # The model sees the issues, numbered, in the next request.
    sent = m.requests[1].messages[-1]
    assert isinstance(sent, UserMessage) and sent.content == revision.message
    assert sent.content.endswith(f"\n1. {MISSING_CITY}\n2. {NOT_A_NUMBER}")
    state = fold_run(log)
    assert (state.revision, state.output_revisions) == (1, 1)


async def test_an_answer_that_is_not_json_at_all_is_one_root_issue(store: EventStore) -> None:
    m = model(f"Here you go: {PARIS}", PARIS)
    async with engine_for(store) as engine:
        result = await engine.run(weather_agent(m), "Weather in Paris?", run_id="r1")
    assert result.value == VALUE
    [revision] = of_type(await run_log(store, "r1"), RevisionRequested)
    [issue] = revision.issues
    assert issue.startswith("(root): Invalid JSON: ")


async def test_an_answer_that_stays_invalid_fails_the_run(store: EventStore) -> None:
    m = model('{"city": "Paris"}', '{"city": "Paris", "temp_c": "warm"}')
    async with engine_for(store) as engine:
        result = await engine.run(weather_agent(m, output_revisions=1), "Weather?", run_id="r1")

    assert result.status == "failed" and result.value is None and result.output is None
    message = f"the answer is not a valid Weather after 1 revision(s): {NOT_A_NUMBER}"
    assert result.error == f"invalid_output: {message}"
    log = await run_log(store, "r1")
    assert kinds(log) == [
        *ONE_TURN[:4],
        "verdict:output:rejected",
        "revision_requested",
        *ONE_TURN[1:4],
        "verdict:output:rejected",
        "run_failed",
    ]
    [failed] = of_type(log, RunFailed)
    assert (failed.error_type, failed.message) == ("invalid_output", message)
    assert len(m.requests) == 2


async def test_no_revisions_fails_at_the_first_invalid_answer(store: EventStore) -> None:
    async with engine_for(store) as engine:
        agent = weather_agent(model("{}"), output_revisions=0)
        result = await engine.run(agent, "Weather?", run_id="r1")
    assert result.error is not None and result.error.startswith("invalid_output: ")
    assert "city: Field required; temp_c: Field required" in result.error
    assert of_type(await run_log(store, "r1"), RevisionRequested) == []


# -- with tools, with the critic ---------------------------------------------------------------


class CityArgs(BaseModel):
    city: str


@tool
async def thermometer(args: CityArgs, ctx: ToolContext) -> dict[str, float]:
    """Read the temperature of a city."""
    return {"temp_c": 21.5}


async def test_tool_turns_come_first_then_the_structured_answer(store: EventStore) -> None:
    asked = call("thermometer", {"city": "Paris"}, id="c1")
    m = model(reply("Let me check.", tool_calls=[asked]), PARIS)
    agent = weather_agent(m, tools=[thermometer])
    async with engine_for(store) as engine:
        result = await engine.run(agent, "Weather in Paris?", run_id="r1")
        await check_invariants(engine, "r1", agent=agent, result=result)

    assert result.value == VALUE and result.turns == 2
    log = await run_log(store, "r1")
    # The tool turn's text is no final answer: only the answer after it is validated.
    assert [v.method for v in of_type(log, CriticVerdict)] == ["output"]
    assert [r.output for r in m.requests] == [agent.output_schema] * 2
    assert [t.name for t in m.requests[0].tools] == ["thermometer"]


async def test_the_critic_sees_the_valid_json_and_counts_its_own_revisions(
    store: EventStore,
) -> None:
    m = model(
        '{"city": "Lyon", "temp_c": 18}',  # valid, but the critic wants Paris
        '{"city": "Paris"}',  # invalid output
        f"```json\n{PARIS}\n```",  # valid and accepted
    )
    critic = Critic([RequiredKeywords(["Paris"])], max_revisions=1)
    agent = weather_agent(m, critic=critic, output_revisions=1)
    async with engine_for(store) as engine:
        result = await engine.run(agent, "Weather in Paris?", run_id="r1")

    # One revision of each kind, though each limit is one: they are counted apart.
    assert result.status == "completed" and not result.flagged and result.value == VALUE
    log = await run_log(store, "r1")
    assert [k for k in kinds(log) if k.startswith(("verdict", "revision"))] == [
        "verdict:output:accepted",
        "verdict:deterministic:rejected",
        "revision_requested",
        "verdict:output:rejected",
        "revision_requested",
        "verdict:output:accepted",
        "verdict:deterministic:accepted",
    ]
    assert [r.issues for r in of_type(log, RevisionRequested)] == [
        ('the answer is missing required keyword(s): "Paris"',),
        ("temp_c: Field required",),
    ]
    assert result.output == PARIS  # what the critic checked: the JSON, unfenced

    # Stats: the output check has its pass rate; the critic's rates count its own verdicts.
    rows = fold(CriticStatsRows(), await store.read_all())
    assert accept_rate(rows, "weather", method="deterministic") == Fraction(1, 2)
    assert accept_rate(rows, "weather") == Fraction(1, 2)
    assert check_pass_rates(rows, "weather") == [
        CheckPassRate("required_keywords", 2, 1, Fraction(1, 2)),
        CheckPassRate(OUTPUT_CHECK_NAME, 3, 2, Fraction(2, 3)),
    ]


async def test_a_critic_out_of_revisions_flags_a_valid_value(store: EventStore) -> None:
    lyon = '{"city": "Lyon", "temp_c": 18}'
    critic = Critic([RequiredKeywords(["Paris"])], max_revisions=0)
    async with engine_for(store) as engine:
        result = await engine.run(weather_agent(model(lyon), critic=critic), "?", run_id="r1")
    assert result.flagged and result.value == Weather(city="Lyon", temp_c=18)


# -- crash and resume, replay --------------------------------------------------------------------


async def _clean_appends(agent: Agent[Weather]) -> tuple[int, list[RecordedEvent]]:
    async with FaultyStore(MemoryEventStore()) as faulty, engine_for(faulty) as engine:
        await engine.run(agent, "Weather in Paris?", run_id="r1")
        return faulty.counts["append"], await run_log(faulty.inner, "r1")


def _decisions(log: Sequence[RecordedEvent]) -> list[object]:
    """What the run decided about its answers: verdicts, revisions and its end."""
    return [
        (type(r.event).__name__, getattr(r.event, "checks", None), getattr(r.event, "issues", None))
        for r in log
        if isinstance(r.event, CriticVerdict | RevisionRequested | RunCompleted | RunFailed)
    ]


async def test_a_crash_at_any_write_resumes_to_the_same_decisions(store: EventStore) -> None:
    answers = ('{"city": "Paris", "temp_c": "warm"}', PARIS)
    appends, clean = await _clean_appends(weather_agent(model(*answers)))
    assert appends >= 2
    for at in range(1, appends + 1):
        run_id = f"crash-{at}"
        faulty = FaultyStore(store, fail=Fault("append", at=at, error=SimulatedCrash))
        agent = weather_agent(model(*answers))
        with pytest.raises(SimulatedCrash):
            async with engine_for(faulty, f"first-{at}") as engine:
                await engine.run(agent, "Weather in Paris?", run_id=run_id)
        async with engine_for(store, f"resumed-{at}") as engine:
            if not await run_log(store, run_id):
                continue  # died before its first write: nothing to resume
            result = await engine.resume(run_id, agent=agent)
            await check_invariants(engine, run_id, agent=agent, result=result)
        assert result.value == VALUE, at
        assert _decisions(await run_log(store, run_id)) == _decisions(clean), at


def dying_model(*answers: str) -> ScriptedModel:
    """``model(*answers)`` whose process dies the first time it is asked for the second answer
    (the revised one): the crash falls between the revision and its answer."""
    replies = [reply(a) for a in answers]
    died: list[bool] = []

    def answer(request: ModelRequest) -> ModelReply | BaseException:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if turn == 1 and not died:
            died.append(True)
            return SimulatedCrash("the process died while the model wrote its revision")
        return replies[min(turn, len(replies) - 1)]

    return ScriptedModel(answer, name="agent-model", price=PRICE)


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped"])
async def test_a_crash_while_the_revision_is_answered_decides_the_same(
    store: EventStore, capped: bool
) -> None:
    answers = ('{"city": "Paris", "temp_c": "warm"}', PARIS)
    _, clean = await _clean_appends(weather_agent(model(*answers)))
    agent = weather_agent(dying_model(*answers))
    # With a cap, a request is recorded with its reservation before it is sent: the revision
    # is then durable when the process dies; without one it is decided again on resume.
    budgets = Budgets({"default": BudgetPolicy(per_run_usd=Decimal("1"))}) if capped else None

    def engine(prefix: str) -> Engine:
        return Engine(store, clock=FakeClock(), ids=SequentialIds(prefix), budgets=budgets)

    with pytest.raises(SimulatedCrash):
        async with engine("first") as first:
            await first.run(agent, "Weather in Paris?", run_id="r1")
    before = await run_log(store, "r1")
    assert ("revision_requested" in kinds(before)) is capped
    async with engine("resumed") as resumed:
        result = await resumed.resume("r1", agent=agent)
        await check_invariants(resumed, "r1", agent=agent, result=result)
    log = await run_log(store, "r1")
    assert "run_resumed" in kinds(log)
    assert result.value == VALUE
    assert _decisions(log) == _decisions(clean)


async def test_replay_gives_the_same_value_without_calling_the_model(store: EventStore) -> None:
    agent = weather_agent(model('{"city": "Paris"}', PARIS))
    async with engine_for(store) as engine:
        result = await engine.run(agent, "Weather in Paris?", run_id="r1")
        guarded, touched = tripwired(agent)
        report = await engine.replay("r1", agent=guarded)
    assert report.matches and touched == []
    assert RunResult.of(fold_run(report.replayed), agent).value == result.value == VALUE


async def test_replay_with_a_changed_output_type_diverges(store: EventStore) -> None:
    class Reading(BaseModel):
        city: str
        temp_c: float
        humidity: float = 0.5

    agent = weather_agent(model(PARIS))
    async with engine_for(store) as engine:
        await engine.run(agent, "Weather in Paris?", run_id="r1")
        changed = Agent(name="weather", model=agent.model, output_type=Reading)
        report = await engine.replay("r1", agent=changed)
    assert not report.matches  # its system prompt and schema are not the recorded ones


async def test_a_recorded_output_the_type_no_longer_accepts_is_an_error(
    store: EventStore,
) -> None:
    class Strict(BaseModel):
        city: str
        temp_c: float
        humidity: float

    async with engine_for(store) as engine:
        await engine.run(weather_agent(model(PARIS)), "Weather in Paris?", run_id="r1")
        other = Agent(name="weather", model=model(PARIS), output_type=Strict)
        with pytest.raises(InvalidOutputError, match="humidity: Field required"):
            await engine.result("r1", agent=other)


# -- the output type itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (PARIS, True),
        (f"  \n{PARIS}\n\n", True),
        (f"```json\n{PARIS}\n```", True),
        (f"```JSON\n{PARIS}```", True),
        (f"```\n{PARIS}\n```", True),
        (f"Sure! {PARIS}", False),
        (f"```json\n{PARIS}\n```\nHope this helps.", False),
        (f"```python\n{PARIS}\n```", False),
        ('{"city": "Paris", "temp_c": 21.5} {}', False),
    ],
)
def test_only_whitespace_and_a_json_fence_are_tolerated(text: str, valid: bool) -> None:
    checked = StructuredOutput.of(Weather).check(text)
    assert checked.valid is valid
    if valid:
        assert checked.value == VALUE and checked.json == PARIS


def test_names_are_provider_safe_and_schemas_have_an_object_root() -> None:
    class Page(BaseModel, Generic[T]):
        items: list[T]

    paged = StructuredOutput.of(Page[Weather])
    assert paged.name == "Page_Weather"
    aliased = StructuredOutput.of(Forecast)
    assert "Source" in aliased.schema.schema["properties"]
    # A recursive model's schema is a $ref: its definition is lifted to the root.
    tree = StructuredOutput.of(Tree).schema.schema
    assert tree["type"] == "object" and "$defs" in tree and "$ref" not in tree
    assert StructuredOutput.of(Tree).value('{"label": "a", "children": [{"label": "b"}]}') == Tree(
        label="a", children=[Tree(label="b")]
    )


def test_an_alias_validates_as_the_model_wrote_it() -> None:
    out = StructuredOutput.of(Forecast)
    assert out.value('{"days": [], "Source": "met office"}').source == "met office"
    assert not out.check('{"days": [], "source": "met office"}').valid


@pytest.mark.parametrize(
    ("output_type", "problem"),
    [
        (int, "must describe a JSON object"),
        (list[Weather], "must describe a JSON object"),
        ("Weather", "must be a type"),
        (object(), "has no JSON schema"),
    ],
)
def test_an_output_type_that_is_not_an_object_is_a_config_error(
    output_type: Any, problem: str
) -> None:
    with pytest.raises(AgentConfigError, match=problem):
        Agent(name="a", model=model("x"), output_type=output_type)


def test_output_revisions_must_be_a_non_negative_int() -> None:
    with pytest.raises(AgentConfigError, match="output_revisions"):
        Agent(name="a", model=model("x"), output_type=Weather, output_revisions=-1)


def test_the_request_digest_covers_the_output_schema() -> None:
    messages = [UserMessage(content="hi")]
    plain = request_digest(ModelRequest(messages=messages))
    schema = Weather.model_json_schema()
    typed = request_digest(ModelRequest(messages=messages, output=OutputSchema("Weather", schema)))
    renamed = request_digest(ModelRequest(messages=messages, output=OutputSchema("W", schema)))
    changed = request_digest(
        ModelRequest(messages=messages, output=OutputSchema("Weather", {**schema, "title": "X"}))
    )
    assert len({plain, typed, renamed, changed}) == 4


def test_a_tool_may_not_take_the_output_types_name() -> None:
    @tool(name="Weather")
    async def clash(args: CityArgs, ctx: ToolContext) -> str:
        """A tool that has the output type's name."""
        return ""

    with pytest.raises(AgentConfigError, match="tool named 'Weather'"):
        Agent(name="a", model=model("x"), output_type=Weather, tools=[clash])


# -- over real HTTP ------------------------------------------------------------------------------


def _openai_body(answer: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps(answer)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    }


def _anthropic_body(answer: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [
            {"type": "text", "text": "Here is the weather:"},
            {"type": "tool_use", "id": "toolu_1", "name": "Weather", "input": answer},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 8},
    }


@contextmanager
def provider(wire: str, answers: Sequence[Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local server speaking ``wire`` that answers the n-th answer after n assistant turns."""
    seen: list[dict[str, Any]] = []
    shape = _openai_body if wire == "openai" else _anthropic_body

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append(body)
            turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
            reply = json.dumps(shape(answers[min(turn, len(answers) - 1)])).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_over_http_the_schema_is_sent_and_the_typed_answer_returned(
    store: EventStore, wire: str
) -> None:
    answers = [{"city": "Paris"}, {"city": "Paris", "temp_c": 21.5}]
    with provider(wire, answers) as (url, seen):
        client: Any = (
            OpenAIChatModel("gpt-4o-mini", base_url=f"{url}/v1", api_key="k")
            if wire == "openai"
            else AnthropicModel("claude-3-5-haiku-latest", base_url=url, api_key="k")
        )
        agent = Agent(
            name="weather", model=client, output_type=Weather, prices={client.name: Price.free()}
        )
        async with engine_for(store) as engine:
            result = await engine.run(agent, "Weather in Paris?", run_id="r1")
            await check_invariants(engine, "r1", agent=agent, result=result)

    assert result.value == VALUE and result.turns == 2
    [revision] = of_type(await run_log(store, "r1"), RevisionRequested)
    assert revision.issues == ("temp_c: Field required",)
    schema = Weather.model_json_schema()
    for body in seen:
        if wire == "openai":
            assert body["response_format"]["type"] == "json_schema"
            sent = body["response_format"]["json_schema"]
            assert (sent["name"], sent["schema"]) == ("Weather", schema)
        else:
            assert body["tools"] == [
                {
                    "name": "Weather",
                    "description": body["tools"][0]["description"],
                    "input_schema": schema,
                }
            ]
            assert body["tool_choice"] == {"type": "tool", "name": "Weather"}
    # The revision reached the server: the second request ends with the issues.
    last = seen[1]["messages"][-1]
    text = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
    assert text.endswith("1. temp_c: Field required")
