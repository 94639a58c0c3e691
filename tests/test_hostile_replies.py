"""Hostile model replies over real HTTP: every one becomes an event or a failed attempt.

A few hundred generated replies per client here; ``benchmarks/hostile_replies.py`` runs
thousands. No run raises, none is left running, no reservation stays charged, no event is over
1 MiB, and the tool never runs with arguments its model refuses.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile_runs import MAX_EVENT_BYTES, hostile_runs


@pytest.mark.parametrize("client", ["openai", "anthropic"])
async def test_hostile_replies_never_crash_a_run_or_leave_it_running(
    client: Literal["openai", "anthropic"],
) -> None:
    tally = await hostile_runs(client, runs=150, seed=20261129)
    assert tally.unhandled == []
    assert tally.runs == 150
    assert tally.left_running == 0
    assert tally.reservations_left == 0
    assert tally.events_over_cap == 0 and tally.largest_event_bytes <= MAX_EVENT_BYTES
    assert tally.tool_runs_with_invalid_arguments == 0
    # The generator reaches what it is for: malformed replies, provider errors, and good ones.
    assert tally.failures["ModelResponseError"] > 0
    assert tally.failures["ModelServerError"] + tally.failures["ModelRateLimitedError"] > 0
    assert tally.statuses["completed"] > 0 and tally.tool_runs > 0
