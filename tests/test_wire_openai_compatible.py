"""Per-server wire bodies of the OpenAI-compatible client: llama.cpp, vLLM, Ollama and OpenAI.

Request bodies are compared with files and replies parsed from files: recorded from a real
llama.cpp server (``fixtures/wire/llama-cpp-server``), written from the servers' source for vLLM
and Ollama and from the API reference for OpenAI (each folder's README says which).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_openai_model import PARIS, QUESTION, SYSTEM, TOKYO
from test_openai_model import fixture as openai_fixture
from wire_cases import (
    AS_JSON,
    ASK,
    FOLLOW_UP,
    HELLO,
    LOOKUP,
    LOOSE_ORDER,
    SAMPLING,
    STRICT_ORDER,
    Replies,
    load,
    matches_file,
)

from agentledger.engine._errors import (
    AgentConfigError,
    ModelRequestError,
    ModelServerError,
)
from agentledger.engine.models._http import safe_url
from agentledger.engine.models._model import ModelReply, ModelRequest, Sampling
from agentledger.engine.models._openai import OpenAIChatModel
from agentledger.engine.models._wire import WIRE_PROFILES, strict_compatible, wire_profile
from agentledger.events import ToolCall, Usage
from agentledger.projections._messages import (
    AssistantMessage,
    Message,
    ToolResultMessage,
    UserMessage,
)

LLAMA = "llama-cpp-server"
LOCAL = "http://127.0.0.1:8000/v1"


def llama(replies: Replies, **kwargs: Any) -> OpenAIChatModel:
    return OpenAIChatModel(
        "smollm2-135m", server="llama.cpp", base_url=LOCAL, client=replies.client(), **kwargs
    )


def body_of(server: str, model: str, request: ModelRequest) -> dict[str, Any]:
    return OpenAIChatModel(model, server=server, base_url=LOCAL, api_key="").request_body(request)


# llama.cpp (llama-cpp-python's server): recorded bodies.


async def test_llama_cpp_plain_chat_is_the_recorded_request_and_reply() -> None:
    replies = Replies(200, load(f"{LLAMA}/01-chat.response.json"))

    reply = await llama(replies).complete(ModelRequest(messages=HELLO, max_tokens=16))

    assert replies.sent == [load(f"{LLAMA}/01-chat.request.json")]
    assert reply == ModelReply(
        text="Frozen.",
        usage=Usage(input_tokens=25, output_tokens=4),
        finish_reason="stop",
        model="smollm2-135m",
    )


@pytest.mark.parametrize("choice", ["lookup_order", "required"])
async def test_llama_cpp_forced_tool_call_is_the_recorded_request(choice: str) -> None:
    # "required" is not implemented by that server (an assertion: HTTP 500); with one tool it
    # means that tool, so it is sent by name.
    replies = Replies(200, load(f"{LLAMA}/02-forced-tool-call.response.json"))
    request = ModelRequest(messages=ASK, tools=[LOOKUP], tool_choice=choice, max_tokens=64)

    reply = await llama(replies).complete(request)

    assert replies.sent == [load(f"{LLAMA}/02-forced-tool-call.request.json")]
    assert reply.text == ""
    assert reply.tool_calls == (
        ToolCall(
            id="call__0_lookup_order_cmpl-b4fa1dc7-614b-477a-a386-6b7d10983af1",
            name="lookup_order",
            arguments='{ "order_id" : 123456 }',
        ),
    )
    assert reply.finish_reason == "tool_calls"


def test_the_tool_turn_carries_what_each_server_accepts() -> None:
    request = ModelRequest(messages=FOLLOW_UP, tools=[LOOKUP], max_tokens=32)
    recorded_null = load(f"{LLAMA}/03-tool-followup-content-null.request.json")
    recorded_empty = load(f"{LLAMA}/04-tool-followup-content-empty.request.json")

    # OpenAI's own shape (null), which that llama.cpp server answered with a 500 ...
    openai = body_of("openai", "smollm2-135m", request)
    assert openai.pop("max_completion_tokens") == 32
    assert openai == {k: v for k, v in recorded_null.items() if k != "max_tokens"}
    # ... and for llama.cpp the empty string it accepted, with tool_choice "auto" said out
    # loud: under chatml-function-calling a request without tool_choice offers no tools.
    assert body_of("llama.cpp", "smollm2-135m", request) == recorded_empty | {"tool_choice": "auto"}
    assert body_of("ollama", "m", request)["messages"][1]["content"] == ""
    assert body_of("vllm", "m", request)["messages"][1]["content"] is None


async def test_a_500_that_says_the_request_is_invalid_is_not_retried() -> None:
    replies = Replies(500, load(f"{LLAMA}/03-tool-followup-content-null.response-500.json"))
    model = OpenAIChatModel(
        "smollm2-135m", base_url=LOCAL, client=replies.client(), max_tokens_field="max_tokens"
    )

    with pytest.raises(ModelRequestError) as caught:
        await model.complete(ModelRequest(messages=FOLLOW_UP, tools=[LOOKUP], max_tokens=32))

    assert replies.sent == [load(f"{LLAMA}/03-tool-followup-content-null.request.json")]
    error = caught.value
    assert not error.retryable
    assert error.status_code == 500
    assert str(error) == (
        "smollm2-135m at http://127.0.0.1:8000/v1/chat/completions: HTTP 500, request rejected "
        "as invalid: 7 validation errors, e.g. "
        "messages.1.ChatCompletionRequestAssistantMessage.content: Input should be a valid string"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "CUDA error: out of memory", "type": "internal_server_error"}},
        {"error": {"message": "1 validation error in the output parser", "type": "x"}},
        {"detail": "Internal Server Error"},
    ],
)
async def test_a_plain_500_stays_a_retryable_server_error(body: dict[str, Any]) -> None:
    with pytest.raises(ModelServerError) as caught:
        await llama(Replies(500, body)).complete(ModelRequest(messages=HELLO, max_tokens=16))

    assert caught.value.retryable
    assert "at http://127.0.0.1:8000/v1/chat/completions: HTTP 500" in str(caught.value)


async def test_llama_cpp_gets_the_output_limit_it_honours() -> None:
    # Recorded: with max_completion_tokens=5 the server wrote 979 tokens.
    recorded = load(f"{LLAMA}/05-max-completion-tokens-ignored.request.json")
    request = ModelRequest(messages=[UserMessage(content="Write a long story about a cat.")])
    request = ModelRequest(messages=request.messages, max_tokens=5)
    replies = Replies(200, load(f"{LLAMA}/05-max-completion-tokens-ignored.response.json"))

    reply = await OpenAIChatModel("smollm2-135m", base_url=LOCAL, client=replies.client()).complete(
        request
    )

    assert replies.sent == [recorded]  # what the "openai" profile sends ...
    assert reply.usage.output_tokens == 979  # ... and what it got
    assert body_of("llama.cpp", "smollm2-135m", request) == {
        "model": "smollm2-135m",
        "messages": recorded["messages"],
        "max_tokens": 5,
    }
    assert body_of("ollama", "m", request)["max_tokens"] == 5
    assert body_of("vllm", "m", request)["max_completion_tokens"] == 5
    # The old override still wins over the profile.
    override = OpenAIChatModel("m", server="llama.cpp", max_tokens_field="max_completion_tokens")
    assert override.request_body(request)["max_completion_tokens"] == 5


async def test_a_404_names_the_url_and_suggests_the_missing_v1() -> None:
    replies = Replies(404, load(f"{LLAMA}/08-wrong-path.response-404.json"))
    model = OpenAIChatModel(
        "smollm2-135m",
        server="llama.cpp",
        base_url="http://user:secret@127.0.0.1:8000/",
        client=replies.client(),
    )

    with pytest.raises(ModelRequestError) as caught:
        await model.complete(ModelRequest(messages=HELLO, max_tokens=16))

    assert replies.sent == [load(f"{LLAMA}/08-wrong-path.request.json")]
    message = str(caught.value)
    assert message == (
        "smollm2-135m at http://127.0.0.1:8000/chat/completions: HTTP 404: Not Found; "
        "is /v1 missing from the base URL? (try base_url='http://127.0.0.1:8000/v1')"
    )
    assert "\n" not in message and "secret" not in message


def test_urls_in_errors_lose_credentials_query_and_fragment() -> None:
    assert safe_url("https://u:p@gw.example:8443/v1/chat/completions?api-key=s3cret#x") == (
        "https://gw.example:8443/v1/chat/completions"
    )
    assert safe_url("http://u:p@127.0.0.1:1:1/v1?key=s") == "http://127.0.0.1:1:1/v1"


def test_llama_cpp_structured_output_and_sampling_from_source() -> None:
    request = ModelRequest(messages=AS_JSON, max_tokens=64, sampling=SAMPLING, output=LOOSE_ORDER)
    assert matches_file(
        body_of("llama.cpp", "smollm2-135m", request),
        "llama-cpp-server-source/03-structured-output.request.json",
    )


# vLLM and Ollama: written from their source (see the folders' READMEs).


@pytest.mark.parametrize("server", ["vllm", "ollama"])
async def test_tool_call_and_follow_up(server: str) -> None:
    name = {"vllm": "Qwen/Qwen2.5-1.5B-Instruct", "ollama": "qwen2.5:1.5b"}[server]
    first = Replies(200, load(f"{server}/01-tool-call.response.json"))
    model = OpenAIChatModel(name, server=server, base_url=LOCAL, client=first.client())

    call = await model.complete(ModelRequest(messages=ASK, tools=[LOOKUP], max_tokens=64))

    assert matches_file(first.sent[0], f"{server}/01-tool-call.request.json")
    [made] = call.tool_calls
    assert made.name == "lookup_order" and made.arguments.replace(" ", "") == '{"order_id":123456}'
    assert call.text == "" and call.finish_reason == "tool_calls"

    second = Replies(200, load(f"{server}/02-tool-followup.response.json"))
    model = OpenAIChatModel(name, server=server, base_url=LOCAL, client=second.client())
    request = ModelRequest(messages=FOLLOW_UP, tools=[LOOKUP], max_tokens=32, sampling=SAMPLING)

    answer = await model.complete(request)

    assert matches_file(second.sent[0], f"{server}/02-tool-followup.request.json")
    assert answer.text == "Order 123456 has shipped."
    assert answer.tool_calls == ()


@pytest.mark.parametrize("server", ["vllm", "ollama"])
async def test_structured_output(server: str) -> None:
    replies = Replies(200, load(f"{server}/03-structured-output.response.json"))
    model = OpenAIChatModel("m", server=server, base_url=LOCAL, client=replies.client())

    reply = await model.complete(ModelRequest(messages=AS_JSON, max_tokens=64, output=LOOSE_ORDER))

    assert matches_file(replies.sent[0], f"{server}/03-structured-output.request.json")
    assert reply.text == '{"order_id": 123456, "state": "shipped"}'


def test_tool_choice_per_server() -> None:
    def choice(server: str, tool_choice: str) -> Any:
        body = body_of(
            server, "m", ModelRequest(messages=ASK, tools=[LOOKUP], tool_choice=tool_choice)
        )
        return body.get("tool_choice", "-"), "tools" in body

    named = {"type": "function", "function": {"name": "lookup_order"}}
    assert choice("openai", "auto") == ("-", True)  # the API's default
    assert choice("vllm", "auto") == ("-", True)  # vLLM defaults to auto when tools are given
    assert choice("llama.cpp", "auto") == ("auto", True)
    assert choice("ollama", "auto") == ("-", True)  # Ollama reads no tool_choice
    for server in ("openai", "vllm", "llama.cpp"):
        assert choice(server, "none") == ("none", True)
        assert choice(server, "lookup_order") == (named, True)
    assert choice("ollama", "none") == ("-", False)  # the tools are not offered
    assert choice("openai", "required") == ("required", True)
    assert choice("vllm", "required") == ("required", True)
    # Without tools, no tool_choice (OpenAI rejects one).
    assert "tool_choice" not in body_of(
        "openai", "m", ModelRequest(messages=ASK, tool_choice="none")
    )
    assert matches_file(
        body_of("vllm", "m", ModelRequest(messages=ASK, tools=[LOOKUP], tool_choice="required")),
        "vllm/04-tool-choice-required.request.json",
    )


def test_settings_a_server_cannot_honour_are_refused() -> None:
    tools = ("lookup_order", "cancel_order")
    with pytest.raises(AgentConfigError, match="ollama server ignores tool_choice"):
        wire_profile("ollama").check_settings("required", Sampling(), tools)
    with pytest.raises(AgentConfigError, match="cannot force a call among 2 tools"):
        wire_profile("llama.cpp").check_settings("required", Sampling(), tools)
    with pytest.raises(AgentConfigError, match="at most 4 stop sequences"):
        wire_profile("openai").check_settings("auto", Sampling(stop=tuple("abcde")), tools)
    wire_profile("llama.cpp").check_settings("required", Sampling(), tools[:1])
    wire_profile("ollama").check_settings("none", Sampling(stop=tuple("abcde")), tools)
    with pytest.raises(ValueError, match="unknown server 'tgi'"):
        OpenAIChatModel("m", server="tgi")  # type: ignore[arg-type]


# OpenAI: the reference profile.


def test_openai_sampling_gives_the_recorded_request() -> None:
    # The recorded after_tools request carried seed 7 through extra_body; Sampling gives it too.
    conversation: list[Message] = [
        SYSTEM,
        QUESTION,
        AssistantMessage(tool_calls=(PARIS, TOKYO)),
        ToolResultMessage(
            tool_call_id=PARIS.id,
            tool_name="get_weather",
            content='{"status":"ok","result":{"city":"Paris","temperature":18,'
            '"conditions":"light rain"}}',
        ),
        ToolResultMessage(
            tool_call_id=TOKYO.id,
            tool_name="get_weather",
            content='{"status":"ok","result":{"city":"Tokyo","temperature":24,'
            '"conditions":"clear"}}',
        ),
        AssistantMessage(content="Paris: 18 °C, light rain. Tokyo: 24 °C, clear."),
        UserMessage(content="Thanks. Which one is better for a walk?"),
    ]
    request = ModelRequest(messages=conversation, max_tokens=256, sampling=Sampling(seed=7))

    assert OpenAIChatModel("gpt-4o-mini").request_body(request) == openai_fixture(
        "after_tools.request.json"
    )


async def test_openai_structured_output_is_strict_only_when_the_schema_allows_it() -> None:
    replies = Replies(200, load("openai/03-structured-output.response.json"))
    model = OpenAIChatModel("gpt-4o-mini", api_key="sk-test", client=replies.client())

    reply = await model.complete(ModelRequest(messages=AS_JSON, max_tokens=64, output=STRICT_ORDER))

    assert matches_file(replies.sent[0], "openai/03-structured-output-strict.request.json")
    assert reply.text == '{"order_id":123456,"state":"shipped"}'
    loose = model.request_body(ModelRequest(messages=AS_JSON, max_tokens=64, output=LOOSE_ORDER))
    assert matches_file(loose, "openai/03-structured-output-loose.request.json")
    assert "strict" not in loose["response_format"]["json_schema"]


def test_strict_mode_rules() -> None:
    assert strict_compatible(STRICT_ORDER.schema)
    assert not strict_compatible(LOOSE_ORDER.schema)
    nested = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": LOOSE_ORDER.schema}},
        "required": ["items"],
        "additionalProperties": False,
    }
    assert not strict_compatible(nested)
    nested["properties"]["items"]["items"] = STRICT_ORDER.schema
    assert strict_compatible(nested)
    # An enum or default listing names is data, not a schema to walk into; so are field names.
    assert strict_compatible({"type": "string", "enum": [{"properties": {}}]})
    fields = {"type": {"type": "string"}, "properties": {"type": "string"}}
    named = {**STRICT_ORDER.schema, "properties": fields, "required": ["type", "properties"]}
    assert strict_compatible(named)
    assert not strict_compatible({**named, "required": ["type"]})


def test_every_built_in_profile_is_named_as_it_is_looked_up() -> None:
    assert {name: profile.name for name, profile in WIRE_PROFILES.items()} == {
        name: name for name in ("openai", "vllm", "llama.cpp", "ollama")
    }
    assert wire_profile(WIRE_PROFILES["vllm"]) is WIRE_PROFILES["vllm"]


async def test_a_long_provider_message_is_cut_to_one_readable_line() -> None:
    said = "boom " + "x" * 2000 + "\n  File app.py, line 1 sk-proj-" + "A" * 40
    with pytest.raises(ModelServerError) as caught:
        await llama(Replies(500, {"error": {"message": said}})).complete(
            ModelRequest(messages=HELLO)
        )

    message = str(caught.value)
    assert "\n" not in message and message.endswith("…")
    assert len(message) < 700
