"""``ProjectionRunner``: keeps one persistent keyed projection up to date with the log.

The runner folds events by global position and saves the rows that changed together with the
new position in one ``save_checkpoint`` call, in the events' own database. Saved rows therefore
always match the saved position exactly: after a crash a new runner loads them and re-folds only
the events after that position, which is the work the crash lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import Generic, Self, TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agentledger.events import ConcurrencyError, EventStore, RecordedEvent

from ._damage import PARKED_KEY_PREFIX, ParkedStream, fold_around_damage
from ._projection import KeyedProjection, RowDecodeError, RowFolder, RunnerClosedError

R = TypeVar("R")


class ProjectionRunner(Generic[R]):
    """Folds the event log into a ``KeyedProjection`` and keeps its rows saved in the store.

    Use as ``async with ProjectionRunner(store, projection) as runner:``; entering loads the
    saved checkpoint. Then ``catch_up()`` folds up to the head, ``run()`` follows the log
    forever, ``rebuild()`` folds again from position 0. ``rows`` is a live, read-only view of
    the state as of ``position`` (which may be ahead of ``saved_position``). Methods may be
    called from several tasks at once (e.g. ``catch_up`` while ``run`` follows); they take
    turns, and no event is folded twice.

    Folding: the rows a page touches stay thawed (mutable, private) across pages and are frozen
    into ``rows`` every ``save_every`` events, at the end of a ``catch_up`` and after each live
    batch of ``run``, so during a long ``catch_up`` the rows (and ``position``) move forward in
    steps of ``save_every`` events.

    Save policy: only rows that changed since the last save are written, with the new position,
    atomically. ``catch_up`` saves every ``save_every`` events and once at the end; ``run`` saves
    every ``save_every`` events and whenever it has folded everything its subscription had ready
    (an idle moment), so a quiet projection is saved after each live batch. Leaving the block,
    being cancelled or crashing saves nothing more: the next runner re-folds the unsaved tail.

    Concurrency: several runners of the same projection may run at once (e.g. one per process);
    each save names the position it started from, and a runner whose save fails with
    ``ConcurrencyError`` (another runner saved first) drops its unsaved state, reloads the saved
    one and folds on from there. Folding is deterministic, so the work it drops is the same as
    what the other runner saved.

    Damage: an event that raises ``CorruptEventError`` is skipped and its stream noted in
    ``parked`` (saved with the rows), so one damaged run does not stop the projection; see
    ``_damage``. Other decode errors (an unknown type, a newer schema) still stop it.
    """

    def __init__(
        self,
        store: EventStore,
        projection: KeyedProjection[R],
        *,
        page_size: int = 1000,
        save_every: int = 10_000,
    ) -> None:
        if page_size < 1 or save_every < 1:
            raise ValueError("page_size and save_every must be at least 1")
        self.store = store
        self.projection = projection
        self.page_size = page_size
        self.save_every = save_every
        self._rows: dict[str, R] = {}
        self._folder = RowFolder(projection, self._rows)
        # Events up to _folded are folded; rows show them up to _position (see _flush).
        self._folded = 0
        self._position = 0
        self._saved_position = 0
        self._dirty: set[str] = set()
        self._parked: dict[str, ParkedStream] = {}
        self._parked_dirty: set[str] = set()
        self._reset_pending = False
        self._open = False
        self._advanced: anyio.Event | None = None
        # Serialises folding and saving between catch_up, rebuild, save and run's steps, so
        # concurrent calls on one runner never fold the same page twice.
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        await self._reload()
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        self._notify()

    @property
    def name(self) -> str:
        """The projection's name, under which its checkpoint is saved."""
        return self.projection.name

    @property
    def position(self) -> int:
        """The global position of the last event folded into ``rows``."""
        return self._position

    @property
    def saved_position(self) -> int:
        """The position of the state this runner last saved or loaded."""
        return self._saved_position

    @property
    def rows(self) -> Mapping[str, R]:
        """The folded state, ``{key: row}``: a live read-only view, current as of ``position``."""
        return MappingProxyType(self._rows)

    @property
    def parked(self) -> Mapping[str, ParkedStream]:
        """Streams with a damaged event the projection skipped, ``{stream_id: where and why}``
        (the first damaged event of each), as of the events folded so far."""
        return MappingProxyType(self._parked)

    async def catch_up(self, *, save: bool = True) -> int:
        """Fold every event up to the store's head and return how many events were folded.

        Reads ``read_all`` pages of ``page_size``. With ``save=False`` nothing is written (a
        read-only follower, or to ``save()`` later). Events folded and then dropped because
        another runner saved first (see the class docs) are counted too.
        """
        self._check_open()
        async with self._lock:
            return await self._catch_up(save=save)

    async def _catch_up(self, *, save: bool) -> int:
        folded = 0
        page = await self.store.read_all(after=self._folded, limit=self.page_size)
        while True:
            if not page:
                self._flush()
                # A save that lost to another runner reloaded an older or newer state: go on
                # folding from there.
                if not save or await self._save():
                    break
                page = await self.store.read_all(after=self._folded, limit=self.page_size)
                continue
            last = page[-1].position
            if len(page) == self.page_size:
                following: list[RecordedEvent] | None = await self._fold_while_reading(page)
            else:
                self._apply(page)
                following = None
            folded += len(page)
            if self._folded - self._position >= self.save_every:
                self._flush()
                # A rebuild saves once at the end, so the saved rows never go back to an early
                # position while other readers use them.
                if save and not self._reset_pending:
                    await self._save()
            if following is None or self._folded != last:  # none read ahead, or a reload
                following = await self.store.read_all(after=self._folded, limit=self.page_size)
            page = following
        return folded

    async def _fold_while_reading(self, page: list[RecordedEvent]) -> list[RecordedEvent]:
        """Fold ``page`` while the page after it is read: the database works in its own thread
        (or server) meanwhile, so reading and folding overlap."""
        following: list[RecordedEvent] = []

        async def read() -> None:
            following.extend(
                await self.store.read_all(after=page[-1].position, limit=self.page_size)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.lowlevel.checkpoint()  # let the read reach the database first
            self._apply(page)
        return following

    async def rebuild(self) -> int:
        """Fold from position 0 into empty rows, then replace the saved state in one save.

        For a projection whose code changed. Returns the number of events folded. If another
        runner saves meanwhile, the rebuilt state still replaces the saved one; that runner's
        next save fails and it reloads the rebuilt state.
        """
        self._check_open()
        async with self._lock:
            self._folder.discard()
            self._rows.clear()
            self._folded = self._position = 0
            self._dirty = set()
            self._parked.clear()
            self._parked_dirty = set()
            self._reset_pending = True
            self._notify()
            return await self._catch_up(save=True)

    async def save(self) -> bool:
        """Save the changed rows and the position; ``False`` if another runner had saved first.

        On ``False`` the runner has reloaded the saved state and position (see the class docs).
        """
        self._check_open()
        async with self._lock:
            return await self._save()

    async def _save(self) -> bool:
        self._flush()
        if (
            self._position == self._saved_position
            and not self._dirty
            and not self._parked_dirty
            and not self._reset_pending
        ):
            return True
        encode = self.projection.encode_row
        rows = self._rows
        changes = {key: (encode(rows[key]) if key in rows else None) for key in self._dirty}
        for stream_id in self._parked_dirty:
            changes[PARKED_KEY_PREFIX + stream_id] = self._parked[stream_id].encode()
        expected = self._saved_position
        while True:
            try:
                await self.store.save_checkpoint(
                    self.name,
                    expected_position=expected,
                    position=self._position,
                    rows=changes,
                    reset=self._reset_pending,
                )
                break
            except ConcurrencyError:
                if not self._reset_pending:
                    await self._reload()
                    return False
            # A reset replaces whatever was saved, so it only needs the current saved position.
            expected = (await self.store.load_checkpoint(self.name)).position
        self._saved_position = self._position
        self._dirty.clear()
        self._parked_dirty.clear()
        self._reset_pending = False
        self._notify()
        return True

    async def run(self, *, poll_interval: float = 0.2) -> None:
        """Catch up, then follow the log as it grows until cancelled (or the store's
        subscription ends).

        New events appended through the same store object are seen at once, those of other
        processes within ``poll_interval`` seconds. See the class docs for when it saves.
        """
        self._check_open()
        async with self._lock:
            await self._catch_up(save=True)
        try:
            while await self._follow(poll_interval):
                pass
        except BaseExceptionGroup as group:
            # The pump task is an implementation detail: a single failure is raised as itself.
            if len(group.exceptions) == 1:
                inner = group.exceptions[0]
                raise inner from inner.__cause__
            raise

    async def wait_until(self, position: int, *, saved: bool = False) -> None:
        """Wait until the runner has folded the event at ``position`` into ``rows`` (e.g. to
        read your own append), or with ``saved=True`` until it has also saved it."""
        while (self._saved_position if saved else self._position) < position:
            self._check_open()
            if self._advanced is None:
                self._advanced = anyio.Event()
            await self._advanced.wait()

    async def _follow(self, poll_interval: float) -> bool:
        # True when the state went back behind the subscription (a save that lost to another
        # runner reloaded, or a rebuild): it must restart from there. False when it ended.
        send, receive = anyio.create_memory_object_stream[RecordedEvent](self.page_size)
        followed = self._position
        async with receive, send, anyio.create_task_group() as tasks:
            tasks.start_soon(self._pump, send, followed, poll_interval)
            while True:
                try:
                    page = [await receive.receive()]
                except anyio.EndOfStream:
                    return False
                idle = self._drain(receive, page)
                async with self._lock:
                    if self._folded < followed:
                        tasks.cancel_scope.cancel()
                        return True
                    followed = page[-1].position
                    self._apply(page)
                    self._flush()
                    if idle or self._position - self._saved_position >= self.save_every:
                        await self._save()
                    # A save that lost reloads the saved state: ahead of the subscription, its
                    # events are skipped as folded already; behind it, resubscribe.
                    if self._folded < followed:
                        tasks.cancel_scope.cancel()
                        return True
        return False  # only reached if the task group swallowed an exception, which it never does

    def _drain(
        self, receive: MemoryObjectReceiveStream[RecordedEvent], page: list[RecordedEvent]
    ) -> bool:
        # Takes what the pump has ready, up to a page; True if nothing is left (an idle moment).
        while len(page) < self.page_size:
            try:
                page.append(receive.receive_nowait())
            except anyio.WouldBlock:
                return True
        left = receive.statistics()
        return left.current_buffer_used == 0 and left.tasks_waiting_send == 0

    async def _pump(
        self, send: MemoryObjectSendStream[RecordedEvent], after: int, poll_interval: float
    ) -> None:
        # Events a store's subscription has already read come without a suspension in between,
        # so pushing them with send_nowait hands a whole read to the folder at once and an
        # empty stream really means the subscription is waiting for the store.
        subscription = self.store.subscribe(after=after, poll_interval=poll_interval)
        try:
            async with send:
                async for recorded in subscription:
                    try:
                        send.send_nowait(recorded)
                    except anyio.WouldBlock:
                        await send.send(recorded)
        finally:
            aclose = getattr(subscription, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    def _apply(self, page: list[RecordedEvent]) -> None:
        if page[0].position <= self._folded:
            # A subscription behind a catch_up that ran meanwhile: those are folded already.
            page = [recorded for recorded in page if recorded.position > self._folded]
            if not page:
                return
        last = page[-1].position
        # A row whose checksum fails is parked even if this projection would skip its type:
        # the type itself may be what was damaged, and listings should name every parked run.
        damaged = [recorded for recorded in page if recorded.damage is not None]
        if damaged:
            for recorded in damaged:
                self._park(
                    ParkedStream(
                        recorded.stream_id,
                        recorded.version,
                        recorded.position,
                        recorded.damage or "",
                    )
                )
            page = [recorded for recorded in page if recorded.damage is None]
        fold_around_damage(self._folder.fold, page, self._park)
        self._folded = last

    def _park(self, where: ParkedStream) -> None:
        if where.stream_id not in self._parked:  # the first damaged event of a stream stands
            self._parked[where.stream_id] = where
            self._parked_dirty.add(where.stream_id)

    def _flush(self) -> None:
        # Touched rows stay thawed across pages and are frozen here, once per save_every
        # events (or per live batch), which is most of what makes folding a page cheap.
        if self._folded != self._position:
            self._dirty |= self._folder.flush()
            self._position = self._folded
            self._notify()

    async def _reload(self) -> None:
        checkpoint = await self.store.load_checkpoint(self.name)
        decode = self.projection.decode_row
        rows: dict[str, R] = {}
        parked: dict[str, ParkedStream] = {}
        for key, data in checkpoint.rows.items():
            try:
                if key.startswith(PARKED_KEY_PREFIX):
                    parked[key.removeprefix(PARKED_KEY_PREFIX)] = ParkedStream.decode(data)
                else:
                    rows[key] = decode(data)
            except Exception as exc:
                raise RowDecodeError(self.name, key, f"{type(exc).__name__}: {exc}") from exc
        # The same dict object, so views handed out by ``rows`` stay live.
        self._folder.discard()
        self._rows.clear()
        self._rows.update(rows)
        self._folded = self._position = self._saved_position = checkpoint.position
        self._dirty = set()
        self._parked = parked
        self._parked_dirty = set()
        self._reset_pending = False
        self._notify()

    def _notify(self) -> None:
        if self._advanced is not None:
            self._advanced.set()
            self._advanced = None

    def _check_open(self) -> None:
        if not self._open:
            raise RunnerClosedError(
                f"the runner of {self.name!r} is not open; use 'async with ProjectionRunner(...)'"
            )
