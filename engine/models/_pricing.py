"""Model prices (pattern 5): exact per-token costs, a price table, and token upper bounds.

A ``Price`` is US dollars per million tokens, as ``Decimal``: costs are computed exactly and any
rounding would raise rather than pass silently. Prices come, in this order, from the agent's
overrides, from the model object's own declared price, or from the maintained ``genai-prices``
table bundled with that library (``lookup_price``); a model found in none of them is an
``UnknownPriceError`` when the agent is built, never a silent zero.

Reservations need an *upper bound* on the input tokens of a request before it is sent:
``max_input_tokens`` gives one from its size in bytes. Estimates that may be low (for deciding
when to compact memory, not for caps) go through a ``TokenEstimator``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, Inexact, localcontext
from typing import TYPE_CHECKING, Protocol

from agentledger.engine._errors import UnknownPriceError
from agentledger.events import Usage

if TYPE_CHECKING:
    from genai_prices.types import ConditionalPrice, ModelPrice, TieredPrices

_PER_MTOK = 6  # prices are per 10**6 tokens: dividing is an exact shift of the exponent
_ZERO = Decimal(0)


def _check_money(name: str, value: object) -> None:
    # A float has already lost the exact value (0.1 is not 1/10), so it is refused, not converted.
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative amount, not {value}")


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} cannot be negative, got {value}")


def _exact_sum(terms: Iterable[tuple[int, Decimal]]) -> Decimal:
    """``sum(count * price) / 10**6``, exactly: rounding raises ``decimal.Inexact``."""
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[Inexact] = True
        total = sum((Decimal(count) * price for count, price in terms), _ZERO)
        return total.scaleb(-_PER_MTOK)


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs, in US dollars per million tokens.

    ``cached_input_per_mtok`` is the price of input tokens served from the provider's prompt
    cache; ``None`` means they cost the same as other input tokens.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        _check_money("input_per_mtok", self.input_per_mtok)
        _check_money("output_per_mtok", self.output_per_mtok)
        if self.cached_input_per_mtok is not None:
            _check_money("cached_input_per_mtok", self.cached_input_per_mtok)

    @classmethod
    def free(cls) -> Price:
        """A model that costs nothing (a local model, a test double)."""
        return cls(_ZERO, _ZERO)

    def cost(self, usage: Usage) -> Decimal:
        """The exact cost of ``usage`` in US dollars.

        ``usage.input_tokens`` *includes* ``usage.cached_input_tokens`` (the OpenAI convention the
        HTTP clients follow), so the uncached part is their difference. Negative counts, or more
        cached than input tokens, are a provider or client bug and raise ``ValueError``.
        """
        _check_count("input_tokens", usage.input_tokens)
        _check_count("output_tokens", usage.output_tokens)
        _check_count("cached_input_tokens", usage.cached_input_tokens)
        if usage.cached_input_tokens > usage.input_tokens:
            raise ValueError(
                f"usage reports {usage.cached_input_tokens} cached input tokens but only "
                f"{usage.input_tokens} input tokens (cached tokens are part of the input)"
            )
        cached_price = (
            self.input_per_mtok
            if self.cached_input_per_mtok is None
            else self.cached_input_per_mtok
        )
        return _exact_sum(
            (
                (usage.input_tokens - usage.cached_input_tokens, self.input_per_mtok),
                (usage.cached_input_tokens, cached_price),
                (usage.output_tokens, self.output_per_mtok),
            )
        )

    def worst_case(self, input_tokens: int, max_tokens: int) -> Decimal:
        """The most a call can cost: ``input_tokens`` at the input price, ``max_tokens`` of output.

        Input is priced as uncached, or as cached if a (strange) cache price is the higher one,
        so ``cost`` of any usage within these counts is never more than this.
        """
        _check_count("input_tokens", input_tokens)
        _check_count("max_tokens", max_tokens)
        input_price = self.input_per_mtok
        if self.cached_input_per_mtok is not None:
            input_price = max(input_price, self.cached_input_per_mtok)
        return _exact_sum(((input_tokens, input_price), (max_tokens, self.output_per_mtok)))


# -- the price table ---------------------------------------------------------------------------


def lookup_price(
    model: str, provider: str | None = None, *, at: datetime | None = None
) -> Price | None:
    """The price of ``model`` in the ``genai-prices`` table, or ``None`` if it is not there.

    ``provider`` is a ``genai-prices`` provider id (``"openai"``, ``"anthropic"``, ...); without
    it the library picks the provider whose models match the name. Only the table shipped with
    the installed library is read: nothing here fetches newer prices (an application that runs
    the library's own ``UpdatePrices`` gets the prices it fetched).

    The table's prices can depend on things a reservation cannot know yet, so the highest
    candidate is taken, for worst-case safety (a cap is never overshot because a price was too
    low; the cost is then overstated by at most the gap):

    - *tiered* prices (a higher rate past some number of input tokens): the highest tier;
    - prices *conditional* on the time of day (off-peak discounts): the highest of them;
    - prices that start on a date: with ``at``, those replaced before ``at`` are dropped but
      those that start later are kept (they may come into force while the agent runs); without
      ``at``, every price the model ever had counts.

    Request-specific variants (batch processing, priority or flex tiers) are not used: the
    engine sends standard requests. Only token prices count: a model with no per-token input
    price (priced by request, audio hour...) is reported as unknown. A missing output price is
    zero, as in the table's own calculation (input-only models).
    """
    # Imported here: the bundled table takes a noticeable time to load, and only building an
    # agent that has no explicit price needs it.
    from genai_prices import data_snapshot

    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    return _price_from_table(_candidates(info.prices, at))


def _candidates(
    prices: ModelPrice | list[ConditionalPrice], at: datetime | None
) -> list[ModelPrice]:
    from genai_prices.types import StartDateConstraint

    if not isinstance(prices, list):
        return [prices]
    if at is None:
        return [conditional.prices for conditional in prices]
    # The library applies the last entry whose constraint holds; scanning back from the end, the
    # first entry that certainly holds at ``at`` hides every entry before it. Entries after it
    # may hold at some time of the day, or from some later date, so they stay candidates.
    chosen: list[ModelPrice] = []
    for conditional in reversed(prices):
        constraint = conditional.constraint
        chosen.append(conditional.prices)
        if constraint is None or (
            isinstance(constraint, StartDateConstraint) and constraint.active(at)
        ):
            return chosen
    # No entry holds yet: the library falls back to the first, which is in ``chosen`` already.
    return chosen


def _highest(value: Decimal | TieredPrices | None) -> Decimal | None:
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        return max([value.base, *(tier.price for tier in value.tiers)])
    return value


def _price_from_table(candidates: list[ModelPrice]) -> Price | None:
    inputs: list[Decimal] = []
    outputs: list[Decimal] = []
    cached: list[Decimal] = []
    any_cache_price = False
    for price in candidates:
        input_price = _highest(price.input_mtok)
        if input_price is None:
            continue
        cache_price = _highest(price.cache_read_mtok)
        any_cache_price = any_cache_price or cache_price is not None
        inputs.append(input_price)
        outputs.append(_highest(price.output_mtok) or _ZERO)
        cached.append(input_price if cache_price is None else cache_price)
    if not inputs:
        return None
    return Price(
        input_per_mtok=max(inputs),
        output_per_mtok=max(outputs),
        cached_input_per_mtok=max(cached) if any_cache_price else None,
    )


def resolve_price(
    model_name: str,
    *,
    overrides: Mapping[str, Price],
    model_price: Price | None,
    provider: str | None,
    at: datetime | None = None,
) -> Price:
    """The price to charge ``model_name`` at: an override, the model's own price, or the table.

    Raises ``UnknownPriceError`` when none of the three knows the model, so an agent with an
    unpriced model fails when it is built rather than spending uncounted money.
    """
    override = overrides.get(model_name)
    if override is not None:
        return override
    if model_price is not None:
        return model_price
    found = lookup_price(model_name, provider, at=at)
    if found is not None:
        return found
    where = f" from provider {provider!r}" if provider else ""
    raise UnknownPriceError(
        model_name,
        f"no price known for model {model_name!r}{where}: the genai-prices table does not list "
        "it. Give the agent a price override for it, e.g. "
        f"{{{model_name!r}: Price(input_per_mtok=Decimal('0.15'), "
        "output_per_mtok=Decimal('0.60'))} (US dollars per million tokens), or declare one on "
        "the model object; use Price.free() for a model that really costs nothing.",
    )


# -- token counts ------------------------------------------------------------------------------

PER_MESSAGE_OVERHEAD_TOKENS = 16
"""Tokens a chat template may add around each message (role markers, start and end tokens)."""

PER_REQUEST_OVERHEAD_TOKENS = 512
"""Tokens a provider may add to a whole request: reply priming and the hidden system prompt
that describes tools (Anthropic documents up to a few hundred tokens for it)."""


def max_input_tokens(request_bytes: int, messages: int) -> int:
    """An upper bound on the input tokens of a request of ``request_bytes`` UTF-8 bytes.

    ``request_bytes`` is the size of everything sent as text (for instance the serialised
    request body: message contents, tool calls and tool schemas, plus JSON syntax, which only
    adds bytes), ``messages`` the number of messages in it.

    Why it is a bound: the tokenizers of current providers are byte-level BPE (or fall back to
    bytes), so every token of the text stands for at least one byte of it and a text of ``n``
    bytes has at most ``n`` tokens. What the provider adds that is not in the bytes (the special
    tokens of its chat template, its tool-use preamble) is covered by the per-message and
    per-request constants. Real counts are usually three to four times lower; the difference is
    released when the call settles.
    """
    _check_count("request_bytes", request_bytes)
    _check_count("messages", messages)
    return request_bytes + messages * PER_MESSAGE_OVERHEAD_TOKENS + PER_REQUEST_OVERHEAD_TOKENS


class TokenEstimator(Protocol):
    """Estimates the tokens of a text not yet sent (memory policy; not for budget caps)."""

    def __call__(self, text: str) -> int:
        """The estimated number of tokens of ``text``."""
        ...


def approximate_tokens(text: str) -> int:
    """About four characters per token, rounded up: a cheap estimate, not a bound."""
    return (len(text) + 3) // 4
