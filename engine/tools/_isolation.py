"""Running a synchronous tool away from the event loop: in a thread, or in a process of its own.

A plain ``def`` tool run in the loop would stop every run of the process while it works. With
``isolation="thread"`` it runs in a thread of its own; the caller stops waiting at its deadline
(cancellation abandons the thread, which ends when the function returns: a thread cannot be
killed). With ``isolation="process"`` it runs in a fresh Python process that is killed, with
anything it started, at the deadline or on any cancellation: the one choice for code that may
hang or misbehave. The process imports the tool's module to find the function, so the function
must be defined at module level, and its arguments and result travel as JSON.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal, TypeAlias

import anyio
import orjson
from pydantic import BaseModel

Isolation: TypeAlias = Literal["loop", "thread", "process"]
"""Where a tool's implementations run: ``"loop"`` (an ``async def``, in the event loop, the
default), ``"thread"`` or ``"process"`` (a plain ``def``)."""

ISOLATIONS: tuple[Isolation, ...] = ("loop", "thread", "process")

_CHILD = "from agentledger.engine.tools._isolation_child import main; main()"

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


class IsolatedToolError(Exception):
    """Raised when a tool run in its own process failed: ``error_type`` names what the tool
    raised there (or ``ProcessExited`` when the process died without an answer)."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(message)


def tool_threads() -> list[str]:
    """The names of the threads running a tool's function now (abandoned ones included)."""
    with _threads_lock:
        return sorted(t.name for t in _threads)


def process_origin(fn: Callable[..., Any]) -> str | None:
    """Why ``fn`` cannot be found again by a fresh process, or ``None`` when it can."""
    qualname = getattr(fn, "__qualname__", "")
    module = getattr(fn, "__module__", None)
    if not qualname or "<" in qualname or module is None:
        return "it must be a function defined at module level"
    if module == "__main__" and getattr(sys.modules.get("__main__"), "__file__", None) is None:
        return "a function of an interactive session cannot be imported by another process"
    return None


async def run_in_thread(fn: Callable[..., object], args: BaseModel, ctx: Any, name: str) -> object:
    """``fn(args, ctx)`` in a new thread named after ``name``; cancellation stops the waiting,
    not the thread."""
    loop = asyncio.get_running_loop()
    done = anyio.Event()
    outcome: list[tuple[bool, object]] = []

    def work() -> None:
        try:
            outcome.append((True, fn(args, ctx)))
        except BaseException as exc:  # delivered to the caller below, whatever it is
            outcome.append((False, exc))
        finally:
            with _threads_lock:
                _threads.discard(thread)
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(done.set)

    thread = threading.Thread(target=work, name=f"agentledger-tool:{name}", daemon=True)
    with _threads_lock:
        _threads.add(thread)
    thread.start()
    await done.wait()
    ok, value = outcome[0]
    if ok:
        return value
    if isinstance(value, Exception):
        raise value
    raise RuntimeError(f"the tool raised {type(value).__name__}: {value}")


async def run_in_process(fn: Callable[..., object], args: BaseModel, ctx: Any) -> object:
    """``fn(args, ctx)`` in a fresh Python process, killed (with its process group) when the
    caller is cancelled or its deadline passes. Returns the result as JSON data."""
    main_file = None
    if fn.__module__ == "__main__":
        # A string operation (and one getcwd), not I/O worth a thread.
        main_file = os.path.abspath(sys.modules["__main__"].__file__ or "")  # noqa: ASYNC240
    request = orjson.dumps(
        {
            "module": fn.__module__,
            "file": main_file,
            "qualname": fn.__qualname__,
            "path": sys.path,  # the child finds the modules the caller found
            "args": args.model_dump(mode="json", by_alias=True),
            "ctx": {
                "run_id": ctx.run_id,
                "call_id": ctx.call_id,
                "user_id": ctx.user_id,
                "tier": ctx.tier,
                "idempotency_key": ctx.idempotency_key,
            },
        }
    )
    process = await anyio.open_process(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # the tool's own output and logs go where the engine's go
        start_new_session=True,  # its own process group, so a kill takes its children too
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.send(request)
        await process.stdin.aclose()
        chunks = [chunk async for chunk in process.stdout]
        code = await process.wait()
    finally:
        if process.returncode is None:
            _kill_group(process.pid)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
    data = b"".join(chunks)
    if not data:
        raise IsolatedToolError(
            "ProcessExited", f"the tool's process exited ({code}) with no answer"
        )
    reply = orjson.loads(data)
    if reply["ok"]:
        return reply["result"]
    raise IsolatedToolError(reply["error_type"], reply["message"])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
