"""Critic stats: the fold of verdicts into accept rates per agent and per check, and its queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.events import (
    CheckResult,
    CriticVerdict,
    Event,
    EventStore,
    NewEvent,
    RecordedEvent,
    RevisionRequested,
    StreamAppend,
    TurnStarted,
)
from agentledger.projections import KeyedProjection, ProjectionRunner, fold
from agentledger.projections._critic_stats import (
    CheckPassRate,
    CriticStats,
    CriticStatsRows,
    Tally,
    accept_rate,
    agent_key,
    check_pass_rates,
)

T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


def verdict(
    agent: str,
    accepted: bool,
    checks: dict[str, bool] | None = None,
    *,
    method: str = "deterministic",
    run: str = "r1",
) -> CriticVerdict:
    return CriticVerdict(
        run_id=run,
        span_id="s",
        at=T0,
        agent=agent,
        accepted=accepted,
        method=method,  # type: ignore[arg-type]
        checks=tuple(
            CheckResult(name=n, passed=p, issue=None if p else f"{n} failed")
            for n, p in (checks or {}).items()
        ),
    )


def recorded(events: Sequence[Event], *, stream: str = "run-r1") -> list[RecordedEvent]:
    return [
        RecordedEvent(
            stream_id=stream,
            version=i,
            position=i,
            event_id=f"e{i}",
            recorded_at=T0,
            schema_version=1,
            event=event,
        )
        for i, event in enumerate(events, start=1)
    ]


def stats(events: Sequence[Event], *, stream: str = "run-r1") -> dict[str, CriticStats]:
    return fold(CriticStatsRows(), recorded(events, stream=stream))


def test_it_is_a_keyed_projection_named_critic_stats() -> None:
    assert isinstance(CriticStatsRows(), KeyedProjection)
    assert CriticStatsRows().name == "critic_stats"


def test_fold_counts_verdicts_per_method_and_checks_per_name() -> None:
    rows = stats(
        [
            verdict("support", False, {"max_length": False, "citations": True}),
            TurnStarted(run_id="r1", span_id="s", at=T0, turn=2),
            RevisionRequested(run_id="r1", span_id="s", at=T0, revision=1, issues=("x",)),
            verdict("support", True, {"max_length": True, "citations": True}),
            verdict("support", False, {"llm_judge": False}, method="llm"),
            verdict("support", True, {"max_length": True, "citations": True}),
            verdict("support", True, {"llm_judge": True}, method="llm"),
            verdict("sales", True),
        ]
    )
    assert rows == {
        "agent:support": CriticStats(
            agent="support",
            deterministic=Tally(runs=3, passed=2),
            llm=Tally(runs=2, passed=1),
            checks={
                "max_length": Tally(3, 2),
                "citations": Tally(3, 3),
                "llm_judge": Tally(2, 1),
            },
        ),
        "agent:sales": CriticStats(agent="sales", deterministic=Tally(1, 1)),
    }
    assert rows["agent:support"].verdicts == Tally(5, 3)


def test_only_verdicts_in_run_streams_count() -> None:
    assert stats([verdict("a", True)], stream="export-r1") == {}
    assert stats([verdict("a", True)], stream="budget-u1-2024-06-01") == {}
    assert stats([verdict("a", True)], stream="run-r1") == {
        "agent:a": CriticStats("a", Tally(1, 1))
    }


def test_rates_are_exact_fractions() -> None:
    rows = stats(
        [
            verdict("a", True),
            verdict("a", False),
            verdict("a", False),
            verdict("a", True, method="llm"),
        ]
    )
    assert accept_rate(rows, "a") == Fraction(2, 4)
    assert accept_rate(rows, "a", method="deterministic") == Fraction(1, 3)
    assert accept_rate(rows, "a", method="llm") == Fraction(1)
    assert accept_rate(rows, "nobody") is None
    assert accept_rate(stats([verdict("b", True)]), "b", method="llm") is None
    # Ten thirds summed as floats would drift; fractions do not.
    many = stats([verdict("c", n % 3 == 0) for n in range(30)])
    assert accept_rate(many, "c") == Fraction(1, 3)
    assert Tally().rate is None


def test_check_pass_rates_are_worst_first() -> None:
    rows = stats(
        [
            verdict(
                "a", False, {"length": False, "phrases": True, "keywords": False, "json": True}
            ),
            verdict("a", False, {"length": False, "phrases": True, "keywords": True}),
            verdict("a", True, {"length": True, "phrases": True, "keywords": True}),
            verdict("b", False, {"other": False}),
        ]
    )
    assert check_pass_rates(rows, "a") == [
        CheckPassRate("length", 3, 1, Fraction(1, 3)),
        CheckPassRate("keywords", 3, 2, Fraction(2, 3)),
        # Equal rates: more runs (better evidence) first, then by name.
        CheckPassRate("phrases", 3, 3, Fraction(1)),
        CheckPassRate("json", 1, 1, Fraction(1)),
    ]
    assert check_pass_rates(rows, "nobody") == []


def test_rows_round_trip_through_bytes() -> None:
    projection = CriticStatsRows()
    rows = stats([verdict("a", False, {"z": False, "a": True}), verdict("a", True, method="llm")])
    row = rows[agent_key("a")]
    data = projection.encode_row(row)
    assert projection.decode_row(data) == row
    assert data == projection.encode_row(projection.decode_row(data))  # checks sorted: stable
    with pytest.raises(ValueError):
        projection.decode_row(
            b'{"agent": "a", "deterministic": [1, 2], "llm": [0, 0], "checks": {}}'
        )


def test_evolve_row_is_pure() -> None:
    projection = CriticStatsRows()
    before = stats([verdict("a", False, {"x": False})])["agent:a"]
    (event,) = recorded([verdict("a", True, {"x": True})])
    after = projection.evolve_row(before, event)
    assert before == CriticStats("a", Tally(1, 0), checks={"x": Tally(1, 0)})
    assert after == CriticStats("a", Tally(2, 1), checks={"x": Tally(2, 1)})
    with pytest.raises(TypeError):
        before.checks["y"] = Tally()  # type: ignore[index]


verdicts = st.builds(
    verdict,
    agent=st.sampled_from(["a", "b", "c:d"]),
    accepted=st.booleans(),
    checks=st.dictionaries(st.sampled_from(["len", "cite", "json"]), st.booleans(), max_size=3),
    method=st.sampled_from(["deterministic", "llm"]),
)
streams = st.lists(
    st.one_of(verdicts, st.just(TurnStarted(run_id="r1", span_id="s", at=T0, turn=1))),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(xs=streams, ys=streams)
def test_fold_of_a_concatenation_is_the_fold_of_the_fold(xs: list[Event], ys: list[Event]) -> None:
    projection = CriticStatsRows()
    log = recorded(xs + ys)
    head = fold(projection, log[: len(xs)])
    assert fold(projection, log) == fold(projection, log[len(xs) :], head)
    # Every verdict is counted once, for its agent and for each of its checks.
    whole = fold(projection, log)
    seen = [e for e in xs + ys if isinstance(e, CriticVerdict)]
    for agent in {v.agent for v in seen}:
        mine = [v for v in seen if v.agent == agent]
        row = whole[agent_key(agent)]
        assert row.verdicts == Tally(len(mine), sum(v.accepted for v in mine))
        for name, tally in row.checks.items():
            results = [c for v in mine for c in v.checks if c.name == name]
            assert tally == Tally(len(results), sum(c.passed for c in results))


async def test_a_runner_keeps_critic_stats_saved(store: EventStore) -> None:
    projection = CriticStatsRows()
    for n in range(4):
        events = [verdict("a", n % 2 == 0, {"len": n < 3}, run=f"r{n}")]
        await store.append(
            StreamAppend(f"run-r{n}", [NewEvent(e, uuid.uuid4().hex) for e in events])
        )
    await store.append(
        StreamAppend("export-r0", [NewEvent(verdict("a", True, run="r0"), uuid.uuid4().hex)])
    )
    async with ProjectionRunner(store, projection, save_every=2) as runner:
        await runner.catch_up()
        expected = {"agent:a": CriticStats("a", Tally(4, 2), checks={"len": Tally(4, 3)})}
        assert dict(runner.rows) == expected
    async with ProjectionRunner(store, projection) as reloaded:
        assert dict(reloaded.rows) == expected
        assert accept_rate(reloaded.rows, "a") == Fraction(1, 2)
