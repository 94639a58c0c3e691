"""Tools served by Model Context Protocol servers, as engine ``Tool``s (the ``mcp`` extra).

    server = McpServer.stdio(sys.executable, ["weather_server.py"])
    async with server:
        tools = await server.tools(settings={"send_note": McpToolSettings(side_effect=True)})
        agent = Agent(name="a", model=model, tools=tools)
        await engine.run(agent, "...", user_id="u1")

An MCP tool is a ``Tool`` like any other: its arguments are validated against the tool's
``inputSchema`` before the server is called (``_json_schema_args``), it has tiers, breakers,
idempotency keys, events and replay. Its one implementation calls the server; fallback tiers
may be added (``McpToolSettings.fallbacks``), and ``McpServer.call_tool`` makes an MCP call a
tier of any other tool.

The connection: ``async with server`` connects (a failure raises ``McpConnectionError`` there).
Every SDK call runs in a task of the connection's own task group, so a transport that fails
takes down that group, never the engine's tasks, and a call in flight ends as
``McpConnectionError``. A call that finds the connection gone reconnects once; if that fails
it fails at once (the engine's breaker then skips the tier for its cool-down). The ``mcp``
package is imported only when a server is made, so ``agentledger.engine`` imports without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
from anyio.abc import TaskGroup
from pydantic import JsonValue

from agentledger.engine._errors import EngineError

from ._json_schema_args import JsonSchemaArguments, json_schema_model
from ._tools import DEFAULT_MAX_ARGUMENT_BYTES, KeyScope, Tool, ToolContext, to_json_value

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult

IDEMPOTENCY_META_KEY = "agentledger/idempotency-key"
"""The request ``_meta`` key under which a side-effecting call's idempotency key is sent, so the
server can drop a duplicate (``agentledger/run-id`` and ``agentledger/call-id`` ride along)."""

_INSTALL_HINT = "pip install 'agentledger[mcp]'"
_CLOSE_GRACE = 5.0
"""Seconds a closing connection may take to shut its transport down before it is cancelled."""

McpFallback: TypeAlias = Callable[[dict[str, JsonValue], ToolContext], Awaitable[object]]
"""A fallback tier of an MCP tool: ``async def f(arguments: dict, ctx: ToolContext) -> JSON``,
given the validated arguments as a JSON object."""


class McpError(EngineError):
    """Raised for any failure of an MCP server or of its use (the root of the MCP errors)."""


class McpUnavailableError(McpError, ImportError):
    """Raised when an MCP server is made but the ``mcp`` package is not installed."""


class McpConfigError(McpError, ValueError):
    """Raised when ``tools()`` is asked for tools or settings the server cannot provide."""


class McpConnectionError(McpError):
    """Raised when the server cannot be reached, the connection dropped during a call, or the
    server is used outside ``async with server``."""


class McpToolError(McpError):
    """Raised when the server answered a call with ``isError`` or refused it; the message is
    the server's text. As a tier's failure, the next tier is tried."""


def _require_mcp() -> None:
    try:
        import jsonschema  # type: ignore[import-untyped]  # noqa: F401
        import mcp  # noqa: F401
    except ImportError as exc:
        raise McpUnavailableError(
            f"MCP tools need the mcp package ({exc.name} is missing): {_INSTALL_HINT}"
        ) from exc


@dataclass(frozen=True, slots=True)
class McpToolSettings:
    """How the engine treats one MCP tool: the options of ``tool`` (see there), and more tiers.

    ``description`` replaces the server's; ``fallbacks`` are ``(tier name, McpFallback)`` pairs
    tried in order after the server's tier (named ``"primary"``) fails.
    """

    side_effect: bool = False
    confirm: bool = False
    retry_safe: bool = False
    volatile: tuple[str, ...] = ()
    key_scope: KeyScope = "run"
    retention: timedelta | None = None
    timeout: float | None = None
    max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES
    preview: Callable[[Any], str] | None = None
    description: str | None = None
    fallbacks: tuple[tuple[str, McpFallback], ...] = ()


@dataclass(eq=False)
class _Link:
    """One live connection: the SDK client and the task group its calls run in."""

    client: Client
    calls: TaskGroup
    stop: anyio.Event = field(default_factory=anyio.Event)
    closed: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None

    @property
    def usable(self) -> bool:
        return not (self.stop.is_set() or self.closed.is_set())


class McpServer:
    """A connection to one MCP server, over stdio or streamable HTTP; make it with ``stdio`` or
    ``http`` and use it as ``async with server:``. Its tools are engine ``Tool``s
    (``tools()``); they call the server only while it is open, and replay never calls it."""

    def __init__(
        self,
        name: str,
        transport: Callable[[], Any],
        *,
        connect_timeout: float = 30.0,
    ) -> None:
        """Use ``McpServer.stdio`` or ``McpServer.http``."""
        _require_mcp()
        if not connect_timeout > 0:
            raise McpConfigError("connect_timeout must be a positive number of seconds")
        self.name = name
        self._transport = transport
        self._connect_timeout = float(connect_timeout)
        self._open = False
        self._holders: set[tuple[_Link, asyncio.Task[None]]] = set()
        self._link: _Link | None = None
        self._lock = anyio.Lock()

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
        connect_timeout: float = 30.0,
    ) -> McpServer:
        """A server run as ``command args...``, spoken to over its stdin and stdout (its stderr
        is ours). ``env`` is added to the SDK's default environment; each (re)connection starts
        a new process. Raises ``McpUnavailableError`` without the ``mcp`` extra."""
        _require_mcp()
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(
            command=command, args=list(args), env=dict(env) if env else None, cwd=cwd
        )
        return cls(
            name or " ".join([command.rsplit("/", 1)[-1], *args]),
            lambda: stdio_client(params),
            connect_timeout=connect_timeout,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        connect_timeout: float = 30.0,
    ) -> McpServer:
        """A server at a streamable HTTP endpoint (``http://host:port/mcp``), sent ``headers``
        with every request. Raises ``McpUnavailableError`` without the ``mcp`` extra."""
        _require_mcp()
        fixed = dict(headers or {})

        def transport() -> Any:
            return _HttpTransport(url, fixed)

        return cls(name or url, transport, connect_timeout=connect_timeout)

    def __repr__(self) -> str:
        return f"<McpServer {self.name!r} {'open' if self._open else 'closed'}>"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> McpServer:
        """Connect; raises ``McpConnectionError`` when the server cannot be reached."""
        if self._open:
            raise McpConnectionError(f"MCP server {self.name!r} is already open")
        self._open = True
        try:
            self._link = await self._connect()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection (a stdio server's process ends with it)."""
        await self._close()

    async def _close(self) -> None:
        self._open = False
        self._link = None
        holders = list(self._holders)
        with anyio.CancelScope(shield=True):
            for link, _ in holders:
                link.stop.set()
            with anyio.move_on_after(_CLOSE_GRACE):
                for link, _ in holders:
                    await link.closed.wait()
            for _, task in holders:
                task.cancel()
            if holders:
                await asyncio.wait([task for _, task in holders], timeout=_CLOSE_GRACE)

    async def _connect(self) -> _Link:
        # The connection lives in a task of its own, not in a task group of the caller's: the
        # SDK's transports enter task groups and cancel scopes that must be left by the task
        # that entered them (``async with server`` may be entered and left by different tasks,
        # as in test fixtures), and a failing transport then cancels that task, not a caller.
        loop = asyncio.get_running_loop()
        started: asyncio.Future[_Link] = loop.create_future()
        task = loop.create_task(self._hold(started), name=f"mcp server {self.name}")
        try:
            with anyio.fail_after(self._connect_timeout):
                link = await asyncio.shield(started)
        except BaseException as exc:
            task.cancel()
            if isinstance(exc, TimeoutError):
                raise McpConnectionError(
                    f"cannot connect to MCP server {self.name!r}: no answer within "
                    f"{self._connect_timeout:g}s"
                ) from None
            if isinstance(exc, Exception):
                raise McpConnectionError(
                    f"cannot connect to MCP server {self.name!r}: {_describe(exc)}"
                ) from exc
            raise
        entry = (link, task)
        self._holders.add(entry)
        task.add_done_callback(lambda _: self._holders.discard(entry))
        return link

    async def _hold(self, started: asyncio.Future[_Link]) -> None:
        from mcp import Client

        link: _Link | None = None
        try:
            async with (
                Client(self._transport(), cache=None) as client,
                anyio.create_task_group() as calls,
            ):
                link = _Link(client, calls)
                if started.done():  # the caller gave up meanwhile
                    return
                started.set_result(link)
                await link.stop.wait()
                calls.cancel_scope.cancel()
        except Exception as exc:
            if link is None:
                if not started.done():
                    started.set_exception(exc)
                return
            link.error = _describe(exc)
        finally:
            if link is not None:
                link.closed.set()
            elif not started.done():
                started.cancel()

    def _not_open(self) -> McpConnectionError:
        return McpConnectionError(
            f"MCP server {self.name!r} is not open: call its tools inside `async with server:`"
        )

    async def _live_link(self) -> _Link:
        async with self._lock:
            if not self._open:
                raise self._not_open()
            link = self._link
            if link is None or not link.usable:
                self._link = link = await self._connect()
            return link

    async def _run(self, work: Callable[[Client], Coroutine[Any, Any, Any]]) -> Any:
        """``await work(client)`` in the connection's task group; a connection that fails
        under it raises ``McpConnectionError``. Cancelling the caller cancels the work."""
        from mcp import MCPError
        from mcp_types.jsonrpc import CONNECTION_CLOSED

        link = await self._live_link()
        outcome: list[tuple[bool, Any]] = []
        done = anyio.Event()
        scope = anyio.CancelScope()

        async def run() -> None:
            try:
                with scope:
                    outcome.append((True, await work(link.client)))
            except Exception as exc:
                outcome.append((False, exc))
            finally:
                done.set()

        try:
            link.calls.start_soon(run)
        except RuntimeError:  # the task group closed meanwhile: the connection is gone
            link.stop.set()
            raise self._dropped(link) from None
        try:
            await done.wait()
        finally:
            scope.cancel()  # the caller gave up (a timeout): so does the call
        if not outcome:  # cancelled from within: the transport failed, or the server closed
            if not self._open:
                raise McpConnectionError(f"MCP server {self.name!r} was closed during the call")
            link.stop.set()
            with anyio.move_on_after(_CLOSE_GRACE):
                await link.closed.wait()
            raise self._dropped(link)
        ok, value = outcome[0]
        if ok:
            return value
        if isinstance(value, MCPError) and value.code == CONNECTION_CLOSED:
            link.stop.set()
            raise self._dropped(link, str(value)) from value
        if isinstance(value, MCPError):
            raise McpToolError(
                f"MCP server {self.name!r} refused the call: {value} (code {value.code})"
            ) from value
        raise value

    def _dropped(self, link: _Link, why: str | None = None) -> McpConnectionError:
        reason = why or link.error or "the connection closed"
        return McpConnectionError(
            f"the connection to MCP server {self.name!r} dropped during the call ({reason}); "
            "the next call reconnects"
        )

    # -- use ---------------------------------------------------------------------------------------

    async def list_tools(self) -> list[dict[str, JsonValue]]:
        """The server's tools as JSON objects (``name``, ``description``, ``inputSchema``, ...),
        every page. Save it to build the same tools without the server (``tools(listing=)``)."""

        async def listing(client: Client) -> list[dict[str, JsonValue]]:
            found: list[dict[str, JsonValue]] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                found.extend(
                    t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools
                )
                cursor = page.next_cursor
                if cursor is None:
                    return found

        result: list[dict[str, JsonValue]] = await self._run(listing)
        return result

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, JsonValue],
        ctx: ToolContext | None = None,
    ) -> JsonValue:
        """Call the server's tool ``name`` and return its result as JSON data: the structured
        content when there is one, else the content as a list (text parts as strings, other
        parts as small descriptors such as ``{"type": "image", "mime_type": ..., "bytes": n}``,
        never their data). ``ctx``'s idempotency key, run and call ids go in the request's
        ``_meta`` (``IDEMPOTENCY_META_KEY``).

        Use it to make an MCP call a tier of another tool. Raises ``McpToolError`` for an
        ``isError`` answer or a refused call, ``McpConnectionError`` when the server cannot be
        reached or the connection drops.
        """
        meta: dict[str, Any] | None = None
        if ctx is not None:
            meta = {"agentledger/run-id": ctx.run_id, "agentledger/call-id": ctx.call_id}
            if ctx.idempotency_key is not None:
                meta[IDEMPOTENCY_META_KEY] = ctx.idempotency_key
        payload = dict(arguments)

        async def call(client: Client) -> CallToolResult:
            return await client.call_tool(name, payload, meta=meta)  # type: ignore[arg-type]

        result: CallToolResult = await self._run(call)
        if result.is_error:
            raise McpToolError(_error_text(result) or f"the MCP tool {name!r} reported an error")
        return result_json(result)

    async def tools(
        self,
        include: Iterable[str] | None = None,
        *,
        prefix: str = "",
        settings: Mapping[str, McpToolSettings] | None = None,
        defaults: McpToolSettings | None = None,
        listing: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Tool[Any]]:
        """The server's tools as engine ``Tool``s, in the server's order.

        ``include``: the MCP names to take (default all); ``prefix`` goes in front of each
        engine name (the server is still called by the MCP name); ``settings``: per MCP name,
        else ``defaults``. ``listing`` (from ``list_tools``) builds the tools without asking
        the server, e.g. to replay runs with the server gone. Arguments are checked against
        each tool's ``inputSchema`` before the server is called.

        Raises ``McpConfigError`` for a name in ``include`` or ``settings`` the server does not
        have, or a tool that cannot be declared (its name with ``prefix`` breaks providers'
        rule, an invalid schema, bad settings).
        """
        found = list(listing) if listing is not None else await self.list_tools()
        by_name = {str(entry.get("name")): entry for entry in found}
        wanted = list(by_name) if include is None else list(include)
        per_tool = dict(settings or {})
        unknown = sorted({*(n for n in wanted if n not in by_name), *set(per_tool) - set(by_name)})
        if unknown:
            raise McpConfigError(
                f"MCP server {self.name!r} has no tool {', '.join(map(repr, unknown))}; "
                f"it has {', '.join(sorted(by_name)) or 'none'}"
            )
        base = defaults or McpToolSettings()
        return [
            self._declare(by_name[mcp_name], prefix, per_tool.get(mcp_name, base))
            for mcp_name in by_name
            if mcp_name in wanted
        ]

    def _declare(
        self, entry: Mapping[str, Any], prefix: str, options: McpToolSettings
    ) -> Tool[Any]:
        mcp_name = str(entry["name"])
        engine_name = prefix + mcp_name
        where = f"MCP tool {mcp_name!r} of server {self.name!r}"
        schema = entry.get("inputSchema")
        if not isinstance(schema, Mapping):
            raise McpConfigError(f"{where} has no inputSchema object")
        try:
            model = json_schema_model(f"{_identifier(engine_name)}_arguments", schema)
        except ValueError as exc:
            raise McpConfigError(f"{where}: its inputSchema is {exc}") from exc
        description = (
            options.description
            or entry.get("description")
            or entry.get("title")
            or f"The {mcp_name} tool of MCP server {self.name}."
        )
        primary = _with_model(self._caller(mcp_name), model, engine_name)
        try:
            declared: Tool[Any] = Tool(
                primary,
                name=engine_name,
                description=str(description),
                side_effect=options.side_effect,
                confirm=options.confirm,
                retry_safe=options.retry_safe,
                volatile=options.volatile,
                key_scope=options.key_scope,
                retention=options.retention,
                timeout=options.timeout,
                preview=options.preview,
                max_argument_bytes=options.max_argument_bytes,
            )
            for tier_name, fallback in options.fallbacks:
                declared.tier(tier_name)(_with_model(_adapt(fallback), model, engine_name))
        except TypeError as exc:
            raise McpConfigError(f"{where}: {exc}") from exc
        return declared

    def _caller(
        self, mcp_name: str
    ) -> Callable[[JsonSchemaArguments, ToolContext], Coroutine[Any, Any, JsonValue]]:
        async def call(args: JsonSchemaArguments, ctx: ToolContext) -> JsonValue:
            return await self.call_tool(mcp_name, _arguments(args), ctx)

        return call


class _HttpTransport:
    """The SDK's streamable HTTP transport with a client that sends fixed headers."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._url = url
        self._headers = headers
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Any:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # The SDK's defaults: 30 s to connect or write, 300 s to read a response stream.
        client = httpx2.AsyncClient(headers=self._headers, timeout=httpx2.Timeout(30.0, read=300.0))
        await self._stack.enter_async_context(client)
        return await self._stack.enter_async_context(
            streamable_http_client(self._url, http_client=client)
        )

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._stack.__aexit__(*exc_info)


def _arguments(args: JsonSchemaArguments) -> dict[str, JsonValue]:
    dumped: dict[str, JsonValue] = args.model_dump(mode="json", by_alias=True)
    return dumped


def _adapt(
    fallback: McpFallback,
) -> Callable[[JsonSchemaArguments, ToolContext], Coroutine[Any, Any, object]]:
    async def tier(args: JsonSchemaArguments, ctx: ToolContext) -> object:
        return await fallback(_arguments(args), ctx)

    return tier


def _with_model(fn: Callable[..., Any], model: type[JsonSchemaArguments], name: str) -> Any:
    # ``Tool`` reads the argument model from the first parameter's annotation; this tool's
    # model is made at run time, so the annotation is set here.
    fn.__annotations__ = {"args": model, "ctx": ToolContext, "return": object}
    fn.__name__ = fn.__qualname__ = name
    return fn


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def result_json(result: CallToolResult) -> JsonValue:
    """A successful call's result as JSON data (see ``McpServer.call_tool``)."""
    if result.structured_content is not None:
        return to_json_value(result.structured_content)
    return [_part(part) for part in result.content]


def _part(part: Any) -> JsonValue:
    kind = getattr(part, "type", None)
    if kind == "text":
        return str(part.text)
    if kind in ("image", "audio"):
        return {"type": kind, "mime_type": part.mime_type, "bytes": _decoded_size(part.data)}
    if kind == "resource_link":
        link: dict[str, JsonValue] = {"type": kind, "uri": str(part.uri), "name": part.name}
        if part.mime_type:
            link["mime_type"] = part.mime_type
        return link
    if kind == "resource":
        resource = part.resource
        out: dict[str, JsonValue] = {"type": kind, "uri": str(resource.uri)}
        if resource.mime_type:
            out["mime_type"] = resource.mime_type
        if hasattr(resource, "text"):
            out["text"] = resource.text
        else:
            out["bytes"] = _decoded_size(resource.blob)
        return out
    return {"type": str(kind)}


def _decoded_size(data: str) -> int:
    """The byte size of base64 ``data``, without decoding it."""
    return len(data) * 3 // 4 - data[-2:].count("=")


def _error_text(result: CallToolResult) -> str:
    from mcp.types import TextContent

    return "\n".join(p.text for p in result.content if isinstance(p, TextContent))


def _describe(exc: BaseException) -> str:
    """One line for a failure, the first real one inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
