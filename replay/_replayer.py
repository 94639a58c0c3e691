"""``Replayer``: run a recorded run again, answered from its own log, and compare.

The replayer owns replay: it reads the run, makes its tape and the tape-answered ports, and
drives the run in a scratch store, stopping, resuming and cancelling it where the recorded run
was interrupted and copying in what people decided (confirmations) where they decided it. How a
run is driven is not this package's: the engine hands in a ``RunDriver`` (its loop, with these
ports in place of the live ones), so ``replay`` never imports ``engine``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from agentledger.events import (
    ConfirmationApproved,
    ConfirmationDenied,
    EventStore,
    NewEvent,
    RecordedEvent,
    RunResumed,
    RunStarted,
    StreamAppend,
)
from agentledger.projections._spend import fold_ledger
from agentledger.projections._streams import run_stream

from ._answers import LedgerReads, ScratchStore, TapeAnswers
from ._batch import ReplayBatch, ReplayProgress, UnknownRunError, replay_batch
from ._divergence import Divergence, NondeterminismError, first_divergence
from ._tape import Diverged, Interrupted, Tape


class RunDriver(Protocol):
    """How the engine drives a run, given the ports to answer it (``answers``) and the store to
    write it to: from its start, from where it stands (a new session), or to its cancellation."""

    async def start(self, store: EventStore, answers: TapeAnswers, started: RunStarted) -> None:
        """Start the run ``started`` describes and drive it until it ends, pauses or stops."""
        ...

    async def resume(self, store: EventStore, answers: TapeAnswers) -> None:
        """Begin a new session of the run and drive it on."""
        ...

    async def cancel(self, store: EventStore, answers: TapeAnswers, reason: str) -> None:
        """Record the run's cancellation."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of a replay: both event sequences, the first divergence, the spend."""

    run_id: str
    recorded: list[RecordedEvent]
    replayed: list[RecordedEvent]
    divergence: Divergence | None
    recorded_spend_usd: Decimal
    replayed_spend_usd: Decimal
    children: tuple[ReplayReport, ...] = ()
    """The replays of the sub-agent runs this run started, in the order it started them."""

    @property
    def matches(self) -> bool:
        """Whether the replay reproduced the recording, the sub-agent runs' included."""
        return self.divergence is None and all(child.matches for child in self.children)

    def check(self) -> None:
        """Raise ``NondeterminismError`` if the replay (or a sub-agent run's) diverged."""
        if self.divergence is not None:
            raise NondeterminismError(self.divergence)
        for child in self.children:
            child.check()


Session = Callable[[], Awaitable[None]]


class Replayer:
    """Replays runs of ``store``; nothing is written to it."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._reads = LedgerReads(store)

    async def replay(self, run_id: str, driver: RunDriver) -> ReplayReport:
        """Drive run ``run_id`` again with ``driver``, every port answered from its log.

        Raises ``UnknownRunError`` if the store holds no run ``run_id``, and the store's
        ``CorruptEventError`` if an event of the run is damaged.
        """
        return await self.replay_with(run_id, lambda started: driver)

    async def replay_with(
        self, run_id: str, driver_for: Callable[[RunStarted], RunDriver]
    ) -> ReplayReport:
        """Like ``replay``, with the driver chosen from the run's ``RunStarted`` (its agent).

        A fork's copied prefix (``forked_at_version`` events) is copied again, not driven: it
        was the original run's work, and the fork's own sessions are replayed from there.
        """
        recorded = await self._store.read_stream(run_stream(run_id))
        if not recorded or not isinstance(recorded[0].event, RunStarted):
            raise UnknownRunError(f"no run {run_id!r} in the store")
        started = recorded[0].event
        driver = driver_for(started)
        copied = _copied(started, len(recorded))
        tape = Tape.from_events(recorded, copied=copied)
        divergence: Divergence | None = None
        async with ScratchStore(run_id, tape) as scratch:
            answers = TapeAnswers(run_id, tape, self._store, scratch, self._reads)
            session: Session | None = lambda: driver.start(scratch, answers, started)  # noqa: E731
            if copied:
                await _copy_prefix(recorded[:copied], scratch, answers)
                session = await _next_session(recorded, scratch, answers, driver)
            while session is not None:
                divergence = await _session(session)
                if divergence is not None:
                    break
                session = await _next_session(recorded, scratch, answers, driver)
            replayed = await scratch.read_stream(run_stream(run_id))
        compared = first_divergence(recorded, replayed)
        if compared is not None and compared.expected is not None and compared.actual is not None:
            divergence = compared  # an event already differs: that is where the run first parted
        elif divergence is None:
            divergence = compared
        return ReplayReport(
            run_id=run_id,
            recorded=recorded,
            replayed=replayed,
            divergence=divergence,
            recorded_spend_usd=fold_ledger(recorded).settled,
            replayed_spend_usd=fold_ledger(replayed).settled,
        )

    async def replay_all(
        self,
        run_ids: Iterable[str],
        driver_for: Callable[[RunStarted], RunDriver],
        *,
        concurrency: int = 4,
        progress: Callable[[ReplayProgress], None] | None = None,
    ) -> ReplayBatch:
        """Replay every run of ``run_ids`` (at most ``concurrency`` at once), each with the
        driver ``driver_for`` gives for its ``RunStarted``; ``progress`` hears of each run as it
        is done. One run's trouble (no such run, a damaged event, ``UnknownAgentError`` from
        ``driver_for``) is its entry in the report; the others go on."""
        return await replay_batch(
            run_ids,
            lambda run_id: self.replay_with(run_id, driver_for),
            concurrency=concurrency,
            progress=progress,
        )


def _copied(started: RunStarted, length: int) -> int:
    """How many leading versions of a run were copied from the run it was forked from."""
    if started.forked_from is None or started.forked_at_version is None:
        return 0
    return min(max(started.forked_at_version, 0), length)


async def _copy_prefix(
    prefix: list[RecordedEvent], scratch: ScratchStore, answers: TapeAnswers
) -> None:
    copied = [NewEvent(r.event, answers.ids.new_id()) for r in prefix]
    await scratch.append(StreamAppend(run_stream(answers.run_id), copied, expected_version=0))


async def _session(session: Session) -> Divergence | None:
    """Run one session; a stop where the recording was interrupted ends it quietly."""
    found: list[Divergence] = []
    try:
        await session()
    except* Interrupted:
        pass
    except* Diverged as group:
        found.extend(_divergences(group))
    return found[0] if found else None


def _divergences(group: BaseExceptionGroup[Diverged]) -> list[Divergence]:
    found: list[Divergence] = []
    for exc in group.exceptions:
        if isinstance(exc, Diverged):
            found.append(exc.divergence)
        elif isinstance(exc, BaseExceptionGroup):
            found.extend(_divergences(exc))
    return found


async def _next_session(
    recorded: list[RecordedEvent], scratch: ScratchStore, answers: TapeAnswers, driver: RunDriver
) -> Session | None:
    """What the recorded run did after the point the replayed one stopped at: people's
    confirmations are copied in, then a resumption, a cancellation, or nothing (it ended)."""
    stream = run_stream(answers.run_id)
    while scratch.run_version < len(recorded):
        event = recorded[scratch.run_version].event
        interruption = answers.next_interruption()
        if (
            interruption is not None
            and interruption.kind == "cancel"
            and interruption.version == scratch.run_version
        ):
            answers.tape.interruptions.popleft()
            reason = interruption.reason
            return lambda: driver.cancel(scratch, answers, reason)
        if isinstance(event, ConfirmationApproved | ConfirmationDenied):
            copied = NewEvent(event, answers.ids.new_id())
            await scratch.append(
                StreamAppend(stream, [copied], expected_version=scratch.run_version)
            )
            continue
        if isinstance(event, RunResumed):
            return lambda: driver.resume(scratch, answers)
        return None
    return None
