"""The chat service example (examples/chat_service), driven over real HTTP like a browser.

uvicorn serves the app in this process on a free port, with its SQLite log in a temporary
directory and its MCP tool server as a child process; the client is httpx reading the
``text/event-stream`` of ``POST /chat`` as it arrives.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sse_server import Stream, openai_stream, sse_provider

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # examples/ is not installed: it runs from the repository
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from agentledger.engine import Engine, ToolContext, tool  # noqa: E402
from agentledger.engine.testing import ScriptedModel, call, reply, tripwired  # noqa: E402
from agentledger.events import MemoryEventStore, SqliteEventStore, ToolCallSucceeded  # noqa: E402
from examples.chat_service import (  # noqa: E402
    ChatService,
    Settings,
    TravelAnswer,
    create_app,
    open_service,
)
from examples.chat_service.demo_model import DemoModel  # noqa: E402
from examples.chat_service.service import build_agent  # noqa: E402


class City(BaseModel):
    city: str


@dataclass
class Served:
    url: str
    db: Path
    model: DemoModel
    agent: Any = None


@dataclass
class Reply:
    """What one ``POST /chat`` streamed, event by event."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def named(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    @property
    def answer(self) -> Any:
        (answer,) = self.named("answer")
        return answer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The service on a free port of 127.0.0.1, until the test ends."""
    settings = Settings(db=tmp_path / "chat.db", delay=0)
    app = create_app(settings)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    async with asyncio.timeout(20):
        while not server.started:
            if serving.done():
                serving.result()  # startup failed: raise why
            await asyncio.sleep(0.01)
    service = app.state.service
    try:
        yield Served(f"http://127.0.0.1:{port}", settings.db, service.agent.model, service.agent)
    finally:
        server.should_exit = True
        await serving


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """Events of a ``text/event-stream``: (name, data), as a browser's parser makes them."""
    name, data = "message", []
    async for line in lines:
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue  # a comment, e.g. a keep-alive
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)


async def chat(client: httpx.AsyncClient, message: str, conversation: str | None) -> Reply:
    body = {"message": message, "conversation_id": conversation}
    reply = Reply()
    async with client.stream("POST", "/chat", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for name, data in parse_sse(response.aiter_lines()):
            reply.events.append((name, orjson.loads(data)))
    return reply


async def test_a_conversation_streams_over_http(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
        first = await chat(client, "What's the weather in Paris?", None)
        conversation = first.named("conversation")[0]["conversation_id"]
        second = await chat(client, "Should I pack an umbrella there?", conversation)

        for reply in (first, second):
            names = [name for name, _ in reply.events]
            assert names[0] == "conversation" and names[-1] == "answer"
            assert "error" not in names
            deltas = reply.named("delta")
            assert len(deltas) > 1, "the answer streams in pieces"
            assert "".join(d["text"] for d in deltas) == reply.answer["text"]
            assert reply.answer["status"] == "completed"
            assert reply.answer["conversation_id"] == conversation
            # The tool's call and its result, as the MCP server answered it:
            phases = [(t["phase"], t["tool"]) for t in reply.named("tool")]
            assert phases == [("call", "forecast"), ("result", "forecast")]
            result = orjson.dumps(reply.named("tool")[1]["result"])
            assert b"light rain" in result

        value = TravelAnswer.model_validate(first.answer["value"])
        assert value == TravelAnswer(
            reply="Paris: light rain, 18 °C. Take an umbrella.",
            city="Paris",
            temperature_c=18,
            umbrella=True,
        )
        # The second message names no city: only the conversation tells it is Paris.
        again = TravelAnswer.model_validate(second.answer["value"])
        assert again.city == "Paris" and again.umbrella
        assert "as you asked before" in again.reply

        shown = await client.get(f"/conversations/{conversation}")
        assert shown.status_code == 200
        runs = shown.json()["runs"]
        assert [r["run_id"] for r in runs] == [first.answer["run_id"], second.answer["run_id"]]
        assert [r["message"] for r in runs] == [
            "What's the weather in Paris?",
            "Should I pack an umbrella there?",
        ]
        assert runs[1]["follows"] == first.answer["run_id"]
        assert [r["value"] for r in runs] == [first.answer["value"], second.answer["value"]]
        assert runs[0]["tools"] == [
            {
                "tool": "forecast",
                "arguments": {"city": "Paris"},
                "result": {"city": "Paris", "conditions": "light rain", "temperature_c": 18},
            }
        ]

    # The log holds the MCP tool's result, and each run replays without calling anything.
    run_ids = [first.answer["run_id"], second.answer["run_id"]]
    calls = served.model.calls
    async with SqliteEventStore(served.db) as store, Engine(store) as engine:
        for run_id in run_ids:
            events = [r.event for r in await store.read_stream(f"run-{run_id}")]
            succeeded = [e for e in events if isinstance(e, ToolCallSucceeded)]
            assert [e.tool_name for e in succeeded] == ["forecast"]
            assert "light rain" in orjson.dumps(succeeded[0].result).decode()
            untouchable, touched = tripwired(served.agent)
            report = await engine.replay(run_id, agent=untouchable)
            assert report.matches, report
            assert touched == []
    assert served.model.calls == calls


async def test_bad_requests_get_one_clear_line(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
        empty = await client.post("/chat", json={"message": ""})
        assert empty.status_code == 400
        assert empty.json()["error"].startswith("message:")
        broken = await client.post("/chat", content=b"{not json")
        assert broken.status_code == 400
        unknown = await client.get("/conversations/nope")
        assert unknown.status_code == 404
        # The engine refuses the id once the stream has begun: an error event, one line.
        refused = await chat(client, "Paris?", "bad\x00id")
        assert [name for name, _ in refused.events] == ["conversation", "error"]
        (error,) = refused.named("error")
        assert error["error"].startswith("InvalidInputError: ") and "\n" not in error["error"]
        page = await client.get("/")
        assert page.status_code == 200 and "/chat" in page.text


async def test_an_answer_sent_back_for_revision_is_taken_back_from_the_client() -> None:
    """An answer that is not a ``TravelAnswer`` streams, is discarded when the engine sends it
    back, and the revised one streams after it: what the client keeps is the answer."""
    forecast_args = {"city": "Paris"}
    model = ScriptedModel(
        [
            reply(tool_calls=[call("forecast", forecast_args)]),
            reply('{"reply": "Rainy.", "city": "Paris"}'),  # no temperature, no umbrella
            reply(
                TravelAnswer(
                    reply="Rainy.", city="Paris", temperature_c=18, umbrella=True
                ).model_dump_json()
            ),
        ],
        chunk=5,
    )

    @tool
    async def forecast(args: City, ctx: ToolContext) -> dict[str, str]:
        """Stands in for the MCP server's tool."""
        return {"city": args.city, "conditions": "light rain"}

    agent = build_agent(model, [forecast], {})
    async with MemoryEventStore() as store, Engine(store, agents=[agent]) as engine:
        events = [e async for e in ChatService(engine, agent).chat(None, "Paris?")]
    names = [e.name for e in events]
    assert names.count("discard") == 1
    discarded = next(e.data["call_id"] for e in events if e.name == "discard")
    before = names.index("discard")
    assert any(e.name == "delta" and e.data["call_id"] == discarded for e in events[:before])
    kept = [e for e in events if e.name == "delta" and e.data["call_id"] != discarded]
    (answer,) = [e.data for e in events if e.name == "answer"]
    assert "".join(str(e.data["text"]) for e in kept) == answer["text"]
    assert answer["value"] == {
        "reply": "Rainy.",
        "city": "Paris",
        "temperature_c": 18,
        "umbrella": True,
    }


def test_one_command_starts_it(tmp_path: Path) -> None:
    """``python -m examples.chat_service`` prints its URL and serves the page there."""
    command = [sys.executable, "-m", "examples.chat_service", "--port", "0"]
    command += ["--db", str(tmp_path / "chat.db")]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            url = re.search(r"http://\S+/", first)
            assert url is not None, first
            assert "scripted demo model" in first
            page = httpx.get(url.group(0), timeout=20)
            assert page.status_code == 200 and "Travel desk" in page.text
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert (tmp_path / "chat.db").exists()


def _completion_body(
    content: str = "", tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "model": "local-model",
        "choices": [{"message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
    }


def _completion(content: str = "", tool_calls: list[dict[str, Any]] | None = None) -> Stream:
    """An OpenAI-compatible server's streamed reply."""
    return Stream(openai_stream(_completion_body(content, tool_calls), size=5))


def _whole(content: str = "", tool_calls: list[dict[str, Any]] | None = None) -> Stream:
    """The same reply whole: llama.cpp's server cannot stream a request with tools and
    ``tool_choice: "auto"``, so its profile makes those requests without streaming."""
    body = orjson.dumps(_completion_body(content, tool_calls))
    return Stream([body], content_type="application/json")


@pytest.mark.parametrize("server", ["vllm", "llama.cpp"])
async def test_on_an_openai_compatible_server(tmp_path: Path, server: str) -> None:
    """With ``--model``/``--base-url`` the service streams from the server (a local one here),
    asks for the structured answer and offers the MCP tool. Under llama.cpp's profile the
    agent's requests (tools with "auto") are made whole: one delta per reply."""
    forecast = {"id": "call_1", "type": "function"}
    forecast["function"] = {"name": "forecast", "arguments": '{"city": "Paris"}'}
    answer = TravelAnswer(reply="Rain in Paris.", city="Paris", temperature_c=18, umbrella=True)
    streamed = server == "vllm"
    make = _completion if streamed else _whole
    script = [
        lambda: make(tool_calls=[forecast]),
        lambda: make(answer.model_dump_json()),
    ]
    with sse_provider(script) as (url, asked, _):
        settings = Settings(
            db=tmp_path / "chat.db", model="local-model", base_url=f"{url}/v1", server=server
        )
        async with open_service(settings) as service:
            events = [e async for e in service.chat(None, "Weather in Paris?")]
    (done,) = [e.data for e in events if e.name == "answer"]
    assert done["status"] == "completed" and done["value"] == answer.model_dump(mode="json")
    deltas = [str(e.data["text"]) for e in events if e.name == "delta"]
    assert (len(deltas) > 1 if streamed else len(deltas) == 1) and "".join(deltas) == done["text"]
    tool_results = [e.data for e in events if e.name == "tool" and e.data["phase"] == "result"]
    assert tool_results[0]["result"] == {
        "city": "Paris",
        "conditions": "light rain",
        "temperature_c": 18,
    }
    first, second = (body for _, body in asked)
    assert first.get("stream", False) is streamed and first["model"] == "local-model"
    assert [t["function"]["name"] for t in first["tools"]] == ["forecast"]
    if streamed:
        schema = first["response_format"]["json_schema"]["schema"]
    else:
        # llama.cpp's way of asking for a schema; the schema is TravelAnswer's.
        assert first["response_format"]["type"] == "json_object"
        schema = first["response_format"]["schema"]
    assert schema["properties"].keys() == {"reply", "city", "temperature_c", "umbrella"}
    assert (
        second["messages"][-1]["role"] == "tool"
        and "light rain" in second["messages"][-1]["content"]
    )
