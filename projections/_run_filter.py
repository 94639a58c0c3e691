"""``RunFilter``: which runs of a store a command is about (agent, user, status, start time).

One filter serves every tool that works over many runs (replay of many runs, what-if, the CLI's
listings): it selects rows of the run index (``RunSummary``), and ``find_runs`` reads that index
from a store (the saved one, caught up to the head) and applies it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from agentledger.events import EventStore

from ._run_index import RunIndex, RunStatus, RunSummary, list_runs
from ._runner import ProjectionRunner

_STATUSES: frozenset[str] = frozenset(
    {"running", "paused", "completed", "failed", "cancelled", "budget_exceeded"}
)


class RunFilterError(ValueError):
    """Raised when a ``RunFilter`` is given a value it cannot filter by (an unknown status, a
    negative limit, a time window that ends before it starts, a naive datetime)."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Runs that match every field given (``None``: any).

    ``status`` is one status or several; the time window is ``started_since <= started_at <
    started_until`` (aware datetimes), so consecutive windows neither overlap nor leave a gap.
    ``forks``: ``False`` leaves out runs forked from another, ``True`` keeps only them. Matches
    come in start order (then run id), oldest first unless ``newest_first``; ``limit`` keeps the
    first that many of that order.
    """

    agent: str | None = None
    user_id: str | None = None
    status: RunStatus | frozenset[RunStatus] | None = None
    started_since: datetime | None = None
    started_until: datetime | None = None
    forks: bool | None = None
    limit: int | None = None
    newest_first: bool = False
    _statuses: frozenset[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        statuses: frozenset[str] | None
        if self.status is None:
            statuses = None
        elif isinstance(self.status, str):
            statuses = frozenset({self.status})
        else:
            statuses = frozenset(self.status)
        if statuses is not None and not statuses <= _STATUSES:
            unknown = ", ".join(sorted(statuses - _STATUSES))
            raise RunFilterError(f"unknown run status {unknown}; one of {sorted(_STATUSES)}")
        if self.limit is not None and self.limit < 0:
            raise RunFilterError(f"limit must be 0 or more, not {self.limit}")
        for name in ("started_since", "started_until"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise RunFilterError(f"{name} must be an aware datetime (with a time zone)")
        since, until = self.started_since, self.started_until
        if since is not None and until is not None and until < since:
            raise RunFilterError("started_until is before started_since")
        object.__setattr__(self, "_statuses", statuses)

    def matches(self, row: RunSummary) -> bool:
        """Whether ``row`` passes every condition (``limit`` aside, which is about a list)."""
        return (
            (self.agent is None or row.agent == self.agent)
            and (self.user_id is None or row.user_id == self.user_id)
            and (self._statuses is None or row.status in self._statuses)
            and (self.started_since is None or row.started_at >= self.started_since)
            and (self.started_until is None or row.started_at < self.started_until)
            and (self.forks is None or (row.forked_from is not None) == self.forks)
        )

    def select(self, rows: Mapping[str, RunSummary]) -> list[RunSummary]:
        """The rows of a run index state (``{run_id: RunSummary}``) this filter keeps, in order."""
        statuses: Collection[RunStatus] | None = self._statuses  # type: ignore[assignment]
        if self.forks is None:
            candidates: Mapping[str, RunSummary] = rows
        else:
            candidates = {
                k: r for k, r in rows.items() if (r.forked_from is not None) == self.forks
            }
        return list_runs(
            candidates,
            user_id=self.user_id,
            status=statuses,
            agent=self.agent,
            started_after=self.started_since,
            started_before=self.started_until,
            limit=self.limit,
            newest_first=self.newest_first,
        )


async def find_runs(store: EventStore, run_filter: RunFilter | None = None) -> list[RunSummary]:
    """The runs of ``store`` that ``run_filter`` keeps (default: every run, oldest first).

    Reads the saved run index (``RunIndex``, as a ``ProjectionRunner`` keeps it) and folds the
    events after it, up to the head; nothing is saved, so it writes nothing to the store. A run
    with a damaged event is indexed as far as its events can be read.
    """
    async with ProjectionRunner(store, RunIndex()) as runner:
        await runner.catch_up(save=False)
        return (run_filter or RunFilter()).select(runner.rows)
