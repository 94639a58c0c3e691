"""Budget policies: surfaces, the day boundary in a time zone, configuration, the cap decision."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.engine._errors import EngineError, UnknownSurfaceError
from agentledger.engine.policies._budget import (
    BudgetExceededReason,
    BudgetPolicy,
    Budgets,
    check_reservation,
    day_stream,
)

D = Decimal
FREE = BudgetPolicy(per_run_usd=D("0.05"), per_user_day_usd=D("1.00"))
BATCH = BudgetPolicy(per_run_usd=None, per_user_day_usd=D("50"))


# -- surfaces ----------------------------------------------------------------------------------


def test_policy_by_surface_and_default() -> None:
    budgets = Budgets({"free": FREE, "batch": BATCH})
    assert budgets.policy("free") is FREE
    assert budgets.policy("batch") is BATCH
    with pytest.raises(UnknownSurfaceError) as caught:
        budgets.policy("enterprise")
    assert isinstance(caught.value, EngineError)
    assert caught.value.surface == "enterprise"
    assert caught.value.known == ("batch", "free")
    assert "'batch', 'free'" in str(caught.value)
    with_default = Budgets({"free": FREE, "batch": BATCH}, default_surface="free")
    assert with_default.policy("enterprise") is FREE


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="default surface"):
        Budgets({"free": FREE}, default_surface="paid")
    with pytest.raises(ValueError, match="time zone"):
        Budgets({}, timezone="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="time zone"):
        Budgets({}, timezone="../etc/passwd")
    with pytest.raises(TypeError):
        BudgetPolicy(per_run_usd=0.05)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BudgetPolicy(per_user_day_usd=D("-1"))


def test_policies_are_a_frozen_copy() -> None:
    given_policies = {"free": FREE}
    budgets = Budgets(given_policies)
    given_policies["free"] = BATCH
    assert budgets.policy("free") is FREE
    with pytest.raises(TypeError):
        budgets.policies["free"] = BATCH  # type: ignore[index]


def test_no_cap_by_default() -> None:
    assert BudgetPolicy() == BudgetPolicy(None, None)
    assert Budgets().policies == {}


# -- the day -----------------------------------------------------------------------------------


def test_the_day_boundary_is_in_the_configured_time_zone() -> None:
    late = datetime(2025, 1, 1, 23, 30, tzinfo=UTC)
    assert Budgets().day(late) == date(2025, 1, 1)
    assert Budgets(timezone="Europe/Paris").day(late) == date(2025, 1, 2)  # 00:30 in Paris
    assert Budgets(timezone="America/New_York").day(late) == date(2025, 1, 1)
    early = datetime(2025, 1, 2, 3, 0, tzinfo=UTC)
    assert Budgets(timezone="America/New_York").day(early) == date(2025, 1, 1)  # 22:00 there


def test_the_day_follows_summer_time() -> None:
    paris = Budgets(timezone="Europe/Paris")
    assert paris.day(datetime(2025, 7, 1, 21, 59, tzinfo=UTC)) == date(2025, 7, 1)  # 23:59 CEST
    assert paris.day(datetime(2025, 7, 1, 22, 0, tzinfo=UTC)) == date(2025, 7, 2)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Budgets().day(datetime(2025, 1, 1, 12, 0))


def test_day_stream() -> None:
    assert day_stream("u-42", date(2025, 3, 9)) == "budget-u-42-2025-03-09"


# -- configuration -----------------------------------------------------------------------------


def test_from_mapping_reads_exact_amounts() -> None:
    budgets = Budgets.from_mapping(
        {
            "timezone": "Europe/Paris",
            "default_surface": "free",
            "surfaces": {
                "free": {"per_run_usd": "0.05", "per_user_day_usd": "1.00"},
                "enterprise": {"per_run_usd": 5, "per_user_day_usd": 0.1},
                "batch": {"per_user_day_usd": None},
            },
        }
    )
    assert budgets.timezone == "Europe/Paris"
    assert budgets.policy("free") == FREE
    enterprise = budgets.policy("enterprise")
    assert enterprise == BudgetPolicy(D("5"), D("0.1"))
    assert str(enterprise.per_user_day_usd) == "0.1"  # the float's text, not 0.1000000000000000055
    assert budgets.policy("batch") == BudgetPolicy()
    assert budgets.policy("unlisted") == FREE


def test_from_mapping_of_toml() -> None:
    config = tomllib.loads(
        """
        timezone = "Asia/Tokyo"
        [surfaces.free]
        per_run_usd = 0.02
        per_user_day_usd = "0.50"
        """
    )
    budgets = Budgets.from_mapping(config)
    assert budgets.policy("free") == BudgetPolicy(D("0.02"), D("0.50"))
    assert budgets.day(datetime(2025, 1, 1, 15, 0, tzinfo=UTC)) == date(2025, 1, 2)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"surfaces": {"free": {"per_run": "1"}}}, "unknown key"),
        ({"time_zone": "UTC"}, "unknown key"),
        ({"surfaces": {"free": {"per_run_usd": True}}}, "amount"),
        ({"surfaces": {"free": {"per_run_usd": "one dollar"}}}, "not an amount"),
        ({"surfaces": {"free": {"per_run_usd": "-1"}}}, "non-negative"),
        ({"surfaces": {"free": {"per_run_usd": "NaN"}}}, "finite"),
        ({"surfaces": {"free": {"per_run_usd": float("inf")}}}, "finite"),
        ({"surfaces": {"free": "1.00"}}, "table of caps"),
        ({"surfaces": ["free"]}, "surfaces"),
        ({"timezone": "Nowhere/Else"}, "time zone"),
        ({"surfaces": {}, "default_surface": "free"}, "default surface"),
    ],
)
def test_from_mapping_refuses_bad_configuration(config: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Budgets.from_mapping(config)


# -- the reservation decision -----------------------------------------------------------------

MICRO = D("0.000001")


def test_exactly_at_the_cap_is_allowed_one_micro_dollar_over_is_not() -> None:
    # Run cap 0.05: 0.03 committed, 0.02 asked fills it exactly.
    fits = check_reservation(
        amount=D("0.02"), run_committed=D("0.03"), day_committed=D("0.98"), policy=FREE
    )
    assert fits is None
    over_run = check_reservation(
        amount=D("0.02") + MICRO, run_committed=D("0.03"), day_committed=D("0"), policy=FREE
    )
    assert over_run == BudgetExceededReason("run", D("0.05"), D("0.03"), D("0.020001"))
    over_day = check_reservation(
        amount=D("0.02"), run_committed=D("0"), day_committed=D("0.98") + MICRO, policy=FREE
    )
    assert over_day == BudgetExceededReason("user_day", D("1.00"), D("0.980001"), D("0.02"))


def test_when_both_caps_would_be_passed_the_run_is_reported() -> None:
    reason = check_reservation(
        amount=D("1"), run_committed=D("0"), day_committed=D("1"), policy=FREE
    )
    assert reason is not None and reason.scope == "run"


def test_no_cap_never_refuses_and_a_zero_cap_allows_only_free_calls() -> None:
    huge = D("1e9")
    assert (
        check_reservation(
            amount=huge, run_committed=huge, day_committed=huge, policy=BudgetPolicy()
        )
        is None
    )
    zero = BudgetPolicy(per_run_usd=D("0"), per_user_day_usd=None)
    assert (
        check_reservation(amount=D(0), run_committed=D(0), day_committed=D(0), policy=zero) is None
    )
    refused = check_reservation(amount=MICRO, run_committed=D(0), day_committed=D(0), policy=zero)
    assert refused is not None and refused.scope == "run"
    with pytest.raises(ValueError):
        check_reservation(amount=-MICRO, run_committed=D(0), day_committed=D(0), policy=zero)


def test_many_decimal_places_do_not_round_past_a_cap() -> None:
    # 30 significant digits: the default decimal context (28) would round this sum down to
    # exactly the cap and let it through.
    cap = D("1")
    committed = D("0.99999999999999999999999999999")
    policy = BudgetPolicy(per_run_usd=cap)
    reason = check_reservation(
        amount=D("0.00000000000000000000000000002"),
        run_committed=committed,
        day_committed=D(0),
        policy=policy,
    )
    assert reason is not None and reason.scope == "run"


money = st.decimals(min_value=0, max_value=100, places=6)
caps = st.none() | money


@settings(max_examples=200, deadline=None)
@given(amount=money, run=money, day=money, run_cap=caps, day_cap=caps)
def test_a_reservation_is_refused_exactly_when_a_cap_would_be_passed(
    amount: Decimal,
    run: Decimal,
    day: Decimal,
    run_cap: Decimal | None,
    day_cap: Decimal | None,
) -> None:
    policy = BudgetPolicy(per_run_usd=run_cap, per_user_day_usd=day_cap)
    reason = check_reservation(amount=amount, run_committed=run, day_committed=day, policy=policy)
    run_over = run_cap is not None and run + amount > run_cap
    day_over = day_cap is not None and day + amount > day_cap
    assert (reason is not None) == (run_over or day_over)
    if reason is not None:
        assert reason.requested == amount
        assert reason.scope == ("run" if run_over else "user_day")
        assert reason.committed + reason.requested > reason.cap
