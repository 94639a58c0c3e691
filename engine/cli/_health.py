"""``agentledger health``: every tool tier the log has seen, its outcomes and its breaker.

Folded by the tool health projection (``ToolHealthRows``), the same fold the engine's breakers
read. The breaker state depends on the agent's ``BreakerPolicy``; ``--threshold`` and
``--cooldown`` give the one to judge by (the defaults are ``BreakerPolicy``'s).
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from agentledger.engine._agent import BreakerPolicy
from agentledger.events._time import utc_now
from agentledger.projections import ProjectionRunner, ToolHealth, ToolHealthRows
from agentledger.projections._tool_health import circuit_open_until, circuit_state

from ._output import Output, text
from ._store import open_store

_STATE_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


async def command(options: argparse.Namespace, out: Output) -> int:
    """Print each (tool, tier): successes, failures, failures in a row, breaker state."""
    policy = BreakerPolicy()
    threshold = options.threshold or policy.threshold
    cooldown = (
        timedelta(seconds=options.cooldown) if options.cooldown is not None else policy.cooldown
    )
    async with open_store(options.db) as store, ProjectionRunner(store, ToolHealthRows()) as runner:
        await runner.catch_up()
        health = ToolHealth.from_rows(runner.rows)
    now = utc_now()
    rows = []
    for (tool, tier), tier_health in sorted(health.tiers.items()):
        state = circuit_state(health, tool, tier, threshold=threshold, cooldown=cooldown, now=now)
        until = circuit_open_until(health, tool, tier, threshold=threshold, cooldown=cooldown)
        rows.append((tool, tier, tier_health, state, until if state == "open" else None))
    if options.json:
        out.json(
            [
                {
                    "tool": tool,
                    "tier": tier,
                    "successes": h.successes,
                    "failures": h.failures,
                    "failures_in_a_row": h.consecutive_failures,
                    "last_success_at": h.last_success_at,
                    "last_failure_at": h.last_failure_at,
                    "breaker": state,
                    "open_until": until,
                }
                for tool, tier, h, state, until in rows
            ]
        )
        return 0
    if not rows:
        out.line("no tool calls in this log yet")
        return 0
    out.table(
        ["tool", "tier", "ok", "failed", "in a row", "breaker", "last failure"],
        [
            (
                tool,
                tier,
                h.successes,
                h.failures,
                h.consecutive_failures,
                text(state + (f" until {until:%H:%M:%S}" if until else ""), _STATE_STYLE[state]),
                "-" if h.last_failure_at is None else f"{h.last_failure_at:%Y-%m-%d %H:%M:%S}",
            )
            for tool, tier, h, state, until in rows
        ],
        right=(2, 3, 4),
    )
    out.line()
    out.line(
        f"breakers judged by threshold {threshold}, cooldown {cooldown.total_seconds():g} s", "dim"
    )
    return 0
