"""A property over random scripted runs (the crash property's scenarios): a fork at any version
is refused with ``ForkError`` exactly where work is in flight (a model request, a reservation, a
tool call) or the run had ended, and elsewhere folds to the original's state there; a fork
continued live by the same agent keeps the loop's invariants and replays from its log without
calling anything.

``AGENTLEDGER_FUZZ_EXAMPLES`` sets the number of examples (default 15 here).
"""

from __future__ import annotations

import os
from datetime import timedelta

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_crash_property import BUDGETS, T0, Scenario, World, _agent, scenarios

from agentledger.engine import Engine
from agentledger.engine.testing import (
    FakeClock,
    SequentialIds,
    check_replay_reproduces,
    check_run_ended,
    check_spend_within_caps,
    check_state_matches_log,
    check_versions_gapless,
)
from agentledger.events import MemoryEventStore, RecordedEvent
from agentledger.projections import RunState, fold_run
from agentledger.replay import ForkError

EXAMPLES = int(os.environ.get("AGENTLEDGER_FUZZ_EXAMPLES", "15"))


def _in_flight(state: RunState) -> str:
    """What of the run is unfinished at this state, if anything (the fork rule, restated)."""
    if state.is_terminal:
        return "ended"
    if state.model_call is not None and state.model_call.open is not None:
        return "model request"
    if state.reservations:
        return "reservation"
    if any(c.status in ("intended", "claimed") for c in state.calls.values()):
        return "tool call"
    return ""


def _without_identity(events: list[RecordedEvent], run_id: str) -> str:
    fields = {k: v for k, v in vars(fold_run(events)).items() if k != "started"}
    return repr(fields).replace(repr(run_id), "'<run>'")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios(), pick=st.randoms(use_true_random=False))
def test_a_fork_at_any_version_is_refused_or_is_the_original_there(
    scenario: Scenario, pick: object
) -> None:
    async def check() -> None:
        world = World(sent={}, noted=set())
        agent = _agent(scenario, world)
        surface = "capped" if scenario.capped else "free"
        async with MemoryEventStore() as store:
            clock = FakeClock(T0)
            async with Engine(store, clock=clock, ids=SequentialIds("o"), budgets=BUDGETS) as eng:
                await eng.run(agent, "Find the facts.", run_id="r1", surface=surface)
            original = await store.read_stream("run-r1")
            later = FakeClock(T0 + timedelta(days=1))
            async with Engine(store, clock=later, ids=SequentialIds("f"), budgets=BUDGETS) as eng:
                forks: list[str] = []
                for version in range(1, len(original) + 1):
                    state = fold_run(original[:version])
                    busy = _in_flight(state)
                    try:
                        fork_id = await eng.fork("r1", at_version=version)
                    except ForkError:
                        kind = original[version - 1].type
                        assert busy, f"a fork at version {version} ({kind}) was refused"
                        continue
                    assert not busy, f"a fork at version {version} was allowed: {busy}"
                    copied = await store.read_stream(f"run-{fork_id}")
                    assert _without_identity(copied, fork_id) == _without_identity(
                        original[:version], "r1"
                    )
                    forks.append(fork_id)
                assert forks and forks[0] == "f-1"  # the start can always be forked
                chosen = pick.choice(forks)  # type: ignore[attr-defined]
                result = await eng.resume(chosen, agent=agent)
                await check_state_matches_log(store, chosen, result=result)
                await check_run_ended(store, chosen, max_turns=agent.max_turns)
                await check_versions_gapless(store)
                await check_spend_within_caps(store, BUDGETS)
                await check_replay_reproduces(eng, chosen, agent=agent)

    anyio.run(check)
