"""The append acceptance rule, once for every backend: pure, no I/O.

A backend reads the heads of the streams an append touches (and, when it looks them up, which of
its event ids are already stored), asks :func:`judge` for the verdict, and inserts the rows of an
accepted append at the versions the verdict gives. Group-committing backends judge the calls of a
batch with :func:`judge_in_order`, so a batch behaves exactly like the same calls made one by one.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ._envelope import StreamAppend
from ._errors import ConcurrencyError, DuplicateEventError


@dataclass(slots=True)
class Accepted:
    """An append call the rule accepts: where its events go and what it changes."""

    first_versions: list[int]
    """The version of the first event of each ``StreamAppend``, in the order given."""
    heads: dict[str, int]
    """The head (version) of every stream the call touches, once it is written."""
    event_ids: list[str]
    """The ids the call adds, in the order given."""


Refused = DuplicateEventError | ConcurrencyError
"""Why an append call is refused; nothing of it may be written."""

Verdict = Accepted | Refused


def judge(
    appends: Sequence[StreamAppend], heads: Mapping[str, int], known_ids: Container[str]
) -> Verdict:
    """The verdict on one ``append(*appends)`` call, all or nothing.

    ``heads`` holds the current version of the streams involved (a stream missing from it has
    no events yet); ``known_ids`` the event ids already stored. Ids are judged before versions:
    an id repeated in the call or already known refuses the call with ``DuplicateEventError``,
    even when a version is stale too, because a stale append that carries a stored id is most
    likely the retry of an append that did commit, and the duplicate is what tells its writer
    so. Then each ``StreamAppend`` whose ``expected_version`` is not its stream's head refuses
    the call with ``ConcurrencyError``; a stream appended to twice in one call continues where
    the first append left off. None of the arguments is changed.
    """
    # One pass over the call, plain loops: this runs for every append of every batch. The first
    # stale version is only noted, because the ids are judged first.
    ids: list[str] = []
    moved: dict[str, int] = {}
    firsts: list[int] = []
    stale: ConcurrencyError | None = None
    for append in appends:
        for new in append.events:
            ids.append(new.event_id)
        stream_id = append.stream_id
        current = moved.get(stream_id)
        if current is None:
            current = heads.get(stream_id, 0)
        expected = append.expected_version
        if stale is None and expected is not None and expected != current:
            stale = ConcurrencyError(stream_id, expected, current)
        firsts.append(current + 1)
        moved[stream_id] = current + len(append.events)
    for event_id in ids:
        if event_id in known_ids:
            return DuplicateEventError(_repeated(ids, known_ids))
    if len(ids) > 1 and len(set(ids)) < len(ids):
        return DuplicateEventError(_repeated(ids, known_ids))
    if stale is not None:
        return stale
    return Accepted(firsts, moved, ids)


def judge_in_order(
    calls: Iterable[Sequence[StreamAppend]],
    heads: Mapping[str, int],
    known_ids: Iterable[str] = (),
) -> list[Verdict]:
    """The verdicts on the calls of one group-commit batch, judged as if made one by one.

    Each call is judged by :func:`judge` against ``heads`` and ``known_ids`` as the calls
    accepted before it in ``calls`` left them; a refused call changes nothing for the calls
    after it. As for :func:`judge`, a stream missing from ``heads`` has no events yet; none of
    the arguments is changed.
    """
    current = dict(heads)
    known = set(known_ids)
    verdicts: list[Verdict] = []
    for appends in calls:
        verdict = judge(appends, current, known)
        if isinstance(verdict, Accepted):
            current.update(verdict.heads)
            known.update(verdict.event_ids)
        verdicts.append(verdict)
    return verdicts


def _repeated(ids: list[str], known_ids: Container[str]) -> list[str]:
    """Each occurrence of an id that is already known or came earlier in ``ids``."""
    seen: set[str] = set()
    repeated: list[str] = []
    for event_id in ids:
        if event_id in known_ids or event_id in seen:
            repeated.append(event_id)
        seen.add(event_id)
    return repeated


__all__ = ["Accepted", "Refused", "Verdict", "judge", "judge_in_order"]
