"""Run histories: export runs from one store as a JSON-lines file, import them into any other.

A history file is UTF-8 JSON lines. The first line is the header::

    {"agentledger_history": 1, "exported_at": "2026-03-01T12:00:00Z", "runs": ["r1", ...],
     "events": 42}

``agentledger_history`` is the format version (this module writes and reads 1), ``runs`` the
run ids the file holds and ``events`` how many event lines follow (a cut-off file is refused).
Then one line per event, oldest first (in the global order of the store it came from)::

    {"stream_id": "run-r1", "version": 3, "position": 17, "event_id": "e-17",
     "recorded_at": "...", "type": "model_call_requested", "schema_version": 1, "event": {...}}

the envelope of the event as it was recorded and, under ``event``, its fields in the shape of
``schema_version``. This module writes every event in the current shape of this program's
catalog; a file written by an older program carries older schema versions, and the import
lifts them through the codec's upcasters, exactly as a store reads its own old rows.

**What a run's history holds.** The run's own stream ``run-<id>`` whole, plus the entries the
run wrote in the ledgers it shares with other runs: its reservations, settlements and releases
in the user's day ledgers (``budget-<user>-<day>``) and its intents and outcomes in the ledgers
of its idempotency keys (``idem-<key>``). Other runs' entries in those ledgers are left out: a
day ledger holds all of a user's runs of that day, and importing it would charge spend of runs
that are not in the file to the target store. ``ExportReport.ledger_events_left_out`` counts the
entries left out that precede the run's last event: a run whose decisions read them (a user's
day cap reached by other runs, a result reused from another run) replays differently in a store
that lacks them, so export those runs together (all of a user's runs: ``RunFilter(user_id=...)``).

A run of a conversation takes its join of the conversation's stream (``conversation-<id>``)
along, like a ledger entry: export a conversation's runs together and the target lists the
conversation and can continue it. Replaying a run needs none of that: the history it was sent
is recorded in its own stream (``ConversationContinued``).

**Import** appends every event again with its event id, in the file's order, so a run's stream
gets exactly its versions and ledger entries keep their order relative to the run's events
(which replay relies on). It is idempotent by event id: an event already in the store with the
same stream and content is counted and skipped, so a second import adds nothing and an import
cut short is finished by importing again; an id present with other content, or a run whose
stream already holds other events, is a ``HistoryConflictError``. Ledger entries go after
whatever the target's ledgers already hold (their versions there may differ from the file's).
The whole file is read and checked before anything is written: a ``HistoryFormatError`` leaves
the store untouched. ``recorded_at`` is informational; the target store records its own commit
time (the event's own ``at`` is kept, it is part of the event).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import anyio
import orjson

from agentledger.events import (
    EVENT_TYPES,
    DecodeError,
    DuplicateEventError,
    Event,
    EventCodec,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    default_codec,
    event_line,
    utc_now,
)
from agentledger.events import ConcurrencyError as _StoreConcurrencyError
from agentledger.projections._run_filter import RunFilter, find_runs
from agentledger.projections._streams import (
    CONVERSATION_PREFIX,
    DAY_PREFIX,
    KEY_PREFIX,
    RUN_PREFIX,
    conversation_stream,
    day_stream,
    key_stream,
    run_stream,
)

from ._divergence import ReplayError

FORMAT_VERSION = 1
"""The history format version this program writes and reads."""

_HEADER_KEY = "agentledger_history"
_CHUNK = 500  # events per append transaction on import
_LEDGER_TYPES = frozenset({"budget_reserved", "budget_settled", "budget_released"})
_MAX_ID = 1000  # longest id or tag a history line may carry


class HistoryError(ReplayError):
    """Raised for any failure to export or import a run history (the root of these errors)."""


class HistoryFormatError(HistoryError):
    """Raised when a file is not a run history, or one of its lines is not a valid line of one.

    ``line`` is the 1-based line number. The message says what is wrong, never what the line
    holds (it may be large, secret, or not text at all).
    """

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line} of the history: {reason}")


class HistoryConflictError(HistoryError):
    """Raised when an import meets the store holding something else under the file's ids: an
    event id with other content, or a run id whose stream holds other events."""


class HistoryRunNotFoundError(HistoryError):
    """Raised when a run asked to be exported has no events in the store."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in this store")


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What ``export_history`` wrote."""

    runs: list[str]
    """The runs exported, in the order asked."""
    events: int
    """Event lines written (after the header)."""
    streams: int
    """Distinct streams they belong to: the runs' streams and the ledgers they wrote in."""
    ledger_events_left_out: int
    """Other runs' entries in those ledgers, older than an exported run's last event, that the
    file does not hold (see the module docs: a replay elsewhere reads the ledgers without them)."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``import_history`` did."""

    runs: list[str]
    """The runs the file holds (from its header)."""
    events_imported: int
    """Events appended to the store."""
    events_already_there: int
    """Events the store held already, with the same content (skipped)."""


# -- export ------------------------------------------------------------------------------------


async def export_history(
    store: EventStore,
    runs: Sequence[str] | RunFilter,
    out: IO[bytes] | str | os.PathLike[str],
    *,
    clock: Callable[[], datetime] = utc_now,
) -> ExportReport:
    """Write the history of ``runs`` (run ids, or a ``RunFilter`` over the store's runs, oldest
    first; see the module docs) to ``out``: a binary file object, or a path, which is created or
    overwritten once every event has been read.

    Raises ``HistoryRunNotFoundError`` for a run the store does not hold; a ``DecodeError`` of
    the store for an event it cannot read (nothing is written to a path then).
    """
    if isinstance(runs, RunFilter):
        run_ids = [row.run_id for row in await find_runs(store, runs)]
    else:
        run_ids = list(dict.fromkeys(runs))
    events, left_out = await _collect(store, run_ids)
    header = {
        _HEADER_KEY: FORMAT_VERSION,
        "exported_at": clock(),
        "runs": run_ids,
        "events": len(events),
    }
    data = b"".join([orjson.dumps(header) + b"\n", *map(event_line, events)])
    if isinstance(out, str | os.PathLike):
        await anyio.Path(out).write_bytes(data)
    else:
        out.write(data)
        out.flush()
    return ExportReport(run_ids, len(events), len({r.stream_id for r in events}), left_out)


async def _collect(store: EventStore, runs: list[str]) -> tuple[list[RecordedEvent], int]:
    """The events of ``runs``' histories in global order, and how many ledger entries of other
    runs, older than an exported run's end, were left out."""
    wanted = set(runs)
    by_position: dict[int, RecordedEvent] = {}
    ledgers: dict[str, int] = {}  # ledger stream -> position of the last event of its runs
    for run_id in runs:
        own = await store.read_stream(run_stream(run_id))
        if not own:
            raise HistoryRunNotFoundError(run_id)
        end = own[-1].position
        for recorded in own:
            by_position[recorded.position] = recorded
            for stream in _ledgers_of(recorded):
                ledgers[stream] = max(ledgers.get(stream, 0), end)
    left_out = 0
    for stream, end in ledgers.items():
        for recorded in await store.read_stream(stream):
            if recorded.event.run_id in wanted:
                by_position[recorded.position] = recorded
            elif recorded.position < end:
                left_out += 1
    return [by_position[p] for p in sorted(by_position)], left_out


def _ledgers_of(recorded: RecordedEvent) -> Iterator[str]:
    """The ledger streams a run's event says the run wrote in."""
    if recorded.type in _LEDGER_TYPES:
        event: Any = recorded.event
        yield day_stream(event.user_id, event.day)
    elif recorded.type == "run_started":
        conversation = getattr(recorded.event, "conversation_id", None)
        if conversation:
            yield conversation_stream(conversation)
    elif recorded.type.startswith("tool_"):
        key = getattr(recorded.event, "idempotency_key", None)
        if key:
            yield key_stream(key)


# -- import ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    """One checked event line of a history file."""

    number: int
    stream_id: str
    version: int
    event_id: str
    event: Event


async def import_history(
    store: EventStore,
    source: IO[bytes] | str | os.PathLike[str],
    *,
    codec: EventCodec = default_codec,
) -> ImportReport:
    """Append the events of the history in ``source`` (a binary file object or a path) to
    ``store``, keeping their event ids; see the module docs for what is kept and what not.

    ``codec`` decodes the file's events (register upcasters there for old schema versions).
    Raises ``HistoryFormatError`` (nothing written) for a file that is not a valid history and
    ``HistoryConflictError`` when the store holds other content under the file's ids.
    """
    if isinstance(source, str | os.PathLike):
        source = io.BytesIO(await anyio.Path(source).read_bytes())
    runs, checked = _read(source, codec)
    imported = already = 0
    for start in range(0, len(checked), _CHUNK):
        added, there = await _import_chunk(store, checked[start : start + _CHUNK])
        imported += added
        already += there
    return ImportReport(runs, imported, already)


def _read(lines: Iterable[bytes], codec: EventCodec) -> tuple[list[str], list[_Line]]:
    """Parse and check a whole history: its runs and its event lines, typed.

    Raises ``HistoryFormatError`` naming the first line that is wrong.
    """
    iterator = iter(lines)
    header = _header(next(iterator, b""))
    runs: list[str] = header["runs"]
    wanted = set(runs)
    checked: list[_Line] = []
    heads: dict[str, int] = {}  # run stream -> last version seen
    last_position = 0
    number = 1
    for number, raw in enumerate(iterator, start=2):
        if not raw.strip():
            raise HistoryFormatError(number, "empty line")
        line, position = _event_line(number, raw, codec)
        if position <= last_position:
            raise HistoryFormatError(number, "positions must increase from line to line")
        last_position = position
        _check_membership(line, wanted, heads)
        checked.append(line)
    if len(checked) != header["events"]:
        raise HistoryFormatError(
            number,
            f"the header announces {header['events']} events, the file holds {len(checked)} "
            "(cut off?)",
        )
    empty = [run_id for run_id in wanted if run_stream(run_id) not in heads]
    if empty:
        raise HistoryFormatError(1, f"the header names {len(empty)} run(s) with no events")
    return runs, checked


def _header(raw: bytes) -> dict[str, Any]:
    not_history = "not an agentledger history (the first line is not a history header)"
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HistoryFormatError(1, not_history) from None
    if not isinstance(header, dict) or _HEADER_KEY not in header:
        raise HistoryFormatError(1, not_history)
    version = header[_HEADER_KEY]
    if not _is_int(version) or version < 1:
        raise HistoryFormatError(1, f"{_HEADER_KEY!r} must be a positive integer")
    if version > FORMAT_VERSION:
        raise HistoryFormatError(
            1, f"history format {version} is newer than this program reads ({FORMAT_VERSION})"
        )
    runs = header.get("runs")
    if not isinstance(runs, list) or not all(_is_id(r) for r in runs):
        raise HistoryFormatError(1, "'runs' must be a list of run ids")
    if not _is_int(header.get("events")) or header["events"] < 0:
        raise HistoryFormatError(1, "'events' must be a count of event lines")
    return header


def _event_line(number: int, raw: bytes, codec: EventCodec) -> tuple[_Line, int]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HistoryFormatError(number, f"invalid JSON at byte {exc.pos}") from None
    if not isinstance(obj, dict):
        raise HistoryFormatError(number, "an event line must be a JSON object")
    for name in ("stream_id", "event_id", "type"):
        if not _is_id(obj.get(name)):
            raise HistoryFormatError(number, f"{name!r} must be a non-empty string")
    for name in ("version", "position", "schema_version"):
        if not _is_int(obj.get(name)) or obj[name] < 1:
            raise HistoryFormatError(number, f"{name!r} must be a positive integer")
    if not isinstance(obj.get("event"), dict):
        raise HistoryFormatError(number, "'event' must be a JSON object")
    stream_id, version, event_type = obj["stream_id"], obj["version"], obj["type"]
    if event_type not in EVENT_TYPES:
        raise HistoryFormatError(number, "unknown event type (not in this program's catalog)")
    try:
        event = codec.decode(
            event_type, obj["schema_version"], orjson.dumps(obj["event"]), stream_id, version
        )
    except DecodeError as exc:
        # The codec's messages name the stream, version and field, never the bytes.
        raise HistoryFormatError(number, str(exc)) from None
    return _Line(number, stream_id, version, obj["event_id"], event), obj["position"]


def _check_membership(line: _Line, runs: set[str], heads: dict[str, int]) -> None:
    """An event must belong to a run of the header, in its stream or one of the ledgers; a run's
    stream must come whole, from version 1 without gaps."""
    if line.event.run_id not in runs:
        raise HistoryFormatError(line.number, "the event belongs to a run not in the header")
    stream = line.stream_id
    if stream.startswith(RUN_PREFIX):
        if stream != run_stream(line.event.run_id):
            raise HistoryFormatError(line.number, "the event is in another run's stream")
        expected = heads.get(stream, 0) + 1
        if line.version != expected:
            raise HistoryFormatError(
                line.number, f"version {line.version} of its run's stream, expected {expected}"
            )
        heads[stream] = line.version
    elif not stream.startswith((DAY_PREFIX, KEY_PREFIX, CONVERSATION_PREFIX)):
        raise HistoryFormatError(line.number, "the stream is neither a run's nor a ledger")


async def _import_chunk(store: EventStore, lines: list[_Line]) -> tuple[int, int]:
    """Append what of ``lines`` the store lacks in one transaction; (appended, already there).

    The chunk is first appended whole: the store refuses it as a duplicate when it holds any of
    its ids (judging ids before versions), and only then is each event looked up and compared.
    A concurrent import of the same file may append some of them in between: the chunk is
    looked at again.
    """
    missing = lines
    while True:
        try:
            await store.append(*_appends(missing))
        except DuplicateEventError:
            missing = [line for line in lines if not await _already_there(store, line)]
            if not missing:
                return 0, len(lines)
            continue
        except _StoreConcurrencyError as exc:
            raise HistoryConflictError(
                f"stream {exc.stream_id!r} in this store is at version {exc.actual}, the history "
                f"continues it from version {exc.expected}: the store holds another run with "
                "this id"
            ) from None
        return len(missing), len(lines) - len(missing)


async def _already_there(store: EventStore, line: _Line) -> bool:
    found = await store.get_event(line.event_id)
    if found is None:
        return False
    same_place = found.stream_id == line.stream_id and (
        found.version == line.version or not line.stream_id.startswith(RUN_PREFIX)
    )
    if not same_place or found.event != line.event:
        raise HistoryConflictError(
            f"line {line.number} of the history: event id {line.event_id!r} is already in "
            f"this store with other content ({found.stream_id!r}@{found.version})"
        )
    return True


def _appends(lines: list[_Line]) -> list[StreamAppend]:
    """Consecutive events of one stream as one ``StreamAppend``, in the file's order; a run's
    stream is appended at the file's versions, a ledger wherever it stands."""
    appends: list[StreamAppend] = []
    group: list[_Line] = []
    for line in lines:
        if group and not _continues(group[-1], line):
            appends.append(_append(group))
            group = []
        group.append(line)
    if group:
        appends.append(_append(group))
    return appends


def _continues(last: _Line, line: _Line) -> bool:
    if last.stream_id != line.stream_id:
        return False
    # A run's events skipped as already there leave a gap the next append must not close.
    return line.version == last.version + 1 or not line.stream_id.startswith(RUN_PREFIX)


def _append(group: list[_Line]) -> StreamAppend:
    first = group[0]
    expected = first.version - 1 if first.stream_id.startswith(RUN_PREFIX) else None
    return StreamAppend(
        first.stream_id, [NewEvent(line.event, line.event_id) for line in group], expected
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID and "\x00" not in value


__all__ = [
    "FORMAT_VERSION",
    "ExportReport",
    "HistoryConflictError",
    "HistoryError",
    "HistoryFormatError",
    "HistoryRunNotFoundError",
    "ImportReport",
    "export_history",
    "import_history",
]
