"""Tool health: the fold over tier outcomes, and the circuit breaker read from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.events import (
    Event,
    RecordedEvent,
    ToolCallSucceeded,
    ToolTierFailed,
    ToolTierSkipped,
    TurnStarted,
)
from agentledger.projections._projection import Projection, fold
from agentledger.projections._tool_health import (
    TierHealth,
    ToolHealth,
    ToolHealthProjection,
    ToolHealthRows,
    circuit_open_until,
    circuit_state,
)

T0 = datetime(2024, 6, 1, 9, 0, 0, tzinfo=UTC)
COOLDOWN = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def succeeded(tool: str, tier: str, seconds: float) -> Event:
    return ToolCallSucceeded(
        run_id="r", span_id="s", at=at(seconds), call_id="c", tool_name=tool, tier=tier
    )


def failed(tool: str, tier: str, seconds: float) -> Event:
    return ToolTierFailed(
        run_id="r",
        span_id="s",
        at=at(seconds),
        call_id="c",
        tool_name=tool,
        tier=tier,
        error_type="TimeoutError",
        message="",
    )


def skipped(tool: str, tier: str, seconds: float) -> Event:
    return ToolTierSkipped(
        run_id="r", span_id="s", at=at(seconds), call_id="c", tool_name=tool, tier=tier, until=T0
    )


def unrelated(seconds: float) -> Event:
    return TurnStarted(run_id="r", span_id="s", at=at(seconds), turn=1)


def recorded(events: list[Event]) -> list[RecordedEvent]:
    return [
        RecordedEvent(
            stream_id="run-r",
            version=i,
            position=i,
            event_id=f"e{i}",
            recorded_at=T0,
            schema_version=1,
            event=event,
        )
        for i, event in enumerate(events, start=1)
    ]


def health_of(*events: Event) -> ToolHealth:
    return fold(ToolHealthProjection(), recorded(list(events)))


def state(health: ToolHealth, seconds: float, *, tier: str = "primary") -> str:
    return circuit_state(health, "search", tier, threshold=3, cooldown=COOLDOWN, now=at(seconds))


def test_it_is_a_projection() -> None:
    assert isinstance(ToolHealthProjection(), Projection)


def test_counts_per_tool_and_tier() -> None:
    health = health_of(
        failed("search", "primary", 1),
        failed("search", "primary", 2),
        succeeded("search", "backup", 3),
        succeeded("search", "primary", 4),
        failed("search", "primary", 5),
        skipped("search", "primary", 6),
        unrelated(7),
        succeeded("fetch", "primary", 8),
    )
    assert health.get("search", "primary") == TierHealth(
        successes=1,
        failures=3,
        consecutive_failures=1,
        last_failure_at=at(5),
        last_success_at=at(4),
    )
    assert health.get("search", "backup") == TierHealth(successes=1, last_success_at=at(3))
    assert health.get("fetch", "primary") == TierHealth(successes=1, last_success_at=at(8))
    assert health.get("never", "primary") == TierHealth()
    assert set(health.tiers) == {("search", "primary"), ("search", "backup"), ("fetch", "primary")}


def test_a_late_event_from_a_lagging_clock_does_not_move_times_back() -> None:
    health = health_of(failed("search", "primary", 10), failed("search", "primary", 4))
    assert health.get("search", "primary").last_failure_at == at(10)
    assert health.get("search", "primary").consecutive_failures == 2


def test_evolve_is_pure() -> None:
    projection = ToolHealthProjection()
    before = health_of(failed("search", "primary", 1))
    snapshot = dict(before.tiers)
    (event,) = recorded([failed("search", "primary", 2)])
    after = projection.evolve(before, event)
    assert dict(before.tiers) == snapshot
    assert after.get("search", "primary").failures == 2
    (other,) = recorded([unrelated(3)])
    assert projection.evolve(after, other) is after
    with pytest.raises(TypeError):
        before.tiers[("x", "y")] = TierHealth()  # type: ignore[index]


# -- the breaker, with explicit times -----------------------------------------------------------


def test_breaker_closed_open_half_open_and_back() -> None:
    events: list[Event] = [failed("search", "primary", 0), failed("search", "primary", 1)]
    assert state(health_of(*events), 1) == "closed"
    events.append(failed("search", "primary", 2))  # the third in a row opens it
    health = health_of(*events)
    assert circuit_open_until(health, "search", "primary", threshold=3, cooldown=COOLDOWN) == at(32)
    assert state(health, 2) == "open"
    assert state(health, 31.999) == "open"
    assert state(health, 32) == "half_open"
    assert state(health, 500) == "half_open"
    # the other tier of the tool is not affected
    assert state(health, 2, tier="backup") == "closed"

    # one failed trial re-opens it at once, for a cooldown from the trial's failure
    events.append(failed("search", "primary", 40))
    health = health_of(*events)
    assert circuit_open_until(health, "search", "primary", threshold=3, cooldown=COOLDOWN) == at(70)
    assert state(health, 69) == "open"
    assert state(health, 70) == "half_open"

    # a successful trial closes it; it takes `threshold` new failures to open again
    events.append(succeeded("search", "primary", 71))
    health = health_of(*events)
    assert circuit_open_until(health, "search", "primary", threshold=3, cooldown=COOLDOWN) is None
    assert state(health, 71) == "closed"
    events += [failed("search", "primary", 72), failed("search", "primary", 73)]
    assert state(health_of(*events), 73) == "closed"
    events.append(failed("search", "primary", 74))
    assert state(health_of(*events), 74) == "open"


def test_a_success_of_another_tier_does_not_close_the_breaker() -> None:
    health = health_of(
        *(failed("search", "primary", s) for s in (0, 1, 2)),
        succeeded("search", "backup", 3),
    )
    assert state(health, 3) == "open"


def test_skips_do_not_count_as_attempts() -> None:
    events = [failed("search", "primary", s) for s in (0, 1, 2)]
    health = health_of(*events, skipped("search", "primary", 5), skipped("search", "primary", 40))
    assert health == health_of(*events)


def test_threshold_one_opens_on_the_first_failure() -> None:
    health = health_of(failed("search", "primary", 0))
    assert (
        circuit_state(health, "search", "primary", threshold=1, cooldown=COOLDOWN, now=at(1))
        == "open"
    )


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, COOLDOWN), (3, timedelta(seconds=-1))])
def test_breaker_policy_is_checked(threshold: int, cooldown: timedelta) -> None:
    with pytest.raises(ValueError):
        circuit_open_until(ToolHealth(), "t", "primary", threshold=threshold, cooldown=cooldown)


# -- fold properties ----------------------------------------------------------------------------

_tools = st.sampled_from(["search", "fetch"])
_tiers = st.sampled_from(["primary", "backup"])
_seconds = st.integers(min_value=0, max_value=600)
_event: st.SearchStrategy[Event] = st.one_of(
    st.builds(succeeded, _tools, _tiers, _seconds),
    st.builds(failed, _tools, _tiers, _seconds),
    st.builds(skipped, _tools, _tiers, _seconds),
    st.builds(unrelated, _seconds),
)
_events = st.lists(_event, max_size=30)
SETTINGS = settings(max_examples=100, deadline=None)


@SETTINGS
@given(_events, _events)
def test_fold_of_a_concatenation_is_a_fold_of_folds(xs: list[Event], ys: list[Event]) -> None:
    projection = ToolHealthProjection()
    both = recorded(xs + ys)
    first, rest = both[: len(xs)], both[len(xs) :]
    assert fold(projection, both) == fold(projection, rest, fold(projection, first))


def _reference(events: list[Event], tool: str, tier: str) -> dict[str, Any]:
    """The counters recomputed the slow, obvious way."""
    mine = [
        e
        for e in events
        if isinstance(e, ToolCallSucceeded | ToolTierFailed)
        and (e.tool_name, e.tier) == (tool, tier)
    ]
    failures = [e for e in mine if isinstance(e, ToolTierFailed)]
    successes = [e for e in mine if isinstance(e, ToolCallSucceeded)]
    streak = 0
    for e in reversed(mine):
        if isinstance(e, ToolCallSucceeded):
            break
        streak += 1
    return {
        "successes": len(successes),
        "failures": len(failures),
        "consecutive_failures": streak,
        "last_failure_at": max((e.at for e in failures), default=None),
        "last_success_at": max((e.at for e in successes), default=None),
    }


@SETTINGS
@given(_events)
def test_counters_match_a_recount(events: list[Event]) -> None:
    health = health_of(*events)
    for tool in ("search", "fetch"):
        for tier in ("primary", "backup"):
            assert health.get(tool, tier) == TierHealth(**_reference(events, tool, tier))


@SETTINGS
@given(_events)
def test_saved_rows_give_the_same_health(events: list[Event]) -> None:
    rows_projection = ToolHealthRows()
    rows = fold(rows_projection, recorded(events))
    assert ToolHealth.from_rows(rows) == health_of(*events)
    decoded = {
        key: rows_projection.decode_row(rows_projection.encode_row(row))
        for key, row in rows.items()
    }
    assert decoded == rows
