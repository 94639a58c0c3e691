"""MCP tools against a real MCP server process (tests/mcp_server.py), over stdio and over
streamable HTTP: listing, runs with a scripted model, validation before the server, isError and
dropped connections as tier failures, the forwarded idempotency key, and replay with the server
gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from agentledger.engine import (
    MCP_IDEMPOTENCY_META_KEY,
    Agent,
    Engine,
    McpConfigError,
    McpConnectionError,
    McpServer,
    McpToolSettings,
    ModelRequest,
    ToolContext,
    tool,
)
from agentledger.engine.testing import FakeClock, ScriptedModel, call, check_invariants, reply
from agentledger.events import (
    EventStore,
    MemoryEventStore,
    RecordedEvent,
    SqliteEventStore,
    ToolArgumentsRejected,
    ToolCallDegraded,
    ToolCallIntended,
    ToolCallSucceeded,
    ToolResultReused,
    ToolTierFailed,
)

SERVER = Path(__file__).resolve().parent / "mcp_server.py"
HANG_GUARD = 30  # seconds: a failure to fail fast ends the test instead of hanging the suite


def types(events: list[RecordedEvent]) -> list[str]:
    return [r.event.type for r in events]


def of_type(events: list[RecordedEvent], kind: type[Any]) -> list[Any]:
    return [r.event for r in events if isinstance(r.event, kind)]


def tool_results(request: ModelRequest) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in request.messages if m.role == "tool"]


def stdio_server() -> McpServer:
    return McpServer.stdio(sys.executable, [str(SERVER)], name="test-stdio")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_http_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), "--http", "--port", str(port)])
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the MCP test server did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """One HTTP MCP server process for the module."""
    process, url = _start_http_server()
    try:
        yield url
    finally:
        process.kill()
        process.wait()


@pytest.fixture
async def http_server(http_url: str) -> AsyncIterator[McpServer]:
    async with McpServer.http(http_url, headers={"x-test": "1"}, name="test-http") as server:
        yield server


async def calls_reached(server: McpServer) -> dict[str, int]:
    stats = await server.call_tool("stats", {})
    assert isinstance(stats, dict) and isinstance(stats["calls"], dict)
    return {str(k): int(v) for k, v in stats["calls"].items()}  # type: ignore[arg-type]


# -- listing ----------------------------------------------------------------------------------


async def test_the_servers_tools_are_engine_tools_with_its_schemas(http_url: str) -> None:
    # (Listing over stdio is in the run-and-replay test, to start one process fewer.)
    async with McpServer.http(http_url) as server:
        listing = await server.list_tools()
        tools = await server.tools(["weather", "add"], prefix="t_")
        with pytest.raises(McpConfigError, match="has no tool 'nope'; it has add, crash"):
            await server.tools(["nope"])
        with pytest.raises(McpConfigError, match="has no tool 'ghost'"):
            await server.tools(settings={"ghost": McpToolSettings()})

    names = [entry["name"] for entry in listing]
    assert names == ["add", "weather", "send_note", "picture", "crash", "slow", "stats"]
    # Server order, engine names prefixed, the model shown the server's schema (minus titles).
    assert [t.name for t in tools] == ["t_add", "t_weather"]
    add = tools[0].spec()
    assert add.description == "Add two integers."
    assert add.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }


async def test_tools_from_a_saved_listing_need_no_server() -> None:
    listing = [
        {
            "name": "lookup",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "ids": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    "mode": {"oneOf": [{"const": "fast"}, {"const": "full"}]},
                },
                "required": ["ids"],
                "additionalProperties": False,
            },
        },
        {"name": "bad.name", "inputSchema": {"type": "object"}},
        {"name": "broken", "inputSchema": {"type": 3}},
    ]
    server = McpServer.stdio("/nonexistent/mcp-server")  # never started
    (lookup,) = await server.tools(["lookup"], listing=listing)
    with pytest.raises(McpConfigError, match=r"'bad.name'.*must match"):
        await server.tools(["bad.name"], listing=listing)
    with pytest.raises(McpConfigError, match=r"'broken'.*not a valid JSON schema"):
        await server.tools(["broken"], listing=listing)

    assert lookup.description == "The lookup tool of MCP server mcp-server."
    ok = lookup.args_model.model_validate({"ids": [1, 2], "mode": "fast"})
    assert ok.model_dump(mode="json") == {"ids": [1, 2], "mode": "fast"}
    with pytest.raises(Exception) as caught:
        lookup.args_model.model_validate({"ids": [1, 0], "mode": "slow", "x": 1})
    errors = {(e["loc"], e["type"]) for e in caught.value.errors()}  # type: ignore[attr-defined]
    assert errors == {
        ((), "json_schema_additionalProperties"),
        (("ids", 1), "json_schema_minimum"),
        (("mode",), "json_schema_oneOf"),
    }
    # Calling it without the server open is a failure of the call, with the reason.
    with pytest.raises(Exception, match="is not open: call its tools inside `async with"):
        await lookup.invoke("primary", ok, ToolContext("r", "c", "u"))


# -- runs -------------------------------------------------------------------------------------


async def test_a_run_calls_an_mcp_tool_and_replays_with_the_server_gone(tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            reply(tool_calls=[call("add", {"a": 2, "b": 3}, id="c1")]),
            reply("2 + 3 = 5"),
        ]
    )
    async with SqliteEventStore(tmp_path / "runs.db") as store:
        async with stdio_server() as server:
            listing = await server.list_tools()
            agent = Agent(name="calc", model=model, tools=await server.tools(["add"]))
            async with Engine(store, clock=FakeClock()) as engine:
                result = await engine.run(agent, "2 + 3?", run_id="r1")
            pid = (await server.call_tool("stats", {}))["pid"]  # type: ignore[call-overload,index]
        events = await store.read_stream("run-r1")

        assert [entry["name"] for entry in listing][:2] == ["add", "weather"]
        assert (result.status, result.output) == ("completed", "2 + 3 = 5")
        assert types(events)[4:6] == ["tool_call_intended", "tool_call_succeeded"]
        (succeeded,) = of_type(events, ToolCallSucceeded)
        assert (succeeded.tier, succeeded.result) == ("primary", {"result": 5})
        assert tool_results(model.requests[1]) == [{"status": "ok", "result": {"result": 5}}]

        # The server process is gone; replay answers from the tape, with the tools built from
        # the listing by a server object that was never opened (its command does not exist).
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        offline = McpServer.stdio("/nonexistent/mcp-server", name="test-stdio")
        replay_agent = Agent(
            name="calc",
            model=ScriptedModel([]),
            tools=await offline.tools(["add"], listing=listing),
        )
        async with Engine(store, clock=FakeClock()) as engine:
            report = await engine.replay("r1", agent=replay_agent)
            assert report.matches, report.divergence
            await check_invariants(engine, "r1", agent=agent, result=result)


async def test_bad_arguments_are_rejected_without_reaching_the_server(
    http_server: McpServer,
) -> None:
    model = ScriptedModel(
        [
            reply(tool_calls=[call("add", {"a": "two", "c": 1}, id="bad")]),
            reply(tool_calls=[call("add", {"a": 2, "b": 2}, id="good")]),
            reply("4"),
        ]
    )
    agent = Agent(name="calc", model=model, tools=await http_server.tools(["add", "stats"]))
    before = await calls_reached(http_server)
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        result = await engine.run(agent, "2 + 2?", run_id="r1")
        events = await store.read_stream("run-r1")
    after = await calls_reached(http_server)

    assert (result.status, result.output) == ("completed", "4")
    (rejected,) = of_type(events, ToolArgumentsRejected)
    assert rejected.error_type == "invalid_arguments"
    assert {(issue.loc, issue.kind) for issue in rejected.errors} == {
        (("a",), "json_schema_type"),
        (("b",), "missing"),
    }
    # The model was told, and only the corrected call reached the server.
    assert tool_results(model.requests[1])[0]["error_type"] == "invalid_arguments"
    assert after.get("add", 0) - before.get("add", 0) == 1


async def test_an_is_error_answer_fails_the_tier_and_the_fallback_tier_answers(
    http_server: McpServer,
) -> None:
    async def from_almanac(arguments: dict[str, Any], ctx: ToolContext) -> object:
        return f"foggy in {arguments['city']} (almanac)"

    settings = {"weather": McpToolSettings(fallbacks=(("almanac", from_almanac),))}
    with_fallback = await http_server.tools(["weather"], settings=settings)
    alone = await http_server.tools(["weather"])
    asks = [
        reply(tool_calls=[call("weather", {"city": "Atlantis"}, id="w1")]),
        reply("done"),
    ]
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        await engine.run(Agent(name="a", model=ScriptedModel(asks), tools=with_fallback), "?")
        await engine.run(
            Agent(name="a", model=ScriptedModel(asks), tools=alone), "?", run_id="alone"
        )
        rescued = await store.read_stream(
            next(s for s in await _run_streams(store) if s != "run-alone")
        )
        degraded = await store.read_stream("run-alone")

    (failed,) = of_type(rescued, ToolTierFailed)
    assert (failed.tier, failed.error_type) == ("primary", "McpToolError")
    assert "no weather station in Atlantis" in failed.message
    (succeeded,) = of_type(rescued, ToolCallSucceeded)
    assert (succeeded.tier, succeeded.result) == ("almanac", "foggy in Atlantis (almanac)")
    # Alone, the MCP tool's failure degrades the call, as for any tool.
    assert types(degraded)[4:7] == ["tool_call_intended", "tool_tier_failed", "tool_call_degraded"]


class CityArgs(BaseModel):
    city: str


async def test_an_mcp_call_can_be_a_fallback_tier_of_a_local_tool(http_server: McpServer) -> None:
    @tool
    async def forecast(args: CityArgs, ctx: ToolContext) -> object:
        """The forecast for a city."""
        raise ConnectionError("the local forecast service is down")

    @forecast.tier("mcp")
    async def via_mcp(args: CityArgs, ctx: ToolContext) -> object:
        return await http_server.call_tool("weather", args.model_dump(mode="json"), ctx)

    model = ScriptedModel(
        [reply(tool_calls=[call("forecast", {"city": "Oslo"}, id="f1")]), reply("sunny")]
    )
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        await engine.run(Agent(name="a", model=model, tools=[forecast]), "?", run_id="r")
        events = await store.read_stream("run-r")

    assert [(f.tier, f.error_type) for f in of_type(events, ToolTierFailed)] == [
        ("primary", "ConnectionError")
    ]
    (succeeded,) = of_type(events, ToolCallSucceeded)
    assert (succeeded.tier, succeeded.result) == ("mcp", ["sunny in Oslo"])


async def _run_streams(store: EventStore) -> list[str]:
    return sorted({r.stream_id for r in await store.read_all() if r.stream_id.startswith("run-")})


async def test_a_side_effect_forwards_its_idempotency_key_and_the_server_dedupes(
    http_server: McpServer,
) -> None:
    settings = {"send_note": McpToolSettings(side_effect=True, key_scope="user")}
    tools = await http_server.tools(["send_note"], settings=settings)
    note = call("send_note", {"to": "ana", "body": "lunch at 1"}, id="n1")
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        for run_id in ("r1", "r2"):  # the same note twice, by two runs of one user
            model = ScriptedModel([reply(tool_calls=[note]), reply("sent")])
            agent = Agent(name="a", model=model, tools=tools)
            before = await calls_reached(http_server)
            await engine.run(agent, "?", run_id=run_id, user_id="u")
        after = await calls_reached(http_server)
        events = await store.read_stream("run-r1")
        second = await store.read_stream("run-r2")

    # The second run reused the first one's result: the server was not called again.
    (reused,) = of_type(second, ToolResultReused)
    assert after["send_note"] == before["send_note"]
    (intended,) = of_type(events, ToolCallIntended)
    (succeeded,) = of_type(events, ToolCallSucceeded)
    key = intended.idempotency_key
    assert key is not None and key.startswith("send_note:")
    assert succeeded.result["sent"] is True and succeeded.result["key"] == key
    assert (reused.idempotency_key, reused.result) == (key, succeeded.result)
    # The server saw the key in the request's _meta, so a repeat with it sends nothing.
    again = ToolContext("r2", "n9", "u", idempotency_key=key)
    repeat = await http_server.call_tool("send_note", {"to": "ana", "body": "lunch at 1"}, again)
    assert isinstance(repeat, dict) and repeat["sent"] is False
    assert MCP_IDEMPOTENCY_META_KEY == "agentledger/idempotency-key"


async def test_results_keep_text_and_describe_images_without_their_data(
    http_server: McpServer,
) -> None:
    assert await http_server.call_tool("weather", {"city": "Paris"}) == ["sunny in Paris"]
    assert await http_server.call_tool("picture", {}) == [
        "a blank square",
        {"type": "image", "mime_type": "image/png", "bytes": 300_008},
    ]


async def test_a_timed_out_call_fails_its_tier_and_the_connection_stays_usable(
    http_server: McpServer,
) -> None:
    tools = await http_server.tools(
        ["slow", "add"], settings={"slow": McpToolSettings(timeout=0.3)}
    )
    model = ScriptedModel(
        [
            reply(tool_calls=[call("slow", {"seconds": 10}, id="s1")]),
            reply(tool_calls=[call("add", {"a": 1, "b": 1}, id="a1")]),
            reply("2"),
        ]
    )
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        with anyio.fail_after(HANG_GUARD):
            result = await engine.run(Agent(name="a", model=model, tools=tools), "?", run_id="r")
        events = await store.read_stream("run-r")

    assert result.status == "completed"
    (failed,) = of_type(events, ToolTierFailed)
    assert (failed.tool_name, failed.error_type) == ("slow", "TimeoutError")
    (succeeded,) = of_type(events, ToolCallSucceeded)
    assert succeeded.result == {"result": 2}


async def test_calls_of_one_turn_share_the_connection_at_once(http_server: McpServer) -> None:
    tools = await http_server.tools(["slow", "add"])
    both = [call("slow", {"seconds": 0.2}, id="s"), call("add", {"a": 2, "b": 5}, id="a")]
    model = ScriptedModel([reply(tool_calls=both), reply("ok")])
    async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
        await engine.run(Agent(name="a", model=model, tools=tools), "?", run_id="r")
        events = await store.read_stream("run-r")

    results = {e.call_id: e.result for e in of_type(events, ToolCallSucceeded)}
    assert results == {"s": {"result": "done"}, "a": {"result": 7}}


async def test_closing_the_server_ends_a_call_in_flight(http_url: str) -> None:
    server = McpServer.http(http_url)
    failures: list[BaseException] = []

    async def slow_call() -> None:
        try:
            await server.call_tool("slow", {"seconds": 10})
        except McpConnectionError as exc:
            failures.append(exc)

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            await server.__aenter__()
            tg.start_soon(slow_call)
            await anyio.sleep(0.2)
            await server.__aexit__(None, None, None)

    assert [str(f) for f in failures] == [f"MCP server {http_url!r} was closed during the call"]


# -- a server that dies -------------------------------------------------------------------------


async def test_a_stdio_server_dying_mid_call_fails_the_tier_and_the_next_call_reconnects() -> None:
    model = ScriptedModel(
        [
            reply(tool_calls=[call("crash", {}, id="boom")]),
            reply(tool_calls=[call("add", {"a": 1, "b": 2}, id="after")]),
            reply("3"),
        ]
    )
    server = stdio_server()
    async with server:
        agent = Agent(name="a", model=model, tools=await server.tools(["crash", "add"]))
        async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
            with anyio.fail_after(HANG_GUARD):
                result = await engine.run(agent, "?", run_id="r")
            events = await store.read_stream("run-r")

    assert result.status == "completed"
    (failed,) = of_type(events, ToolTierFailed)
    assert (failed.tool_name, failed.error_type) == ("crash", "McpConnectionError")
    assert "dropped during the call" in failed.message
    assert of_type(events, ToolCallDegraded)[0].tool_name == "crash"
    # The next call started a new server process and got its answer.
    (succeeded,) = of_type(events, ToolCallSucceeded)
    assert (succeeded.tool_name, succeeded.result) == ("add", {"result": 3})


async def test_a_killed_http_server_degrades_the_tool_instead_of_hanging() -> None:
    process, url = _start_http_server()
    try:
        async with McpServer.http(url, name="doomed") as server:
            tools = await server.tools(["add"])
            process.kill()
            process.wait()
            model = ScriptedModel(
                [
                    reply(tool_calls=[call("add", {"a": 1, "b": 2}, id="c1")]),
                    reply(tool_calls=[call("add", {"a": 1, "b": 2}, id="c2")]),
                    reply("the calculator is down"),
                ]
            )
            async with MemoryEventStore() as store, Engine(store, clock=FakeClock()) as engine:
                with anyio.fail_after(HANG_GUARD):
                    result = await engine.run(
                        Agent(name="a", model=model, tools=tools), "?", run_id="r"
                    )
                events = await store.read_stream("run-r")
    finally:
        process.kill()
        process.wait()

    assert (result.status, result.output) == ("completed", "the calculator is down")
    failures = of_type(events, ToolTierFailed)
    assert [f.error_type for f in failures] == ["McpConnectionError", "McpConnectionError"]
    # The first call finds the connection dropped; the second cannot reconnect.
    assert "dropped during the call" in failures[0].message
    assert "cannot connect to MCP server 'doomed'" in failures[1].message
    assert [d.call_id for d in of_type(events, ToolCallDegraded)] == ["c1", "c2"]


# -- without the extra ------------------------------------------------------------------------


def test_the_engine_imports_without_mcp_and_using_it_names_the_extra() -> None:
    script = """
import sys
import agentledger.engine as engine
print("mcp" in sys.modules)  # the SDK is loaded only when a server is made
sys.modules["mcp"] = None  # as if not installed: importing it raises ImportError
try:
    engine.McpServer.stdio("server")
except engine.McpUnavailableError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == [
        "False",
        "MCP tools need the mcp package (mcp is missing): pip install 'agentledger[mcp]'",
    ]
