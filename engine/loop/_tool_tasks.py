"""Tool calls the engine can walk away from: a call past its deadline is over at the deadline.

Each call runs in a task of its own, outside the caller's task group, and the caller waits for
it with a deadline. A tool that stops when cancelled ends as before. One that swallows or
shields the cancellation keeps running in its task, but the caller has its answer (a timeout)
at the deadline all the same: a task group would have waited for it. The task is cancelled,
named in a warning when it does not stop, and kept here until it ends; ``aclose`` cancels what
is left and waits a bounded time for it.

The record of what ran when is for diagnosis only (the loop watchdog names the tools running
while the loop was blocked); nothing decides on it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import typing
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from agentledger.engine.tools._isolation import tool_threads

T = TypeVar("T")

logger = logging.getLogger("agentledger.engine.tools")

_STOP_GRACE = 0.5
"""Seconds a cancelled call may take to stop before it is reported as ignoring cancellation."""
_FINISHED_KEPT = 64
_THREAD_POLL = 0.02


class ToolTaskCancelledError(Exception):
    """Raised when a tool's own task ended cancelled although nobody cancelled it (a tool that
    raised ``CancelledError`` itself): a failure of that tool, not a cancellation of the run."""


@dataclass(slots=True)
class _Call:
    label: str
    started: float
    ended: float | None = None
    abandoned_at: float | None = None


class ToolTasks:
    """The tasks of the tool calls of one engine (see the module docstring)."""

    def __init__(self) -> None:
        self._running: dict[asyncio.Task[Any], _Call] = {}
        self._finished: deque[_Call] = deque(maxlen=_FINISHED_KEPT)

    def __len__(self) -> int:
        """How many tool calls are running, abandoned ones included."""
        return len(self._running)

    async def call(
        self, work: Callable[[], Coroutine[Any, Any, T]], *, seconds: float, label: str
    ) -> T:
        """``await work()`` in a task of its own, for at most ``seconds``.

        Returns what it returned or raises what it raised; raises ``TimeoutError`` at the
        deadline even if the work ignores its cancellation (it is cancelled and abandoned).
        When the caller is cancelled, the work is cancelled and the caller does not wait for
        it either. ``label`` names the call in warnings (tool, run, call, tier).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # A bare future and a timer, not ``asyncio.wait`` in a cancel scope, and the task
        # itself wakes the caller: this is on every tool call's path.
        waiter: asyncio.Future[float | None] = loop.create_future()
        outcome: list[tuple[bool, Any]] = []
        task = _start(loop, _settling(work(), waiter, outcome))
        self._running[task] = _Call(label, time.monotonic())
        task.add_done_callback(self._ended)
        timer = loop.call_later(seconds, _settle, waiter, None)
        try:
            ended_at = await waiter
        except BaseException:  # the caller is cancelled: it does not wait for the work either
            if not task.done():
                self._abandon(task, seconds)
            raise
        finally:
            timer.cancel()
        # A result that came after the deadline is not taken: a tool that held the loop past
        # it (a blocking call in an async tool) ended late, whatever it returned. What counts is
        # when the tool ended, not when the caller woke (a busy loop may wake it late).
        if ended_at is None or ended_at > deadline:
            if not task.done():
                self._abandon(task, seconds)
            raise TimeoutError(f"no result within {seconds:g}s")
        ok, value = outcome[0] if outcome else (False, None)
        if ok:
            return typing.cast(T, value)
        if isinstance(value, Exception):
            raise value
        raise ToolTaskCancelledError("the tool's task was cancelled from within the tool")

    def running_between(self, start: float, end: float) -> list[str]:
        """The labels of calls that were running at some time in ``[start, end]``
        (``time.monotonic`` seconds)."""
        calls = [*self._running.values(), *self._finished]
        return [c.label for c in calls if c.started <= end and (c.ended or end) >= start]

    async def aclose(self, grace: float) -> None:
        """Cancel every call still running and wait up to ``grace`` seconds for them, and for
        the threads of tools with ``isolation="thread"`` (which cannot be stopped) to end; a
        warning names what is still running then."""
        for task in self._running:
            task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
            if self._running:
                await asyncio.wait(tuple(self._running))
            # Polled: an abandoned thread has nobody to signal its end to, and this runs once.
            while tool_threads():  # noqa: ASYNC110
                await anyio.sleep(_THREAD_POLL)
        left = [c.label for c in self._running.values()]
        if left:
            logger.warning(
                "%d tool call(s) still running %gs after the engine closed and cancelled them "
                "(they ignore cancellation): %s",
                len(left),
                grace,
                "; ".join(left),
            )
        threads = tool_threads()
        if threads:
            logger.warning(
                "%d tool thread(s) still running %gs after the engine closed (a thread ends "
                "only when its function returns): %s",
                len(threads),
                grace,
                ", ".join(threads),
            )

    def _abandon(self, task: asyncio.Task[Any], timeout: float) -> None:
        task.cancel()
        call = self._running[task]
        call.abandoned_at = time.monotonic()
        loop = asyncio.get_running_loop()
        loop.call_later(_STOP_GRACE, self._check_stopped, task, timeout)

    def _check_stopped(self, task: asyncio.Task[Any], timeout: float) -> None:
        call = self._running.get(task)
        if call is None:
            return
        logger.warning(
            "%s is still running %.1fs after it was cancelled (it ignores or shields "
            "cancellation): recorded as failed after its timeout of %gs; its task is abandoned "
            "and kept until it ends",
            call.label,
            _STOP_GRACE,
            timeout,
        )

    def _ended(self, task: asyncio.Task[Any]) -> None:
        call = self._running.pop(task)
        call.ended = time.monotonic()
        self._finished.append(call)
        if call.abandoned_at is not None and call.ended - call.abandoned_at > _STOP_GRACE:
            logger.warning(
                "%s ended %.1fs after it was abandoned", call.label, call.ended - call.abandoned_at
            )
        if not task.cancelled():
            # Retrieved so that asyncio does not log "exception never retrieved" for the
            # outcome of a call nobody waits for any more.
            with suppress(BaseException):
                task.exception()


def _start(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task for ``work``; where Python can (3.12+), its first step runs at once, so a tool
    that answers without waiting costs no turn of the loop."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(work, loop=loop, eager_start=True)
    return loop.create_task(work)


async def _settling(
    work: Coroutine[Any, Any, Any],
    waiter: asyncio.Future[float | None],
    outcome: list[tuple[bool, Any]],
) -> None:
    """Run ``work``, keep its outcome, and wake the caller from within the task (a done
    callback would cost the caller one more turn of the loop)."""
    try:
        outcome.append((True, await work))
    except asyncio.CancelledError as exc:
        outcome.append((False, exc))
        raise
    except Exception as exc:  # the tool's failure, handed to the caller
        outcome.append((False, exc))
    finally:
        _settle(waiter, asyncio.get_running_loop().time())


def _settle(waiter: asyncio.Future[float | None], ended_at: float | None) -> None:
    """Wake the caller: the work ended at ``ended_at`` (loop time), or its time ran out
    (``None``), whichever comes first."""
    if not waiter.done():
        waiter.set_result(ended_at)
