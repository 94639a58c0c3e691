"""A long conversation: how big its requests and its log get, and what a run of it costs, with
and without a memory policy, next to runs in no conversation.

Three engines, each on a SQLite file of its own, make ``runs`` runs of one agent with an instant
scripted model (so what is measured is the engine, the history it carries and its log):

- ``plain``: runs in no conversation (the baseline);
- ``conversation``: one conversation of ``runs`` runs, no memory policy: every earlier exchange
  is sent;
- ``conversation_memory``: the same with ``MemoryPolicy(max_tokens=8000, compact_at=6000)``
  (history at most 3000 tokens, the newest 4 exchanges verbatim, older ones truncated into a
  summary of at most 512 tokens).

Each task is about 25 tokens and each answer about 60. Per mode: the input tokens of each
request as the memory policy counts them (max, last, at runs 10/50/100/200), the bytes of each
run's ``ConversationContinued`` as stored (max, last, at the same runs), and the time per run
(median over all runs and over the last tenth: medians, as the machine may be shared) with its
ratio to a plain run.

    python benchmarks/conversations.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from agentledger.engine import Agent, Engine, MemoryPolicy, ModelReply, ModelRequest
from agentledger.engine.testing import ScriptedModel, reply
from agentledger.events import SqliteEventStore
from agentledger.projections import UserMessage
from agentledger.projections._memory_view import count_tokens, estimate_tokens

POLICY = MemoryPolicy(max_tokens=8000, compact_at=6000)
SYSTEM = "You are a helpful assistant. Answer briefly and keep the conversation in mind."
MARKS = (10, 50, 100, 200)


def task(n: int) -> str:
    return f"Question {n}: " + "tell me more about the weather " * 3


def answer_of(request: ModelRequest) -> ModelReply:
    """An instant model: the same question, the same answer (about 60 tokens)."""
    last = request.messages[-1]
    assert isinstance(last, UserMessage)
    return reply(f"Answer to {last.content[:14].strip()}: " + "it is sunny, mild and dry. " * 8)


def _at(values: list[int], marks: tuple[int, ...], offset: int = 1) -> dict[str, int]:
    """``values[run - offset]`` for each run number in ``marks`` that has one."""
    return {str(m): values[m - offset] for m in marks if 0 <= m - offset < len(values)}


def _continued_bytes(db: Path) -> list[int]:
    """The stored size of each ``ConversationContinued``, in log order (run 2 onwards)."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT length(data) FROM events WHERE type = 'conversation_continued' "
            "ORDER BY position"
        ).fetchall()
    return [size for (size,) in rows]


async def run_mode(
    db: Path,
    *,
    runs: int,
    conversation: bool,
    memory: MemoryPolicy | None,
    marks: tuple[int, ...] = MARKS,
) -> dict[str, Any]:
    """``runs`` runs on a fresh SQLite file: sizes of requests and events, and timings."""
    model = ScriptedModel(answer_of, name="chat-model")
    agent = Agent(name="chat", model=model, system_prompt=SYSTEM, memory=memory)
    seconds: list[float] = []
    statuses: set[str] = set()
    async with SqliteEventStore(db) as store, Engine(store) as engine:
        for n in range(1, runs + 1):
            extra = {"conversation_id": "chat-1"} if conversation else {}
            started = time.perf_counter()
            result = await engine.run(agent, task(n), **extra)
            seconds.append(time.perf_counter() - started)
            statuses.add(result.status)
        listed = len((await engine.conversation("chat-1")).runs) if conversation else 0
    sizes = [count_tokens(r.messages, estimate_tokens) for r in model.requests]
    tail = seconds[-max(1, runs // 10) :]
    figures: dict[str, Any] = {
        "runs": runs,
        "statuses": sorted(statuses),
        "model_calls": len(model.requests),
        "input_tokens": {"max": max(sizes), "last": sizes[-1], "at_run": _at(sizes, marks)},
        "us_per_run_median": round(statistics.median(seconds) * 1e6, 1),
        "us_per_run_median_last_tenth": round(statistics.median(tail) * 1e6, 1),
    }
    if conversation:
        stored = _continued_bytes(db)
        figures["runs_listed"] = listed
        figures["conversation_continued_bytes"] = {
            "events": len(stored),
            "max": max(stored, default=0),
            "last": stored[-1] if stored else 0,
            "at_run": _at(stored, marks, offset=2),  # run 1 starts the conversation: none
        }
    if memory is not None:
        figures["policy"] = {
            "max_tokens": memory.max_tokens,
            "history_max_tokens": memory.history_tokens,
            "keep_recent_exchanges": memory.keep_recent_exchanges,
            "summary_max_tokens": memory.summary_max_tokens,
        }
        figures["within_policy"] = max(sizes) <= memory.max_tokens
    return figures


async def measure(
    workdir: Path,
    *,
    runs: int = 200,
    memory: MemoryPolicy = POLICY,
    marks: tuple[int, ...] = MARKS,
) -> dict[str, Any]:
    """The three modes, each on a SQLite file of its own in ``workdir``; sizes are also given
    at the runs numbered in ``marks``."""
    plain = await run_mode(
        workdir / "plain.db", runs=runs, conversation=False, memory=None, marks=marks
    )
    bare = await run_mode(
        workdir / "convo.db", runs=runs, conversation=True, memory=None, marks=marks
    )
    bounded = await run_mode(
        workdir / "memory.db", runs=runs, conversation=True, memory=memory, marks=marks
    )
    for mode in (bare, bounded):
        mode["ratio_to_plain"] = round(mode["us_per_run_median"] / plain["us_per_run_median"], 2)
        mode["ratio_to_plain_last_tenth"] = round(
            mode["us_per_run_median_last_tenth"] / plain["us_per_run_median_last_tenth"], 2
        )
    return {"plain": plain, "conversation": bare, "conversation_memory": bounded}


async def main(quick: bool) -> dict[str, object]:
    runs = 50 if quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        figures = await measure(Path(tmp), runs=runs)
    return {
        "benchmark": "conversations",
        "store": "sqlite (file, WAL, synchronous=NORMAL)",
        "model": "ScriptedModel (instant)",
        "quick": quick,
        **figures,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    print(json.dumps(anyio.run(main, options.quick)))
