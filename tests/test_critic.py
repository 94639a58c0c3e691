"""The critic's building blocks: every check, the JSON-schema subset, the judge, configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agentledger.engine._errors import EngineError
from agentledger.engine.models._model import ModelReply
from agentledger.engine.policies._checks import (
    JUDGE_CHECK_NAME,
    BannedPhrases,
    Check,
    Citations,
    CriticConfigError,
    JsonSchema,
    JudgeVerdict,
    LLMJudge,
    MaxLength,
    RequiredKeywords,
    UserCheck,
)
from agentledger.engine.policies._critic import Critic
from agentledger.engine.testing import ScriptedModel
from agentledger.events import CheckResult
from agentledger.projections import SystemMessage, UserMessage


def fail(name: str, issue: str) -> CheckResult:
    return CheckResult(name=name, passed=False, issue=issue)


def ok(name: str) -> CheckResult:
    return CheckResult(name=name, passed=True)


# -- citations, length, phrases, keywords --------------------------------------------------------


def test_citations() -> None:
    assert Citations().check("Lisbon is the capital [1].") == ok("citations")
    assert Citations().check("Lisbon is the capital.") == fail(
        "citations",
        r"the answer has 0 citation marker(s) matching \[\d+\]; at least 1 are required",
    )
    two = Citations(min_count=2, name="two_citations")
    assert two.check("a [1] b [12]") == ok("two_citations")
    assert two.check("a [1] b [x]").issue == (
        r"the answer has 1 citation marker(s) matching \[\d+\]; at least 2 are required"
    )
    assert Citations(r"\(source: \w+\)").check("x (source: wiki)").passed


def test_citations_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        Citations("[")
    with pytest.raises(ValueError, match="at least 1"):
        Citations(min_count=0)


def test_max_length_in_characters_and_words() -> None:
    assert MaxLength(chars=5).check("12345") == ok("max_length")
    assert MaxLength(chars=5).check("123456") == fail(
        "max_length", "the answer is 6 characters long; the maximum is 5"
    )
    assert MaxLength(words=2).check("  one \n two ") == ok("max_length")
    assert MaxLength(words=2).check("one two three").issue == (
        "the answer is 3 words long; the maximum is 2"
    )
    assert MaxLength(chars=5, words=1).check("one two").issue == (
        "the answer is 7 characters long; the maximum is 5 and 2 words long; the maximum is 1"
    )
    # Code points, not bytes: "é" is one character.
    assert MaxLength(chars=3).check("été").passed


def test_max_length_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="chars, words or both"):
        MaxLength()
    with pytest.raises(ValueError, match="at least 1"):
        MaxLength(chars=0)


def test_banned_phrases_name_every_phrase_found_in_configured_order() -> None:
    check = BannedPhrases(["as an AI", "I cannot", "delve"])
    assert check.check("The answer is 42.") == ok("banned_phrases")
    assert check.check("Let me DELVE into it. As An AI, I cannot.") == fail(
        "banned_phrases", 'the answer contains banned phrase(s): "as an AI", "I cannot", "delve"'
    )
    strict = BannedPhrases(["as an AI"], case_sensitive=True)
    assert strict.check("AS AN AI").passed
    assert not strict.check("as an AI").passed


def test_phrase_lists_must_be_lists_of_non_empty_strings() -> None:
    # A bare string would otherwise ban each of its letters.
    with pytest.raises(ValueError, match="not one string"):
        BannedPhrases("as an AI")
    with pytest.raises(ValueError, match="non-empty"):
        BannedPhrases([])
    with pytest.raises(ValueError, match="non-empty"):
        RequiredKeywords(["Lisbon", ""])


def test_required_keywords_name_the_missing_ones() -> None:
    check = RequiredKeywords(["Lisbon", "Porto", "Faro"])
    assert check.check("lisbon, porto and faro") == ok("required_keywords")
    assert check.check("Lisbon only") == fail(
        "required_keywords", 'the answer is missing required keyword(s): "Porto", "Faro"'
    )
    assert not RequiredKeywords(["Lisbon"], case_sensitive=True).check("lisbon").passed


# -- user callables ------------------------------------------------------------------------------


def test_user_check_passes_fails_and_never_raises() -> None:
    def no_urls(answer: str) -> str | None:
        return "the answer contains a URL" if "http" in answer else None

    def broken(answer: str) -> str | None:
        raise KeyError("config")

    def returns_bool(answer: str) -> Any:
        return False

    assert UserCheck("no_urls", no_urls).check("plain") == ok("no_urls")
    assert UserCheck("no_urls", no_urls).check("see http://x") == fail(
        "no_urls", "the answer contains a URL"
    )
    assert UserCheck("broken", broken).check("x") == fail(
        "broken", "the check raised KeyError: 'config'"
    )
    assert UserCheck("b", returns_bool).check("x") == fail(
        "b", "the check returned False; a check returns an issue or None"
    )
    assert UserCheck("e", lambda a: "").check("x") == fail("e", "the answer failed the check 'e'")
    with pytest.raises(ValueError):
        UserCheck("", no_urls)


def test_checks_are_checks() -> None:
    for check in [
        Citations(),
        MaxLength(chars=1),
        BannedPhrases(["x"]),
        RequiredKeywords(["x"]),
        JsonSchema({}),
        UserCheck("u", lambda a: None),
    ]:
        assert isinstance(check, Check)


# -- JSON schema: the dict subset ----------------------------------------------------------------

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 5},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "role": {"enum": ["admin", "user", 1]},
        "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "note": {"type": ["string", "null"]},
        "first name": {"type": "string"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("answer", "errors"),
    [
        ('{"name": "Ann", "age": 30}', []),
        ('  {"name": "Ann", "age": 30.0, "note": null}\n', []),  # 30.0 is an integer in JSON
        ('{"name": "Ann", "age": 30, "role": 1, "kind": "person", "tags": ["a"]}', []),
        ('{"age": 30}', ['$: missing required property "name"']),
        ('{"name": "Ann", "age": "30"}', ["$.age: expected integer, got string"]),
        ('{"name": "Ann", "age": true}', ["$.age: expected integer, got boolean"]),
        ('{"name": "Ann", "age": 30.5}', ["$.age: expected integer, got number"]),
        (
            '{"name": "", "age": -1}',
            ["$.name: expected at least 1 characters, got 0", "$.age: expected at least 0, got -1"],
        ),
        (
            '{"name": "Annabel", "age": 151}',
            [
                "$.name: expected at most 5 characters, got 7",
                "$.age: expected at most 150, got 151",
            ],
        ),
        ('{"name": "A", "age": 1, "score": 0}', ["$.score: expected more than 0, got 0"]),
        ('{"name": "A", "age": 1, "score": 1}', ["$.score: expected less than 1, got 1"]),
        (
            '{"name": "A", "age": 1, "role": true}',
            ['$.role: expected one of ["admin", "user", 1], got true'],
        ),
        ('{"name": "A", "age": 1, "kind": "robot"}', ['$.kind: expected "person", got "robot"']),
        ('{"name": "A", "age": 1, "tags": []}', ["$.tags: expected at least 1 items, got 0"]),
        (
            '{"name": "A", "age": 1, "tags": ["a", 2, "c"]}',
            ["$.tags: expected at most 2 items, got 3", "$.tags[1]: expected string, got integer"],
        ),
        ('{"name": "A", "age": 1, "note": 3}', ["$.note: expected string or null, got integer"]),
        (
            '{"name": "A", "age": 1, "first name": 3}',
            ['$["first name"]: expected string, got integer'],
        ),
        ('{"name": "A", "age": 1, "extra": 3}', ['$: unexpected property "extra"']),
        ("[1, 2]", ["$: expected object, got array"]),
    ],
)
def test_json_schema_subset(answer: str, errors: list[str]) -> None:
    result = JsonSchema(PERSON).check(answer)
    if not errors:
        assert result == ok("json_schema")
    else:
        assert result == fail(
            "json_schema", "the answer does not match the JSON schema: " + "; ".join(errors)
        )


def test_json_schema_additional_properties_as_a_schema_and_boolean_schemas() -> None:
    check = JsonSchema({"type": "object", "additionalProperties": {"type": "integer"}})
    assert check.check('{"a": 1, "b": 2}').passed
    assert check.check('{"a": 1, "b": "x"}').issue == (
        "the answer does not match the JSON schema: $.b: expected integer, got string"
    )
    assert JsonSchema({"properties": {"x": True, "y": False}}).check('{"x": [1]}').passed
    assert JsonSchema({"properties": {"y": False}}).check('{"y": 1}').issue == (
        "the answer does not match the JSON schema: $.y: no value is allowed here"
    )
    # Keywords apply to their own types only, as in JSON Schema.
    assert JsonSchema({"minLength": 3, "minimum": 5}).check("[1]").passed


def test_a_value_of_the_wrong_type_gets_one_error_not_one_per_keyword() -> None:
    check = JsonSchema({"type": "integer", "enum": [1, 2], "const": 1, "minimum": 1})
    assert check.check('"x"').issue == (
        "the answer does not match the JSON schema: $: expected integer, got string"
    )
    assert check.check("0").issue == (
        "the answer does not match the JSON schema: $: expected 1, got 0; "
        "$: expected one of [1, 2], got 0; $: expected at least 1, got 0"
    )
    assert JsonSchema({"enum": [[1, {"a": True}]]}).check('[1.0, {"a": true}]').passed
    assert not JsonSchema({"enum": [[1, {"a": True}]]}).check('[1, {"a": 1}]').passed


def test_json_schema_lists_at_most_ten_errors() -> None:
    check = JsonSchema({"type": "array", "items": {"type": "string"}})
    issue = check.check(json.dumps(list(range(13)))).issue
    assert issue is not None
    assert issue.count("expected string, got integer") == 10
    assert issue.endswith("$[9]: expected string, got integer; and 3 more")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "Expecting value: line 1 column 1 (char 0)"),
        ("Sure! {}", "Expecting value: line 1 column 1 (char 0)"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": 1} trailing', "Extra data: line 1 column 10 (char 9)"),
        ("[" * 100_000, "it is nested too deeply"),
    ],
)
def test_json_schema_needs_the_whole_answer_to_be_json(answer: str, reason: str) -> None:
    assert JsonSchema({}).check(answer) == fail(
        "json_schema", f"the answer is not valid JSON: {reason}"
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"anyOf": [{"type": "string"}]},
            'the JSON schema at \\$ uses unsupported keyword\\(s\\) "anyOf"',
        ),
        (
            {"properties": {"a": {"$ref": "#/x"}}},
            'at \\$.properties.a uses unsupported keyword\\(s\\) "\\$ref"',
        ),
        ({"type": "text"}, "'type' must be one of string"),
        ({"type": []}, "'type' must be one of string"),
        ({"minLength": -1}, "'minLength' must be a non-negative integer"),
        ({"maxItems": True}, "'maxItems' must be a non-negative integer"),
        ({"minimum": "0"}, "'minimum' must be a finite number"),
        ({"required": "name"}, "'required' must be a list"),
        ({"enum": []}, "'enum' must be a non-empty list"),
        (
            {"items": [{"type": "string"}]},
            "the JSON schema at \\$.items must be an object or a boolean",
        ),
        ({"properties": []}, "'properties' must be an object"),
    ],
)
def test_json_schema_outside_the_subset_is_refused_when_built(
    schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        JsonSchema(schema)


def test_json_schema_keeps_its_own_copy_of_the_schema() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
    check = JsonSchema(schema)
    schema["properties"]["a"] = {"anyOf": []}
    assert not check.check('{"a": 1}').passed


def test_json_schema_ignores_annotations() -> None:
    check = JsonSchema(
        {"$schema": "x", "title": "T", "description": "d", "type": "string", "default": "a"}
    )
    assert check.check('"hello"').passed


# -- JSON schema: pydantic models ----------------------------------------------------------------


class Answer(BaseModel):
    city: str
    population: int


def test_json_schema_from_a_pydantic_model() -> None:
    check = JsonSchema(Answer)
    assert check.check('{"city": "Lisbon", "population": 545000}') == ok("json_schema")
    assert check.check('{"population": "many"}') == fail(
        "json_schema",
        "the answer does not match the JSON schema: $.city: Field required; "
        "$.population: Input should be a valid integer, unable to parse string as an integer",
    )
    issue = check.check("Lisbon").issue
    assert issue is not None and issue.startswith("the answer is not valid JSON: Invalid JSON")


def test_json_schema_refuses_other_schema_types() -> None:
    with pytest.raises(ValueError, match="pydantic model class or a dict"):
        JsonSchema(int)  # type: ignore[arg-type]


# -- the critic ----------------------------------------------------------------------------------


class Exploding:
    name = "exploding"

    def check(self, answer: str) -> CheckResult:
        raise RuntimeError("bug")


def test_evaluate_runs_every_check_in_order_and_records_every_result() -> None:
    critic = Critic(
        [
            MaxLength(chars=10),
            BannedPhrases(["as an AI"]),
            RequiredKeywords(["Lisbon"]),
            Exploding(),
        ]
    )
    results = critic.evaluate("As an AI, I think Porto.")
    assert results == (
        fail("max_length", "the answer is 24 characters long; the maximum is 10"),
        fail("banned_phrases", 'the answer contains banned phrase(s): "as an AI"'),
        fail("required_keywords", 'the answer is missing required keyword(s): "Lisbon"'),
        fail("exploding", "the check raised RuntimeError: bug"),
    )
    assert not critic.accepted(results)
    assert not critic.wants_judge(results)
    assert critic.issues(results) == tuple(r.issue for r in results)


def test_revision_message_names_every_issue() -> None:
    critic = Critic([MaxLength(chars=10)])
    assert critic.revision_message(["too long", 'missing "Lisbon"']) == (
        "Your answer was not accepted. Revise it so that it fixes every issue below, and reply "
        'with the complete revised answer only:\n1. too long\n2. missing "Lisbon"'
    )
    with pytest.raises(ValueError):
        critic.revision_message([])


def test_accepted_answer_goes_to_the_judge_when_there_is_one() -> None:
    judge = LLMJudge(ScriptedModel([]), "Be polite.")
    with_judge = Critic([RequiredKeywords(["Lisbon"])], judge=judge)
    results = with_judge.evaluate("Lisbon")
    assert with_judge.accepted(results) and with_judge.wants_judge(results)
    assert not Critic([RequiredKeywords(["Lisbon"])]).wants_judge(results)
    assert Critic().accepted(Critic().evaluate("anything"))


def test_revisions_are_bounded() -> None:
    critic = Critic([], max_revisions=2)
    assert [critic.may_revise(n) for n in range(4)] == [True, True, False, False]
    assert not Critic([], max_revisions=0).may_revise(0)
    with pytest.raises(ValueError):
        Critic([], max_revisions=-1)


def test_check_names_are_unique_and_the_judge_name_is_reserved() -> None:
    with pytest.raises(ValueError, match='several critic checks are named "max_length"'):
        Critic([MaxLength(chars=1), MaxLength(words=1)])
    Critic([MaxLength(chars=1), MaxLength(words=1, name="max_words")])
    with pytest.raises(ValueError, match="reserved"):
        Critic([UserCheck(JUDGE_CHECK_NAME, lambda a: None)])


@settings(max_examples=60, deadline=None)
@given(answer=st.text(max_size=60), limit=st.integers(1, 40))
def test_evaluate_is_one_result_per_check_and_accepts_iff_all_pass(answer: str, limit: int) -> None:
    checks: list[Check] = [MaxLength(chars=limit), BannedPhrases(["ab"]), Citations()]
    critic = Critic(checks)
    results = critic.evaluate(answer)
    assert [r.name for r in results] == ["max_length", "banned_phrases", "citations"]
    assert results[0].passed == (len(answer) <= limit)
    assert results[1].passed == ("ab" not in answer.casefold())
    assert critic.accepted(results) == all(r.passed for r in results)
    assert all((r.issue is None) == r.passed for r in results)
    assert critic.evaluate(answer) == results  # pure


# -- the LLM judge -------------------------------------------------------------------------------


def judge() -> LLMJudge:
    return LLMJudge(ScriptedModel([], name="judge-model"), "  Polite.\nOn topic.  ", max_tokens=99)


def test_judge_request() -> None:
    request = judge().request("Capital of Portugal?", "Lisbon [1]")
    system, user = request.messages
    assert isinstance(system, SystemMessage) and isinstance(user, UserMessage)
    assert "Polite.\nOn topic.\n\nReply with ONLY a JSON object" in system.content
    assert '{"accepted": true or false, "issues": ["..."]}' in system.content
    assert user.content == (
        "<task>\nCapital of Portugal?\n</task>\n\n<answer>\nLisbon [1]\n</answer>"
    )
    assert request.max_tokens == 99
    assert request.temperature == 0.0
    assert request.tools == ()


def test_judge_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        LLMJudge(ScriptedModel([]), "  ")
    with pytest.raises(ValueError):
        LLMJudge(ScriptedModel([]), "x", max_tokens=0)


def parsed(text: str) -> JudgeVerdict:
    return judge().parse(ModelReply(text=text))


FORMAT = '{"accepted": true or false, "issues": ["..."]}'
BAD_FORMAT = f"the judge's reply did not follow the format {FORMAT}:"


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ('{"accepted": true, "issues": []}', JudgeVerdict(True)),
        ('{"accepted": true}', JudgeVerdict(True)),
        (
            '{"accepted": false, "issues": ["rude", "  ", " off topic "]}',
            JudgeVerdict(False, ("rude", "off topic")),
        ),
        (
            '{"accepted": false, "issues": null}',
            JudgeVerdict(False, ("the judge rejected the answer without naming an issue",)),
        ),
        (
            'Here is my verdict:\n```json\n{"accepted": false, "issues": ["rude"]}\n```\nBye {',
            JudgeVerdict(False, ("rude",)),
        ),
        ('{"note": 1} then {"accepted": true, "issues": []}', JudgeVerdict(True)),
        (
            'Verdict: {"accepted": true, "issues": ["{nested}"]} ok',
            JudgeVerdict(True, ("{nested}",)),
        ),
    ],
)
def test_judge_parse_valid(text: str, verdict: JudgeVerdict) -> None:
    assert parsed(text) == verdict


@pytest.mark.parametrize(
    ("text", "issue"),
    [
        ("", "the judge's reply was empty"),
        (
            "The answer is fine.",
            "the judge's reply was not valid JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (
            '{"accepted": true, "issues": [',
            "the judge's reply was not valid JSON: Expecting value: line 1 column 31 (char 30)",
        ),
        ("[true]", "the judge's reply was not valid JSON: expected a JSON object, got list"),
        (
            '{"accepted": "yes"}',
            f'{BAD_FORMAT} it has a non-boolean "accepted"',
        ),
        (
            '{"verdict": true}',
            f'{BAD_FORMAT} it has no "accepted"',
        ),
        (
            '{"accepted": false, "issues": "rude"}',
            f'{BAD_FORMAT} "issues" is not a list of strings',
        ),
        (
            '{"accepted": false, "issues": [1]}',
            f'{BAD_FORMAT} "issues" is not a list of strings',
        ),
    ],
)
def test_judge_parse_malformed_is_a_failed_judge_not_an_error(text: str, issue: str) -> None:
    verdict = parsed(text)
    assert verdict == JudgeVerdict(False, (issue,), judge_failed=True)
    assert verdict.check_result() == fail(JUDGE_CHECK_NAME, issue)


def test_judge_verdict_as_a_check() -> None:
    assert JudgeVerdict(True, ("minor",)).check_result() == ok("llm_judge")
    assert JudgeVerdict(False, ("rude", "long")).check_result() == fail("llm_judge", "rude; long")


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.text(alphabet='{}[]":,truefalsnisu \\', max_size=80),
        st.builds(lambda a, b: f'{a}{{"accepted": {b}', st.text(max_size=10), st.text(max_size=10)),
    )
)
def test_judge_parse_never_raises(text: str) -> None:
    verdict = parsed(text)
    assert verdict.accepted or verdict.issues
    if verdict.judge_failed:
        assert not verdict.accepted and len(verdict.issues) == 1


# -- configuration -------------------------------------------------------------------------------


def no_urls(answer: str) -> str | None:
    return "a URL" if "http" in answer else None


SCHEMA = {"type": "object", "required": ["city"]}


def test_from_config_builds_every_check_type() -> None:
    model = ScriptedModel([], name="judge-model")
    critic = Critic.from_config(
        {
            "max_revisions": 3,
            "checks": [
                {"type": "max_length", "chars": 800, "words": 100},
                {"type": "banned_phrases", "phrases": ["as an AI"], "case_sensitive": True},
                {"type": "required_keywords", "keywords": ("Lisbon",), "name": "mentions_lisbon"},
                {"type": "citations", "min_count": 2, "pattern": r"\[\w+\]"},
                {"type": "json_schema", "schema": SCHEMA},
                {"type": "callable", "name": "no_urls"},
            ],
            "judge": {"model": "cheap", "criteria": "Polite.", "max_tokens": 64, "temperature": 1},
        },
        callables={"no_urls": no_urls},
        models={"cheap": model},
    )
    assert critic == Critic(
        [
            MaxLength(chars=800, words=100),
            BannedPhrases(["as an AI"], case_sensitive=True),
            RequiredKeywords(["Lisbon"], name="mentions_lisbon"),
            Citations(r"\[\w+\]", 2),
            JsonSchema(SCHEMA),
            UserCheck("no_urls", no_urls),
        ],
        judge=LLMJudge(model, "Polite.", 64, 1.0),
        max_revisions=3,
    )


def test_from_config_defaults_match_the_classes() -> None:
    critic = Critic.from_config(
        {
            "checks": [
                {"type": "citations"},
                {"type": "banned_phrases", "phrases": ["x"]},
                {"type": "required_keywords", "keywords": ["y"]},
                {"type": "json_schema", "schema": {}},
            ]
        }
    )
    assert critic == Critic(
        [Citations(), BannedPhrases(["x"]), RequiredKeywords(["y"]), JsonSchema({})]
    )
    assert Critic.from_config({}) == Critic()


def config_problems(config: Any, **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(CriticConfigError) as caught:
        Critic.from_config(config, **kwargs)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, EngineError)
    assert str(caught.value) == "invalid critic configuration: " + "; ".join(caught.value.problems)
    return caught.value.problems


KNOWN = "citations, max_length, banned_phrases, required_keywords, json_schema, callable"


def test_from_config_names_every_problem_at_once() -> None:
    problems = config_problems(
        {
            "checks": [
                {"type": "spellcheck"},
                {"chars": 10},
                "max_length",
                {"type": "max_length", "char": 10},
                {"type": "max_length", "chars": "800"},
                {"type": "max_length", "chars": True},
                {"type": "max_length"},
                {"type": "banned_phrases", "phrases": "as an AI"},
                {"type": "citations", "pattern": "["},
                {"type": "json_schema", "schema": {"oneOf": []}},
                {"type": "json_schema"},
                {"type": "callable", "name": "missing"},
                {"type": "max_length", "chars": 5},
            ],
            "judge": {"model": "nope", "criteria": "x"},
        },
        callables={"no_urls": no_urls},
    )
    assert problems == (
        f"checks[0]: the unknown type 'spellcheck'; a check's type is one of {KNOWN}",
        f"checks[1]: no type; a check's type is one of {KNOWN}",
        f"checks[2]: expected an object with a type ({KNOWN})",
        "checks[3] (max_length).char: Extra inputs are not permitted",
        "checks[4] (max_length).chars: Input should be a valid integer",
        "checks[5] (max_length).chars: Input should be a valid integer",
        "checks[6] (max_length): MaxLength needs chars, words or both",
        "checks[7] (banned_phrases).phrases: Input should be a valid list",
        "checks[8] (citations): Citations.pattern is not a valid regular expression: "
        "unterminated character set at position 0",
        'checks[9] (json_schema): the JSON schema at $ uses unsupported keyword(s) "oneOf"; '
        "the supported subset is additionalProperties, const, enum, exclusiveMaximum, "
        "exclusiveMinimum, items, maxItems, maxLength, maximum, minItems, minLength, minimum, "
        "properties, required, type",
        "checks[10] (json_schema).schema: Field required",
        "checks[11] (callable): no callable named 'missing' was given (known: no_urls)",
        "judge: no model named 'nope' was given (known: none were given)",
    )


def test_from_config_top_level_and_judge_errors() -> None:
    assert config_problems({"max_revision": 2}) == ("max_revision: Extra inputs are not permitted",)
    assert config_problems({"max_revisions": -1}) == (
        "max_revisions: Input should be greater than or equal to 0",
    )
    assert config_problems({"checks": {"type": "citations"}}) == (
        "checks: Input should be a valid list",
    )
    assert config_problems(["checks"]) == ("expected a mapping, got list",)
    model = ScriptedModel([])
    assert config_problems(
        {"judge": {"model": "m", "criteria": 3, "max_tokens": "9"}}, models={"m": model}
    ) == (
        "judge.criteria: Input should be a valid string",
        "judge.max_tokens: Input should be a valid integer",
    )
    assert config_problems(
        {"judge": {"model": "m", "criteria": " ", "max_tokens": 0}}, models={"m": model}
    ) == ("judge: LLMJudge needs criteria",)
    assert config_problems(
        {"checks": [{"type": "max_length", "chars": 1}, {"type": "max_length", "words": 1}]}
    ) == ('several critic checks are named "max_length"; names must differ',)
