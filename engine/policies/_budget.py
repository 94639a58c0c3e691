"""Budget policies (pattern 5): caps per surface, the day boundary, and the reservation decision.

A surface (``free``, ``enterprise``, ``batch``...) names a ``BudgetPolicy``: a cap per run and a
cap per user per day, in US dollars, ``None`` for no cap. ``Budgets`` holds the policies by name
and the time zone in which a user's day begins; ``Budgets.from_mapping`` reads them from
configuration. ``check_reservation`` is the pure decision the engine makes before every model
call; the ledgers it reads are folds of the run's stream and the user's day stream
(``day_stream``), see ``agentledger.projections``' spend folds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentledger.engine._errors import UnknownSurfaceError
from agentledger.projections._streams import day_stream

__all__ = [
    "BudgetExceededReason",
    "BudgetPolicy",
    "BudgetScope",
    "Budgets",
    "check_reservation",
    "day_stream",
]

BudgetScope = Literal["run", "user_day"]
"""Which cap a reservation would pass: the run's, or the user's for the day."""


def _check_cap(name: str, value: Decimal | None) -> None:
    if value is None:
        return
    # A float has already lost the exact amount, so it is refused; from_mapping converts text.
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal or None, not {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative amount, not {value}")


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """The caps of one surface in US dollars: per run and per user per day (``None``: no cap)."""

    per_run_usd: Decimal | None = None
    per_user_day_usd: Decimal | None = None

    def __post_init__(self) -> None:
        _check_cap("per_run_usd", self.per_run_usd)
        _check_cap("per_user_day_usd", self.per_user_day_usd)


def _frozen_policies() -> Mapping[str, BudgetPolicy]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Budgets:
    """Budget policies by surface name, and the time zone of the day boundary.

    ``timezone`` is an IANA name (``"Europe/Paris"``); an unknown one is a ``ValueError`` here,
    not at the first run. ``default_surface``, if set, is the policy of a surface not listed.
    """

    policies: Mapping[str, BudgetPolicy] = field(default_factory=_frozen_policies)
    timezone: str = "UTC"
    default_surface: str | None = None
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        # A copy, so a caller changing its dict later cannot change the policies in force.
        object.__setattr__(self, "policies", MappingProxyType(dict(self.policies)))
        object.__setattr__(self, "_zone", zone)
        for surface, policy in self.policies.items():
            if not isinstance(policy, BudgetPolicy):
                raise TypeError(f"the policy of surface {surface!r} is not a BudgetPolicy")
        if self.default_surface is not None and self.default_surface not in self.policies:
            raise ValueError(f"the default surface {self.default_surface!r} has no policy")

    def policy(self, surface: str) -> BudgetPolicy:
        """The policy of ``surface`` or else of the default; ``UnknownSurfaceError`` if none."""
        found = self.policies.get(surface)
        if found is not None:
            return found
        if self.default_surface is not None:
            return self.policies[self.default_surface]
        raise UnknownSurfaceError(surface, tuple(sorted(self.policies)))

    def day(self, at: datetime) -> date:
        """The user's day that ``at`` falls in, in the configured time zone.

        ``at`` must carry a time zone (the engine's clock gives aware times): a naive time is
        ambiguous by up to a day and raises ``ValueError``.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"a budget day needs a time with a time zone, got naive {at}")
        return at.astimezone(self._zone).date()

    @classmethod
    def from_mapping(cls, config: Mapping[str, object]) -> Budgets:
        """Budgets from configuration shaped like JSON or TOML.

        ``{"timezone": "Europe/Paris", "default_surface": "free", "surfaces": {"free":
        {"per_run_usd": "0.05", "per_user_day_usd": "1.00"}, "batch": {}}}``. Amounts may be
        strings, integers or floats (a float is read as its shortest decimal text, so ``0.05``
        is exactly five cents); a missing or ``null`` amount is no cap. Unknown keys raise
        ``ValueError``, so a misspelt cap is not silently ignored.
        """
        _check_keys("budgets", config, {"timezone", "surfaces", "default_surface"})
        surfaces = config.get("surfaces", {})
        if not isinstance(surfaces, Mapping):
            raise ValueError("budgets: 'surfaces' must be a table of surface name to caps")
        policies: dict[str, BudgetPolicy] = {}
        for name, caps in surfaces.items():
            if not isinstance(name, str) or not isinstance(caps, Mapping):
                raise ValueError(f"budgets: surface {name!r} must be a table of caps")
            where = f"surface {name!r}"
            _check_keys(where, caps, {"per_run_usd", "per_user_day_usd"})
            policies[name] = BudgetPolicy(
                per_run_usd=_amount(where, "per_run_usd", caps.get("per_run_usd")),
                per_user_day_usd=_amount(where, "per_user_day_usd", caps.get("per_user_day_usd")),
            )
        timezone = config.get("timezone", "UTC")
        default_surface = config.get("default_surface")
        if not isinstance(timezone, str):
            raise ValueError("budgets: 'timezone' must be a time zone name")
        if default_surface is not None and not isinstance(default_surface, str):
            raise ValueError("budgets: 'default_surface' must be a surface name")
        return cls(policies, timezone=timezone, default_surface=default_surface)


def _check_keys(where: str, table: Iterable[object], allowed: set[str]) -> None:
    unknown = sorted(str(key) for key in table if key not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}, expected some of {sorted(allowed)}")


def _amount(where: str, key: str, value: object) -> Decimal | None:
    if value is None:
        return None
    # bool is an int to Python, but `per_run_usd = true` is a mistake, not one dollar.
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"{where}: {key} must be an amount in dollars, not {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{where}: {key} is not an amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{where}: {key} must be a finite, non-negative amount, not {value!r}")
    return amount


@dataclass(frozen=True, slots=True)
class BudgetExceededReason:
    """Why a reservation is refused: the cap it would pass, what was committed, what was asked.

    In US dollars; they become the ``cap_usd``, ``committed_usd`` and ``requested_usd`` of the
    ``BudgetExceeded`` event. ``closed_by`` is the reservation id of the overshoot that closed
    the cap (``None`` when the amount would pass it).
    """

    scope: BudgetScope
    cap: Decimal
    committed: Decimal
    requested: Decimal
    closed_by: str | None = None


def check_reservation(
    *,
    amount: Decimal,
    run_committed: Decimal,
    day_committed: Decimal,
    policy: BudgetPolicy,
    run_closed_by: str | None = None,
    day_closed_by: str | None = None,
) -> BudgetExceededReason | None:
    """``None`` if reserving ``amount`` keeps both caps, else which one it would pass.

    A cap is kept while ``committed + amount <= cap``: spending exactly up to the cap is allowed.
    ``committed`` is settled cost plus outstanding reservations (``LedgerState.committed``).
    When both caps would be passed, the run's is reported (the narrower scope).

    ``run_closed_by`` and ``day_closed_by`` name the overshoot (a reply that cost more than its
    reservation, ``RunState.budget_closed_by`` and ``LedgerState.closed_by``) that closed the
    run or the user's day: a closed scope refuses every reservation, whatever its amount, so a
    server that ignores the output limit cannot go on past a cap. A closed run is reported
    against its run cap, or against the day cap when its surface has no run cap; a closed day
    refuses the runs whose surface has a day cap (a surface without one promised nothing for
    the day, and its runs are still bounded by their own caps and overshoots).
    """
    if amount < 0:
        raise ValueError(f"a reservation cannot be negative, got {amount}")
    closed = _closed(policy, amount, run_committed, day_committed, run_closed_by, day_closed_by)
    if closed is not None:
        return closed
    checks: tuple[tuple[BudgetScope, Decimal | None, Decimal], ...] = (
        ("run", policy.per_run_usd, run_committed),
        ("user_day", policy.per_user_day_usd, day_committed),
    )
    with localcontext() as ctx:
        # Sums of money must not round: a rounded total could let a reservation slip past a cap.
        ctx.prec = 60
        ctx.traps[Inexact] = True
        for scope, cap, committed in checks:
            if cap is not None and committed + amount > cap:
                return BudgetExceededReason(scope, cap, committed, amount)
    return None


def _closed(
    policy: BudgetPolicy,
    amount: Decimal,
    run_committed: Decimal,
    day_committed: Decimal,
    run_closed_by: str | None,
    day_closed_by: str | None,
) -> BudgetExceededReason | None:
    """The refusal of a reservation because an overshoot closed the run or the day, if so."""
    run_cap, day_cap = policy.per_run_usd, policy.per_user_day_usd
    if run_closed_by is not None:
        if run_cap is not None:
            return BudgetExceededReason("run", run_cap, run_committed, amount, run_closed_by)
        if day_cap is not None:
            return BudgetExceededReason("user_day", day_cap, day_committed, amount, run_closed_by)
    if day_closed_by is not None and day_cap is not None:
        return BudgetExceededReason("user_day", day_cap, day_committed, amount, day_closed_by)
    return None
