"""``agentledger projections rebuild [NAME...]``: fold the whole log again into the saved
projections (after their code changed, or to check them), with a progress bar per projection.

``ProjectionRunner.rebuild`` replaces the saved state in one save at the end, so readers keep
the old rows until the new ones are complete. Its ``position`` moves as pages are folded (it is
flushed every ``save_every`` events, set here to one page), which is what the bar shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentledger.events import EventStore
from agentledger.projections import (
    CriticRuns,
    CriticStatsRows,
    ProjectionRunner,
    RunIndex,
    SpendIndex,
    ToolHealthRows,
)

from ._errors import UsageError
from ._output import Output
from ._store import open_store

_PAGE = 1000


def saved_projections() -> dict[str, Any]:
    """The projections the engine and this command line keep saved, by name."""
    projections: list[Any] = [
        RunIndex(),
        SpendIndex(),
        CriticStatsRows(),
        CriticRuns(),
        ToolHealthRows(),
    ]
    return {p.name: p for p in projections}


async def _rebuild(
    store: EventStore, projection: Any, progress: Progress | None, head: int
) -> tuple[int, float]:
    started = time.perf_counter()
    async with ProjectionRunner(store, projection, page_size=_PAGE, save_every=_PAGE) as runner:
        if progress is None:
            folded = await runner.rebuild()
            return folded, time.perf_counter() - started
        task = progress.add_task(projection.name, total=max(head, 1))

        async def follow() -> None:
            while True:
                progress.update(task, completed=min(runner.position, head))
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            try:
                folded = await runner.rebuild()
            finally:
                tg.cancel_scope.cancel()
        progress.update(task, completed=max(head, 1))
    return folded, time.perf_counter() - started


async def rebuild(options: argparse.Namespace, out: Output) -> int:
    """Rebuild the named projections (default: all), one after the other."""
    known = saved_projections()
    names = options.names or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no projection named {unknown[0]!r} (known: {', '.join(known)})")
    async with open_store(options.db) as store:
        head = await store.head_position()
        tty = sys.stderr.isatty()
        progress = (
            Progress(
                TextColumn("{task.description:<14}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr, highlight=False, markup=False),
            )
            if tty
            else None
        )
        results = []
        if progress is not None:
            with progress:
                for name in names:
                    results.append((name, *await _rebuild(store, known[name], progress, head)))
        else:
            for name in names:
                results.append((name, *await _rebuild(store, known[name], None, head)))
    if options.json:
        out.json([{"projection": n, "events": f, "seconds": round(s, 3)} for n, f, s in results])
        return 0
    out.table(
        ["projection", "events folded", "seconds"],
        [(n, f"{f:,}", f"{s:.2f}") for n, f, s in results],
        right=(1, 2),
    )
    return 0
