"""Prices: exact costs, the genai-prices table (real entries, tiers, conditions), overrides."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from fractions import Fraction

import pytest
from genai_prices.types import (
    ConditionalPrice,
    ModelPrice,
    StartDateConstraint,
    Tier,
    TieredPrices,
    TimeOfDateConstraint,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.engine._errors import EngineError, UnknownPriceError
from agentledger.engine.models._pricing import (
    PER_MESSAGE_OVERHEAD_TOKENS,
    PER_REQUEST_OVERHEAD_TOKENS,
    Price,
    TokenEstimator,
    _candidates,
    _price_from_table,
    approximate_tokens,
    lookup_price,
    max_input_tokens,
    resolve_price,
)
from agentledger.events import Usage

D = Decimal
MINI = Price(D("0.15"), D("0.60"), D("0.075"))


# -- Price -----------------------------------------------------------------------------------


def test_cost_is_exact_and_splits_cached_input_out_of_input() -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=200, output_tokens=500)
    # 800 * 0.15 + 200 * 0.075 + 500 * 0.60 = 120 + 15 + 300 = 435 dollars per million tokens.
    assert MINI.cost(usage) == D("0.000435")
    assert MINI.cost(Usage()) == 0


def test_cached_input_without_its_own_price_costs_full_input() -> None:
    price = Price(D("3"), D("15"))
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=999_999, output_tokens=0)
    assert price.cost(usage) == D("3")


def test_one_token_costs_a_millionth_of_the_price_exactly() -> None:
    price = Price(D("0.000001"), D("37.5"))
    assert price.cost(Usage(input_tokens=1)) == D("1E-12")
    assert price.cost(Usage(output_tokens=1)) == D("0.0000375")


def test_inconsistent_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="cached"):
        MINI.cost(Usage(input_tokens=10, cached_input_tokens=11))
    with pytest.raises(ValueError, match="negative"):
        MINI.cost(Usage(output_tokens=-1))


def test_worst_case_prices_all_input_uncached_and_all_of_max_tokens() -> None:
    assert MINI.worst_case(10_000, 1_000) == D("0.0021")  # 1500 + 600 per million
    assert MINI.worst_case(0, 0) == 0
    with pytest.raises(ValueError):
        MINI.worst_case(-1, 10)


def test_prices_must_be_exact_non_negative_decimals() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        Price(0.15, D("0.6"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Price(D("-0.01"), D("0.6"))
    with pytest.raises(ValueError):
        Price(D("1"), D("1"), D("NaN"))
    assert Price.free().cost(Usage(input_tokens=10**9, output_tokens=10**9)) == 0


@settings(max_examples=150, deadline=None)
@given(
    inp=st.integers(0, 10**10),
    cached_share=st.fractions(0, 1),
    out=st.integers(0, 10**9),
    prices=st.lists(st.decimals(0, 1000, places=6), min_size=3, max_size=3),
    has_cache_price=st.booleans(),
)
def test_cost_equals_the_rational_formula(
    inp: int, cached_share: Fraction, out: int, prices: list[Decimal], has_cache_price: bool
) -> None:
    cached = int(inp * cached_share)
    price = Price(prices[0], prices[1], prices[2] if has_cache_price else None)
    cache_rate = prices[2] if has_cache_price else prices[0]
    expected = (
        Fraction(inp - cached) * Fraction(prices[0])
        + Fraction(cached) * Fraction(cache_rate)
        + Fraction(out) * Fraction(prices[1])
    ) / 10**6
    cost = price.cost(Usage(input_tokens=inp, cached_input_tokens=cached, output_tokens=out))
    assert isinstance(cost, Decimal)
    assert Fraction(cost) == expected
    assert price.worst_case(inp, out) >= cost


# -- the table ---------------------------------------------------------------------------------


def test_real_models_from_the_table() -> None:
    assert lookup_price("gpt-4o-mini") == MINI
    assert lookup_price("gpt-4o-mini", "openai") == MINI
    assert lookup_price("gpt-4o-mini-2024-07-18") == MINI  # a dated snapshot name matches too
    haiku = lookup_price("claude-3-5-haiku-latest", "anthropic")
    assert haiku == Price(D("0.8"), D("4"), D("0.08"))


def test_unknown_models_and_providers_are_none() -> None:
    assert lookup_price("no-such-model-anywhere-42") is None
    assert lookup_price("gpt-4o-mini", "no-such-provider") is None


TIERED = ModelPrice(
    input_mtok=TieredPrices(base=D("3"), tiers=[Tier(start=200_000, price=D("6"))]),
    output_mtok=TieredPrices(base=D("15"), tiers=[Tier(start=200_000, price=D("22.5"))]),
    cache_read_mtok=D("0.3"),
)
FLAT = ModelPrice(input_mtok=D("2"), output_mtok=D("10"), cache_read_mtok=D("0.2"))


def test_tiered_prices_take_the_highest_tier() -> None:
    assert _price_from_table(_candidates(TIERED, None)) == Price(D("6"), D("22.5"), D("0.3"))


def test_time_of_day_discounts_take_the_highest_price() -> None:
    off_peak = ModelPrice(input_mtok=D("0.1"), output_mtok=D("0.5"))
    prices = [
        ConditionalPrice(prices=FLAT),
        ConditionalPrice(
            constraint=TimeOfDateConstraint(start_time=time(16, 30), end_time=time(0, 30)),
            prices=off_peak,
        ),
    ]
    at = datetime(2025, 6, 1, 17, 0, tzinfo=UTC)  # off-peak now, but not all day
    for when in (None, at):
        # The off-peak entry has no cache price: its cached input costs its full input price.
        assert _price_from_table(_candidates(prices, when)) == Price(D("2"), D("10"), D("0.2"))


def test_a_price_replaced_before_the_given_time_no_longer_counts() -> None:
    prices = [
        ConditionalPrice(prices=TIERED),
        ConditionalPrice(constraint=StartDateConstraint(start_date=date(2025, 3, 13)), prices=FLAT),
    ]
    before = datetime(2025, 3, 12, 23, 59, tzinfo=UTC)
    after = datetime(2025, 3, 13, 0, 0, tzinfo=UTC)
    assert _price_from_table(_candidates(prices, after)) == Price(D("2"), D("10"), D("0.2"))
    # Before the change, or with no time given, both may apply: the highest of each counts.
    highest = Price(D("6"), D("22.5"), D("0.3"))
    assert _price_from_table(_candidates(prices, before)) == highest
    assert _price_from_table(_candidates(prices, None)) == highest


def test_a_model_with_no_token_price_is_unknown() -> None:
    per_request = ModelPrice(requests_kcount=D("5"))
    assert _price_from_table(_candidates(per_request, None)) is None
    input_only = ModelPrice(input_mtok=D("0.02"))
    assert _price_from_table(_candidates(input_only, None)) == Price(D("0.02"), D("0"))


# -- resolving ---------------------------------------------------------------------------------


def test_resolution_order_is_override_then_model_then_table() -> None:
    override = Price(D("9"), D("9"))
    declared = Price(D("5"), D("5"))
    name = "gpt-4o-mini"
    both = {name: override}
    assert resolve_price(name, overrides=both, model_price=declared, provider=None) == override
    other = {"other": override}
    assert resolve_price(name, overrides=other, model_price=declared, provider=None) == declared
    assert resolve_price(name, overrides=other, model_price=None, provider="openai") == MINI


def test_an_unpriced_model_is_an_error_that_says_how_to_price_it() -> None:
    with pytest.raises(UnknownPriceError) as caught:
        resolve_price("my-local-llm", overrides={}, model_price=None, provider=None)
    assert isinstance(caught.value, EngineError)
    assert caught.value.model == "my-local-llm"
    message = str(caught.value)
    assert "my-local-llm" in message and "Price(input_per_mtok=" in message
    assert "Price.free()" in message
    free = Price.free()
    assert (
        resolve_price(
            "my-local-llm", overrides={"my-local-llm": free}, model_price=None, provider=None
        )
        is free
    )


# -- token counts ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200), messages=st.integers(0, 50))
def test_max_input_tokens_is_at_least_one_token_per_byte(text: str, messages: int) -> None:
    size = len(text.encode())
    bound = max_input_tokens(size, messages)
    assert bound == size + messages * PER_MESSAGE_OVERHEAD_TOKENS + PER_REQUEST_OVERHEAD_TOKENS
    assert bound >= size >= len(text) >= approximate_tokens(text)


def test_max_input_tokens_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError):
        max_input_tokens(-1, 0)
    with pytest.raises(ValueError):
        max_input_tokens(0, -1)


def test_approximate_tokens_is_four_characters_rounded_up() -> None:
    estimator: TokenEstimator = approximate_tokens
    assert [estimator(t) for t in ("", "a", "abcd", "abcde", "é" * 8)] == [0, 1, 1, 2, 2]
