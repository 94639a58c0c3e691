"""Declaring tools: the ``tool`` decorator, its tiers and reconciler, and what a call is given.

A tool is an async function ``(args: SomeModel, ctx: ToolContext) -> JSON`` whose pydantic
argument model is the contract the model's output is validated against (or a plain function run
in a thread or a process of its own: ``isolation``). Fallback
implementations (tiers) and a reconcile hook for in-doubt side effects are attached with
decorators on the tool. Mistakes in a declaration raise ``TypeError`` at import time, when they
are cheap, rather than in the middle of a run.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeAlias, TypeVar, overload

import anyio
import orjson
from pydantic import BaseModel, JsonValue, RootModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentledger.engine.models._model import ToolSpec

from ._isolation import ISOLATIONS, Isolation, process_origin, run_in_process, run_in_thread
from ._tool_keys import idempotency_key
from ._tool_schema import argument_schema

A = TypeVar("A", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

KeyScope = Literal["run", "user"]
"""Who shares idempotency keys: calls within one run, or every run of one user (or tenant)."""

DEFAULT_MAX_ARGUMENT_BYTES = 64 * 1024
PRIMARY_TIER = "primary"

# orjson, which encodes events, writes signed and unsigned 64-bit integers and nothing wider.
_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1

# What providers accept as a function name (OpenAI's rule is the strictest).
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool implementation is told about the call it serves.

    ``idempotency_key`` is set for side-effecting tools: pass it on to the external system
    (an ``Idempotency-Key`` header, a message id) so it can drop a duplicate too.
    """

    run_id: str
    call_id: str
    user_id: str
    tier: str = PRIMARY_TIER
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a reconcile hook found out about a side effect whose outcome was not recorded.

    Build it with ``Reconciled.done(result)`` (it happened; record ``result`` as its outcome),
    ``Reconciled.not_done()`` (it did not happen; running it now is safe) or
    ``Reconciled.unknown()`` (cannot tell).
    """

    status: Literal["done", "not_done", "unknown"]
    result: JsonValue = None

    @classmethod
    def done(cls, result: object = None) -> Reconciled:
        """The side effect happened; ``result`` (any JSON value or model) is its outcome."""
        return cls("done", to_json_value(result))

    @classmethod
    def not_done(cls) -> Reconciled:
        """The side effect did not happen; the call may run now."""
        return cls("not_done")

    @classmethod
    def unknown(cls) -> Reconciled:
        """The hook cannot tell whether the side effect happened."""
        return cls("unknown")


ToolFunction: TypeAlias = Callable[[A, ToolContext], Coroutine[Any, Any, object]]
"""An implementation of a tool: ``async def f(args: Model, ctx: ToolContext) -> JSON``."""

SyncToolFunction: TypeAlias = Callable[[A, ToolContext], object]
"""An implementation of an isolated tool: ``def f(args: Model, ctx: ToolContext) -> JSON``."""

ReconcileFunction: TypeAlias = Callable[[A, ToolContext], Coroutine[Any, Any, Reconciled]]
"""A reconcile hook: ``async def f(args: Model, ctx: ToolContext) -> Reconciled``."""


def to_json_value(value: object) -> JsonValue:
    """``value`` as plain JSON data: models and dataclasses dumped in JSON mode, tuples as
    lists, datetimes as ISO strings; NaN and infinities become ``null`` (as pydantic's JSON
    mode does).

    Raises ``TypeError`` for anything with no JSON form, and for what the event log cannot hold
    (integers beyond 64 bits, strings with lone surrogates): better a failed tier than a failed
    append.
    """
    try:
        converted: JsonValue = to_jsonable_python(value, inf_nan_mode="null")
    except PydanticSerializationError as exc:
        raise TypeError(f"a {type(value).__name__} has no JSON form: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise TypeError(
            f"a string holds a lone surrogate, which events cannot hold: {exc}"
        ) from exc
    _check_recordable(converted)
    return converted


def _check_recordable(value: JsonValue) -> None:
    stack: list[JsonValue] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, int) and not isinstance(node, bool):
            if not _MIN_INT <= node <= _MAX_INT:
                raise TypeError(f"the integer {node} is outside the 64-bit range events hold")
        elif isinstance(node, str):
            _check_utf8(node)
        elif isinstance(node, dict):
            for key in node:
                _check_utf8(key)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_utf8(text: str) -> None:
    if text.isascii():  # the common case, without a copy of a text that may be huge
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(
            f"a string holds a lone surrogate, which events cannot hold: {exc}"
        ) from exc


@dataclass(frozen=True, init=False, eq=False, repr=False, slots=True)
class Tool(Generic[A]):
    """A declared tool: its contract with the model, its implementations and its policies.

    Made by the ``tool`` decorator. Its attributes cannot be assigned; the only changes are the
    definition-time registrations ``tier`` and ``reconciler``, which add to the chain and are
    meant to run right after the declaration, at import.

    Options (see ``tool`` for their meaning) are exposed as read-only attributes:
    ``side_effect``, ``confirm``, ``retry_safe``, ``volatile``, ``key_scope``, ``retention``,
    ``timeout``, ``max_argument_bytes``, ``preview`` and ``isolation``.
    """

    name: str
    description: str
    args_model: type[A]
    side_effect: bool
    confirm: bool
    retry_safe: bool
    volatile: tuple[str, ...]
    key_scope: KeyScope
    retention: timedelta | None
    timeout: float | None
    max_argument_bytes: int
    preview: Callable[[A], str]
    isolation: Isolation
    _tiers: tuple[tuple[str, ToolFunction[A] | SyncToolFunction[A]], ...]
    _reconcile: ReconcileFunction[A] | None

    def __init__(
        self,
        fn: ToolFunction[A] | SyncToolFunction[A],
        *,
        name: str | None = None,
        description: str | None = None,
        side_effect: bool = False,
        confirm: bool = False,
        retry_safe: bool = False,
        volatile: Iterable[str] = (),
        key_scope: KeyScope = "run",
        retention: timedelta | None = None,
        timeout: float | None = None,
        preview: Callable[[A], str] | None = None,
        max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
        isolation: Isolation = "loop",
    ) -> None:
        tool_name = getattr(fn, "__name__", "?") if name is None else name
        where = f"tool {tool_name!r}"
        if isolation not in ISOLATIONS:
            raise TypeError(f"{where}: isolation must be one of {ISOLATIONS}, not {isolation!r}")
        args_model = _argument_model(fn, what="a tool", isolation=isolation)
        if not isinstance(tool_name, str) or not _NAME.fullmatch(tool_name):
            raise TypeError(f"{where}: a tool name must match {_NAME.pattern} (providers' rule)")
        text = inspect.getdoc(fn) if description is None else description
        if not text or not text.strip():
            raise TypeError(f"{where}: give it a docstring or description=; models pick by it")
        if isinstance(volatile, str):
            raise TypeError(f"{where}: volatile is a collection of field names, not one string")
        volatile = _volatile_wire_names(args_model, tuple(volatile), where)
        if key_scope not in ("run", "user"):
            raise TypeError(f"{where}: key_scope must be 'run' or 'user', not {key_scope!r}")
        # Keys, retention and re-running only exist for side effects; setting them on a
        # read-only tool means the author thinks it has one.
        if not side_effect and (
            retry_safe or volatile or retention is not None or key_scope != "run"
        ):
            raise TypeError(
                f"{where}: retry_safe, volatile, key_scope and retention only apply to "
                "side_effect=True tools"
            )
        if retention is not None and retention <= timedelta(0):
            raise TypeError(f"{where}: retention must be a positive timedelta")
        if timeout is not None and not timeout > 0:
            raise TypeError(f"{where}: timeout must be a positive number of seconds")
        if isinstance(max_argument_bytes, bool) or not (
            isinstance(max_argument_bytes, int) and max_argument_bytes > 0
        ):
            raise TypeError(f"{where}: max_argument_bytes must be a positive int")
        if preview is not None and not confirm:
            raise TypeError(f"{where}: preview is shown for confirmations; set confirm=True")
        try:
            argument_schema(args_model)
        except Exception as exc:  # pydantic raises several kinds; all are a bad declaration
            raise TypeError(f"{where}: {args_model.__name__} has no JSON schema: {exc}") from exc

        init = object.__setattr__
        init(self, "name", tool_name)
        init(self, "description", inspect.cleandoc(text))
        init(self, "args_model", args_model)
        init(self, "side_effect", side_effect)
        init(self, "confirm", confirm)
        init(self, "retry_safe", retry_safe)
        init(self, "volatile", volatile)
        init(self, "key_scope", key_scope)
        init(self, "retention", retention)
        init(self, "timeout", None if timeout is None else float(timeout))
        init(self, "max_argument_bytes", max_argument_bytes)
        init(self, "preview", preview if preview is not None else self._default_preview)
        init(self, "isolation", isolation)
        init(self, "_tiers", ((PRIMARY_TIER, fn),))
        init(self, "_reconcile", None)

    def __repr__(self) -> str:
        return f"<Tool {self.name} tiers={list(self.tier_names)}>"

    # -- chain -----------------------------------------------------------------------------------

    @property
    def tiers(self) -> tuple[tuple[str, ToolFunction[A] | SyncToolFunction[A]], ...]:
        """The implementations in the order they are tried: ``("primary", fn)``, then fallbacks."""
        return self._tiers

    @property
    def tier_names(self) -> tuple[str, ...]:
        """The names of ``tiers``, in order."""
        return tuple(name for name, _ in self._tiers)

    @property
    def has_reconciler(self) -> bool:
        """Whether a reconcile hook was registered."""
        return self._reconcile is not None

    def tier(self, name: str) -> Callable[[F], F]:
        """Register a fallback implementation, tried after the ones registered before it.

        Used as ``@my_tool.tier("backup")``; the decorated function is returned unchanged. It
        runs where the tool's ``isolation`` says (so it is a plain ``def`` for an isolated tool).
        """
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"tool {self.name!r}: a tier needs a non-empty name")
        if name in self.tier_names:
            raise TypeError(f"tool {self.name!r} already has a tier named {name!r}")

        def register(fn: F) -> F:
            if name in self.tier_names:  # two decorators made before either was applied
                raise TypeError(f"tool {self.name!r} already has a tier named {name!r}")
            self._check_same_model(fn, f"tier {name!r}", self.isolation)
            object.__setattr__(self, "_tiers", (*self._tiers, (name, fn)))
            return fn

        return register

    def reconciler(self, fn: ReconcileFunction[A]) -> ReconcileFunction[A]:
        """Register the hook that decides an in-doubt side effect after a crash.

        Used as ``@my_tool.reconciler``; it returns a ``Reconciled``. The decorated function is
        returned unchanged. It is an ``async def`` run in the loop, whatever the tool's
        ``isolation``.
        """
        if not self.side_effect:
            raise TypeError(f"tool {self.name!r}: only side_effect=True tools can be in doubt")
        if self._reconcile is not None:
            raise TypeError(f"tool {self.name!r} already has a reconciler")
        self._check_same_model(fn, "its reconciler", "loop")
        object.__setattr__(self, "_reconcile", fn)
        return fn

    def with_implementations(self, tiers: Sequence[tuple[str, ToolFunction[A]]]) -> Tool[A]:
        """A copy of this tool, same contract and policies, whose tiers run other functions
        (replay answers tool calls from the recording this way); it has no reconciler, and its
        tiers are ``async def`` functions run in the loop."""
        # Of the same class (a sub-agent's tool stays one), every slot of it copied.
        clone: Tool[A] = object.__new__(type(self))
        for cls in type(self).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                object.__setattr__(clone, slot, getattr(self, slot))
        object.__setattr__(clone, "_tiers", tuple(tiers))
        object.__setattr__(clone, "_reconcile", None)
        object.__setattr__(clone, "isolation", "loop")
        return clone

    def _check_same_model(self, fn: Callable[..., Any], what: str, isolation: Isolation) -> None:
        model = _argument_model(fn, what=f"{what} of tool {self.name!r}", isolation=isolation)
        if model is not self.args_model:
            raise TypeError(
                f"{what} of tool {self.name!r} takes {model.__name__}; "
                f"the tool takes {self.args_model.__name__}"
            )

    # -- use ---------------------------------------------------------------------------------------

    def spec(self) -> ToolSpec:
        """The tool as a model is shown it: name, description and arguments' JSON schema."""
        return ToolSpec(self.name, self.description, argument_schema(self.args_model))

    def idempotency_key(
        self, arguments: Mapping[str, object], *, run_id: str, user_id: str
    ) -> str | None:
        """The key of a call with these (validated, JSON-mode) arguments; ``None`` for tools
        without side effects. The scope is the run or the user, as ``key_scope`` says."""
        if not self.side_effect:
            return None
        scope = f"run:{run_id}" if self.key_scope == "run" else f"user:{user_id}"
        return idempotency_key(self.name, arguments, self.volatile, scope)

    async def invoke(self, tier: str, args: A, ctx: ToolContext) -> JsonValue:
        """Run one tier with the tool's ``timeout`` and return its result as JSON data.

        Raises ``TimeoutError`` when the tier overran its timeout, ``TypeError`` when it
        returned something with no JSON form, and whatever the implementation raised; the
        caller records any of these as that tier's failure. Cancellation from outside is
        never turned into one of these.
        """
        implementations = dict(self._tiers)
        if tier not in implementations:
            raise KeyError(f"tool {self.name!r} has no tier {tier!r}")
        fn = implementations[tier]
        if self.timeout is None:
            result = await self._call(fn, args, ctx)
        else:
            with anyio.fail_after(self.timeout):
                result = await self._call(fn, args, ctx)
        return to_json_value(result)

    async def _call(
        self, fn: ToolFunction[A] | SyncToolFunction[A], args: A, ctx: ToolContext
    ) -> object:
        if self.isolation == "thread":
            return await run_in_thread(fn, args, ctx, f"{self.name}/{ctx.tier}")
        if self.isolation == "process":
            return await run_in_process(fn, args, ctx)
        return await typing.cast(ToolFunction[A], fn)(args, ctx)

    async def reconcile(self, args: A, ctx: ToolContext) -> Reconciled:
        """Ask the reconcile hook about an in-doubt call; ``unknown`` when there is none."""
        if self._reconcile is None:
            return Reconciled.unknown()
        outcome: object = await self._reconcile(args, ctx)
        if not isinstance(outcome, Reconciled):
            raise TypeError(
                f"the reconciler of tool {self.name!r} returned {type(outcome).__name__}, "
                "not a Reconciled"
            )
        return outcome

    def render_preview(self, args: A) -> str:
        """What a human is shown to approve a call: ``preview(args)``."""
        return self.preview(args)

    def _default_preview(self, args: A) -> str:
        data = args.model_dump(mode="json", by_alias=True)
        rendered = ", ".join(f"{key}={orjson.dumps(value).decode()}" for key, value in data.items())
        return f"{self.name}({rendered})"


@dataclass(frozen=True, slots=True)
class ToolDecorator:
    """What ``tool(...)`` with options returns: applied to a function, it declares the tool."""

    name: str | None = None
    description: str | None = None
    side_effect: bool = False
    confirm: bool = False
    retry_safe: bool = False
    volatile: tuple[str, ...] | str = ()
    key_scope: KeyScope = "run"
    retention: timedelta | None = None
    timeout: float | None = None
    # ``Any``: the argument model is only known when the decorator is applied.
    preview: Callable[[Any], str] | None = None
    max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES
    isolation: Isolation = "loop"

    def __call__(self, fn: ToolFunction[A] | SyncToolFunction[A], /) -> Tool[A]:
        """Declare ``fn`` as a tool with these options."""
        return Tool(
            fn,
            name=self.name,
            description=self.description,
            side_effect=self.side_effect,
            confirm=self.confirm,
            retry_safe=self.retry_safe,
            volatile=self.volatile,
            key_scope=self.key_scope,
            retention=self.retention,
            timeout=self.timeout,
            preview=self.preview,
            max_argument_bytes=self.max_argument_bytes,
            isolation=self.isolation,
        )


@overload
def tool(fn: ToolFunction[A], /) -> Tool[A]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    side_effect: bool = False,
    confirm: bool = False,
    retry_safe: bool = False,
    volatile: Iterable[str] = (),
    key_scope: KeyScope = "run",
    retention: timedelta | None = None,
    timeout: float | None = None,
    preview: Callable[[Any], str] | None = None,
    max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
    isolation: Isolation = "loop",
) -> ToolDecorator: ...


def tool(
    fn: ToolFunction[A] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effect: bool = False,
    confirm: bool = False,
    retry_safe: bool = False,
    volatile: Iterable[str] = (),
    key_scope: KeyScope = "run",
    retention: timedelta | None = None,
    timeout: float | None = None,
    preview: Callable[[Any], str] | None = None,
    max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
    isolation: Isolation = "loop",
) -> Tool[A] | ToolDecorator:
    """Declare a tool; use as ``@tool`` or ``@tool(...)`` on an ``async def f(args, ctx)``.

    The first parameter is annotated with a pydantic model (the arguments the model must send),
    the second with ``ToolContext``. Options:

    - ``name`` / ``description``: shown to the model; default the function's name and docstring.
    - ``side_effect``: the call changes the world, so it is keyed, recorded as an intent before
      it runs, and never run twice for one key.
    - ``confirm``: a human must approve each call; ``preview(args) -> str`` renders what they
      see (default: ``name(field=value, ...)``).
    - ``retry_safe``: the external system dedupes by the forwarded key, so an in-doubt call may
      be re-run with the same key.
    - ``volatile``: top-level argument fields left out of the key (timestamps, request ids).
    - ``key_scope``: ``"run"`` or ``"user"``, who shares keys; ``retention``: how long a
      recorded outcome answers for its key (``None``: for as long as it is in the log).
    - ``timeout``: seconds per tier call; ``max_argument_bytes``: raw arguments above this are
      rejected unparsed (default 64 KiB).
    - ``isolation``: where the implementations run. ``"loop"`` (the default): an ``async def``
      in the event loop. ``"thread"``: a plain ``def`` in a thread of its own, for blocking
      code (the deadline holds: the engine stops waiting, though the thread runs until the
      function returns). ``"process"``: a plain ``def`` in a fresh Python process, killed with
      its children at the deadline, for code that may hang or misbehave; the function must be
      defined at module level (the process imports its module), its arguments travel as JSON
      and its result must be JSON data; each call pays for starting Python (~0.1-0.5 s).

    Raises ``TypeError`` for a declaration that cannot work.
    """
    decorator = ToolDecorator(
        name=name,
        description=description,
        side_effect=side_effect,
        confirm=confirm,
        retry_safe=retry_safe,
        # a lone string is kept as is so that Tool can refuse it with a clear message
        volatile=volatile if isinstance(volatile, str) else tuple(volatile),
        key_scope=key_scope,
        retention=retention,
        timeout=timeout,
        preview=preview,
        max_argument_bytes=max_argument_bytes,
        isolation=isolation,
    )
    return decorator if fn is None else decorator(fn)


def tools_by_name(tools: Iterable[Tool[Any]]) -> Mapping[str, Tool[Any]]:
    """A read-only name -> tool mapping; raises ``ValueError`` when two tools share a name."""
    index: dict[str, Tool[Any]] = {}
    for item in tools:
        if item.name in index:
            raise ValueError(f"two tools are named {item.name!r}")
        index[item.name] = item
    return MappingProxyType(index)


def _argument_model(fn: Callable[..., Any], *, what: str, isolation: Isolation) -> type[Any]:
    label = f"{what} ({getattr(fn, '__qualname__', fn)!r})"
    if isolation == "loop":
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{label} must be an async def function (or a plain def with "
                "isolation='thread' or 'process')"
            )
    elif not inspect.isfunction(fn) or inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{label} must be a plain def function with isolation={isolation!r} "
            "(an async def runs in the loop: isolation='loop')"
        )
    elif isolation == "process" and (why := process_origin(fn)) is not None:
        raise TypeError(f"{label} cannot run in a process of its own: {why}")
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_other = [
        p
        for p in params[len(positional) :]
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(positional) != 2 or required_other:
        raise TypeError(f"{label} must take exactly (args: <a pydantic model>, ctx: ToolContext)")
    try:
        hints = _annotations(fn)
    except Exception as exc:  # NameError for a model the declaring scope cannot see either
        raise TypeError(
            f"{label}: cannot resolve its annotations ({exc}); declare the argument model at "
            "module level"
        ) from exc
    model = hints.get(positional[0].name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(
            f"{label}: its first parameter must be annotated with a pydantic BaseModel subclass, "
            f"not {model!r}"
        )
    if issubclass(model, RootModel):
        raise TypeError(f"{label}: arguments are a JSON object; {model.__name__} is a RootModel")
    if model.__pydantic_generic_metadata__["parameters"]:
        raise TypeError(f"{label}: {model.__name__} is generic; parametrise it")
    context = hints.get(positional[1].name)
    if context is not ToolContext:
        raise TypeError(f"{label}: its second parameter must be annotated with ToolContext")
    return model


def _annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except NameError:
        # With postponed annotations, a model defined inside a function (a factory, a test) is
        # not in the module's globals. The decorator runs in that function, so its frame (the
        # first outside this module) holds the name, as pydantic resolves forward references.
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
            frame = frame.f_back
        return typing.get_type_hints(fn, localns=dict(frame.f_locals))


def _volatile_wire_names(
    model: type[BaseModel], names: tuple[str, ...], where: str
) -> tuple[str, ...]:
    # Arguments are keyed in their JSON-mode, by-alias form, so a field given by its Python name
    # is stripped under the name it has on the wire.
    wire: dict[str, str] = {}
    for field_name, info in model.model_fields.items():
        on_wire = info.serialization_alias or info.alias or field_name
        wire[field_name] = on_wire
        wire[on_wire] = on_wire
    unknown = [name for name in names if name not in wire]
    if unknown:
        raise TypeError(
            f"{where}: volatile fields {unknown} are not fields of {model.__name__} "
            f"(fields: {sorted(model.model_fields)})"
        )
    resolved = tuple(wire[name] for name in names)
    if len(set(resolved)) != len(resolved):
        raise TypeError(f"{where}: volatile names a field twice")
    return resolved
