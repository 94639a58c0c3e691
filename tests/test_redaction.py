"""Redaction before append (on by default): every detector finds its secret and spares a near
miss, the caller's patterns and the off switch work, redacting is idempotent, and a whole run on
a real SQLite file leaves no canary in the file, its WAL, the sink, the CLI's output or an error.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from agentledger.engine import (
    Agent,
    Engine,
    ModelRequest,
    ModelRequestError,
    ModelServerError,
    OpenAIChatModel,
    Redactor,
    ToolContext,
    tool,
)
from agentledger.engine._secrets import BUILTIN_KINDS
from agentledger.engine.testing import ScriptedModel, call, reply
from agentledger.events import (
    FieldIssue,
    MemoryEventStore,
    ModelCallResponded,
    RunStarted,
    ToolArgumentsRejected,
    ToolCall,
    ToolCallSucceeded,
    TurnStarted,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# -- detectors: a secret found, its near miss left alone -----------------------------------------

FOUND = [
    ("openai_key", "key sk-proj-Ab3dEfGh1jKlMnOpQrStUvWx", "key [REDACTED:openai_key]"),
    ("openai_key", "sk-3bF9kLmQ2xYz8WvT5rNp1aGh", "[REDACTED:openai_key]"),
    (
        "anthropic_key",
        "x-api-key: sk-ant-api03-Zx8y_Q2w-ErTy7uIoP1aSdFgHj",
        "x-api-key: [REDACTED:anthropic_key]",
    ),
    ("aws_access_key_id", "id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED:aws_access_key_id]."),
    (
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = [REDACTED:aws_secret_key]",
    ),
    (
        "aws_secret_key",
        '{"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
        '{"AWS_SECRET_ACCESS_KEY": "[REDACTED:aws_secret_key]"}',
    ),
    ("github_token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a!", "[REDACTED:github_token]!"),
    (
        "github_token",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "[REDACTED:github_token]",
    ),
    ("google_api_key", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "[REDACTED:google_api_key]"),
    ("slack_token", "xoxb-123456789012-AbCdEfGhIjKl", "[REDACTED:slack_token]"),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:stripe_key]"),
    ("stripe_key", "rk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:stripe_key]"),
    ("huggingface_token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "[REDACTED:huggingface_token]"),
    (
        "bearer_token",
        "Authorization: Bearer abc.DEF-123_x",
        "Authorization: Bearer [REDACTED:bearer_token]",
    ),
    (
        "bearer_token",
        "curl -H 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln'",
        "curl -H 'Bearer [REDACTED:bearer_token]'",
    ),
    (
        "basic_auth",
        "authorization: Basic dXNlcjpodW50ZXIy",
        "authorization: Basic [REDACTED:basic_auth]",
    ),
    (
        "url_password",
        "postgres://ada:s3cr@t!@db.example.com:5432/app",
        "postgres://ada:[REDACTED:url_password]@db.example.com:5432/app",
    ),
    ("url_password", "redis://:hunter2@cache:6379", "redis://:[REDACTED:url_password]@cache:6379"),
    (
        "private_key",
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nq1w2==\n"
        "-----END RSA PRIVATE KEY-----\nthanks",
        "key:\n[REDACTED:private_key]\nthanks",
    ),
    (
        "private_key",  # cut short, newlines as JSON escapes (a tool call's raw arguments)
        '{"pem": "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjE\\nAAAA"}',
        '{"pem": "[REDACTED:private_key]"}',
    ),
]

SPARED = [
    ("openai_key", "sk-short"),
    ("openai_key", "use sk-learn-compatible-estimators here"),  # no digit, no capital
    ("openai_key", "the task-Ab3dEfGh1jKlMnOpQrStUvWx id"),  # no boundary before sk-
    ("anthropic_key", "sk-ant-tooshort"),
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMP"),  # 14 after the prefix, not 16
    ("aws_secret_key", "aws_secret_access_key = "),
    ("github_token", "ghp_tooShort123"),
    ("google_api_key", "AIzaSyShort"),
    ("slack_token", "xoxb-123"),
    ("stripe_key", "pk_live_4eC39HqLyjWDarjtT1zdp7dc"),  # publishable, not secret
    ("huggingface_token", "hf_short_name"),
    ("bearer_token", "the bearer instruments of 1990"),
    ("basic_auth", "a basic understanding of the topic"),
    ("url_password", "https://example.com:8443/path?user=a@b"),
    ("url_password", "mailto:ada@example.com and ada:pw"),
    (
        "private_key",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEF\n-----END PUBLIC KEY-----",
    ),
]


@pytest.mark.parametrize(("kind", "text", "expected"), FOUND, ids=[f[0] for f in FOUND])
def test_each_detector_finds_its_secret(kind: str, text: str, expected: str) -> None:
    redactor = Redactor()
    assert redactor.redact(text) == expected
    # Only its own detector finds it: with that kind allowed, the text is left as it is.
    assert Redactor(allow=[kind]).redact(text) == text


@pytest.mark.parametrize(("kind", "text"), SPARED, ids=[s[0] for s in SPARED])
def test_a_near_miss_is_left_alone(kind: str, text: str) -> None:
    assert Redactor().redact(text) is text


def test_every_builtin_kind_has_a_positive_and_a_negative_case() -> None:
    assert {f[0] for f in FOUND} == set(BUILTIN_KINDS) == {s[0] for s in SPARED}


def test_redacting_twice_changes_nothing() -> None:
    redactor = Redactor(patterns={"employee_id": r"EMP-[0-9]{6}"})
    text = " | ".join([f[1] for f in FOUND] + [s[1] for s in SPARED] + ["EMP-123456"])
    once = redactor.redact(text)
    assert once != text
    assert redactor.redact(once) is once
    assert "EMP-123456" not in once and "[REDACTED:employee_id]" in once


_PIECES = [f[1] for f in FOUND] + [s[1] for s in SPARED] + [f[2] for f in FOUND]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(_PIECES),
            st.sampled_from(["", " ", "\n", '"', "'", ":", "@", "/", "=", "\\n", "sk-", "://"]),
            st.text(max_size=8),
        ),
        max_size=12,
    )
)
def test_redaction_is_idempotent_on_any_mix_of_secrets_and_text(pieces: list[str]) -> None:
    redactor = Redactor()
    once = redactor.redact("".join(pieces))
    assert redactor.redact(once) == once


def test_the_callers_patterns_named_or_not_compiled_or_not() -> None:
    redactor = Redactor(
        patterns=[r"ACME-[0-9]{8}", ("ticket", re.compile(r"tkt_[a-z]{10}", re.IGNORECASE))]
    )
    assert redactor.redact("id ACME-12345678, TKT_abcdefghij") == (
        "id [REDACTED:custom], [REDACTED:ticket]"
    )
    added = Redactor().with_pattern(r"ACME-[0-9]{8}", name="acme")
    assert added.pattern_names == ("acme",)
    assert added.redact("ACME-12345678 sk_live_4eC39HqLyjWDarjtT1zdp7dc") == (
        "[REDACTED:acme] [REDACTED:stripe_key]"
    )


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ([r"a*"], "matches the empty string"),
        ([r"[A-Z]{8}"], "matches the marker"),  # REDACTED: redacting twice would differ
        ({"Bad Name": r"x+"}, "a pattern's name"),
        ([r"(unclosed"], "not a regular expression"),
    ],
)
def test_a_pattern_that_cannot_work_is_refused(patterns: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Redactor(patterns=patterns)


def test_off_finds_nothing_and_an_unknown_kind_is_refused() -> None:
    off = Redactor.off()
    assert not off.enabled and off.event_filter() is None
    assert off.redact(FOUND[0][1]) == FOUND[0][1]
    with pytest.raises(ValueError, match="unknown kinds"):
        Redactor(allow=["openai"])


# -- events: every content field, nothing that links -------------------------------------------


def test_an_event_is_redacted_in_its_content_and_kept_in_its_links() -> None:
    redactor = Redactor()
    key = "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWx"
    responded = ModelCallResponded(
        run_id="r",
        span_id="s",
        at=T0,
        call_id="m1",
        model="gpt",
        text=f"use {key}",
        tool_calls=(ToolCall(id="c1", name="lookup", arguments=f'{{"k": "{key}"}}'),),
    )
    out = redactor.redact_event(responded)
    assert out.text == "use [REDACTED:openai_key]"
    assert out.tool_calls[0] == ToolCall(
        id="c1", name="lookup", arguments='{"k": "[REDACTED:openai_key]"}'
    )
    assert (out.run_id, out.call_id, out.model) == ("r", "m1", "gpt")

    succeeded = ToolCallSucceeded(
        run_id="r",
        span_id="s",
        at=T0,
        call_id="c1",
        tool_name="lookup",
        result={"rows": [{"dsn": "mysql://u:pw123456@h/db"}], key: 1, "n": 2},
    )
    assert redactor.redact_event(succeeded).result == {
        "rows": [{"dsn": "mysql://u:[REDACTED:url_password]@h/db"}],
        "[REDACTED:openai_key]": 1,
        "n": 2,
    }
    rejected = ToolArgumentsRejected(
        run_id="r",
        span_id="s",
        at=T0,
        call_id="c1",
        tool_name="lookup",
        error_type="invalid_arguments",
        errors=(FieldIssue(loc=("k",), message=f"bad value {key!r}"),),
        raw_arguments=key,
    )
    done = redactor.redact_event(rejected)
    assert done.errors[0].message == "bad value '[REDACTED:openai_key]'"
    assert done.raw_arguments == "[REDACTED:openai_key]"
    # Nothing to do: the very same object (the recorder's filter contract).
    plain = TurnStarted(run_id="r", span_id="s", at=T0, turn=1)
    assert redactor.redact_event(plain) is plain
    assert redactor.redact_event(done) is done


# -- the engine: on by default, off when asked; the state is the redacted log ----------------------


class Query(BaseModel):
    query: str


async def test_the_engine_redacts_by_default_and_the_model_sees_the_marker() -> None:
    key = "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWx"
    seen: list[str] = []

    @tool
    async def lookup(args: Query, ctx: ToolContext) -> dict[str, str]:
        """Look up."""
        seen.append(args.query)
        return {"answer": "token ghp_16C7e42F292c6912E7710c838347Ae178B4a"}

    model = ScriptedModel(
        [reply(tool_calls=[call("lookup", {"query": key}, id="c1")]), reply("done")]
    )
    agent = Agent(name="a", model=model, tools=[lookup])
    async with MemoryEventStore() as store, Engine(store) as engine:
        result = await engine.run(agent, f"my key is {key}")
        replayed = await engine.replay(result.run_id)
        events = await store.read_all()
    assert replayed.matches, replayed.divergence
    # The tool is handed the marker, and the model sees it on the next turn: the log is the truth.
    assert seen == ["[REDACTED:openai_key]"]
    first, second = model.requests
    assert first.messages[-1].content == "my key is [REDACTED:openai_key]"
    assert "[REDACTED:github_token]" in second.messages[-1].content
    started = events[0].event
    assert isinstance(started, RunStarted)
    assert started.task == "my key is [REDACTED:openai_key]"
    log = b"".join(e.event.model_dump_json().encode() for e in events)
    assert b"sk-proj-" not in log and b"ghp_" not in log

    off_model = ScriptedModel([reply("ok")])
    async with MemoryEventStore() as store_off, Engine(store_off, redaction=None) as engine:
        await engine.run(Agent(name="a", model=off_model), f"my key is {key}")
    assert off_model.requests[0].messages[-1].content == f"my key is {key}"


async def test_a_provider_401_body_never_reaches_the_callers_error() -> None:
    key = "sk-proj-Zz9yXw8VuT7sR6qP5oN4mL3k"
    body = (ROOT / "tests" / "fixtures" / "openai" / "error_401.json").read_bytes()

    def handle(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(401, content=body.replace(b"{KEY}", sent.encode()))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    async with OpenAIChatModel("gpt-4o-mini", api_key=key, client=client) as model:
        with pytest.raises(ModelRequestError) as caught:
            await model.complete(ModelRequest(messages=[]))
    message = str(caught.value)
    assert key not in message
    assert "Incorrect API key provided: [REDACTED:openai_key]" in message
    assert caught.value.status_code == 401


# -- end to end: canaries through every path on a real SQLite file ------------------------------


def _figure_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "faults_secrets", ROOT / "benchmarks" / "faults_secrets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_no_canary_reaches_the_file_the_wal_the_sink_the_cli_or_an_error(tmp_path: Path) -> None:
    figure = _figure_module()
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on = figure.measure(tmp_path / "on", runs=3, seed=8, redact=True)
    places = set(on["places_searched"])
    assert {
        "open runs.db-wal",
        "closed runs.db",
        "open sink.jsonl",
        "cli tail",
        "cli show",
    } <= places
    assert on["canaries_planted"] == 3 * len(figure.PATHS) * len(BUILTIN_KINDS)
    assert on["canaries_found"] == 0, on["found_by_place"]
    assert on["kinds_without_markers"] == []
    # The search can fail: without redaction it finds what the engine wrote.
    off = figure.measure(tmp_path / "off", runs=1, seed=8, redact=False)
    assert off["canaries_found"] > 0
    assert off["found_by_place"]["open runs.db-wal"] > 0


async def test_a_key_in_a_body_that_is_not_json_is_redacted_before_the_body_is_cut() -> None:
    key = "sk-proj-" + "Ab3dEfGh1jKlMnOpQrStUvWx" * 4
    # The key straddles the 300th character, where the snippet in the message is cut.
    body = ("x" * 280 + f" {key} trailing").encode()
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(502, content=body))
    )
    async with OpenAIChatModel("gpt-4o-mini", api_key="sk-test", client=client) as model:
        with pytest.raises(ModelServerError) as caught:
            await model.complete(ModelRequest(messages=[]))
    message = str(caught.value)
    assert " [REDACTED:" in message  # the marker may be cut, not the key
    assert "Ab3dEfGh" not in message
