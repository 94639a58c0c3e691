"""How a new run joins a conversation: which run it follows, the history it is sent, and the
append that makes it the conversation's next run (see ``agentledger.projections._conversation``).

Everything a run takes from other streams is decided here, once, before the run exists, and
recorded in it (``RunStarted.conversation_id``/``follows`` and ``ConversationContinued``): a
resumed run and a replay read none of it again. The reads here are checks a caller gets a clear
error from; what makes a join safe against a race is the conversation's expected version on the
append that writes the run's first events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agentledger.events import (
    ConversationContinued,
    ConversationJoined,
    EventStore,
    Exchange,
    NewEvent,
    StreamAppend,
)
from agentledger.projections._conversation import (
    Conversation,
    ConversationRun,
    ConversationState,
    carry_history,
    fold_conversation,
)
from agentledger.projections._memory_view import MemoryPolicy
from agentledger.projections._run_state import RunState, fold_run
from agentledger.projections._streams import conversation_stream, run_stream

from ._errors import ConversationBusyError, ConversationConflictError, ConversationNotFoundError
from .loop._ports import IdSource


@dataclass(frozen=True, slots=True)
class Continuation:
    """Where a new run goes in a conversation, as the store stood when it was asked."""

    conversation_id: str
    follows: RunState | None
    """The run it continues (``None``: it opens the conversation)."""
    members_before: tuple[str, ...]
    """Runs to record as joined before it: the followed run, when the conversation starts
    with a run that had none."""
    expected_version: int
    """The conversation stream's version the join expects."""
    policy: MemoryPolicy | None
    max_bytes: int | None = None
    """How much history a run may carry without a memory policy (JSON bytes)."""

    @property
    def follows_id(self) -> str | None:
        """The id of the run it continues."""
        return self.follows.run_id if self.follows is not None else None

    def continued(self, run_id: str, at: datetime) -> ConversationContinued | None:
        """The history the run starts from (``None`` for the conversation's first run)."""
        followed = self.follows
        if followed is None:
            return None
        assert followed.started is not None
        exchange = None
        if followed.output:
            exchange = Exchange(
                run_id=followed.run_id, task=followed.started.task, answer=followed.output
            )
        history = carry_history(
            followed.conversation, exchange, self.policy, max_bytes=self.max_bytes
        )
        return ConversationContinued(
            run_id=run_id,
            span_id=run_id,
            at=at,
            conversation_id=self.conversation_id,
            follows=followed.run_id,
            follows_version=followed.version,
            summary=history.summary,
            exchanges=history.exchanges,
            summarised_runs=history.summarised_runs,
        )

    def join(self, run_id: str, at: datetime, ids: IdSource) -> StreamAppend:
        """The append to the conversation's stream that makes ``run_id`` its next run; it goes
        with the run's first write, so it fails (a ``ConcurrencyError`` on the conversation's
        stream) if another run joined first."""
        joined = [
            ConversationJoined(
                run_id=member, span_id=member, at=at, conversation_id=self.conversation_id
            )
            for member in self.members_before
        ]
        joined.append(
            ConversationJoined(
                run_id=run_id,
                span_id=run_id,
                at=at,
                conversation_id=self.conversation_id,
                follows=self.follows_id,
            )
        )
        return StreamAppend(
            conversation_stream(self.conversation_id),
            [NewEvent(event, ids.new_id()) for event in joined],
            expected_version=self.expected_version,
        )


async def read_conversation(store: EventStore, conversation_id: str) -> ConversationState:
    """The conversation's stream, folded."""
    return fold_conversation(
        conversation_id, await store.read_stream(conversation_stream(conversation_id))
    )


async def read_last_join(store: EventStore, conversation_id: str) -> ConversationState:
    """The conversation's stream as far as a new run needs it: its last join and its version.

    Only the newest event is read, so starting the 200th run of a conversation reads what
    starting the second did. A join that lands between the two reads is read too (and the
    version is its own); one that lands after them fails the new run's append (its expected
    version), as it would after a whole read.
    """
    stream = conversation_stream(conversation_id)
    version = await store.stream_version(stream)
    if version == 0:
        return ConversationState(conversation_id)
    return fold_conversation(conversation_id, await store.read_stream(stream, after=version - 1))


async def conversation_view(store: EventStore, conversation_id: str) -> Conversation | None:
    """The conversation's runs in order, each as its own stream says it stands (``None``: no
    run joined ``conversation_id``)."""
    state = await read_conversation(store, conversation_id)
    if not state.joined:
        return None
    runs = []
    for joined in state.joined:
        run = fold_run(await store.read_stream(run_stream(joined.run_id)))
        runs.append(
            ConversationRun(
                run_id=joined.run_id,
                follows=joined.follows,
                status=run.status,
                task=run.started.task if run.started is not None else "",
                output=run.output,
            )
        )
    return Conversation(conversation_id, tuple(runs), state.version)


async def continuation(
    store: EventStore,
    *,
    conversation_id: str | None,
    follows: str | None,
    policy: MemoryPolicy | None,
    max_bytes: int | None = None,
) -> Continuation:
    """Where a new run goes: in ``conversation_id`` after its last run, or after ``follows``
    (in its conversation; for a run of none, in one that starts with it and is named after it).

    Raises ``ConversationNotFoundError`` for a ``follows`` that names no run,
    ``ConversationConflictError`` when ``follows`` is not the conversation's last run or is of
    another conversation, and ``ConversationBusyError`` when the run to continue has not ended.
    """
    followed: RunState | None = None
    if follows is not None:
        followed = await _load(store, follows)
        assert followed.started is not None
        # A run of no conversation starts one named after it, so two runs continuing it race
        # for one stream (and it never ends up in two conversations).
        own = followed.started.conversation_id or follows
        if conversation_id is None:
            conversation_id = own
        elif own != conversation_id:
            raise ConversationConflictError(
                f"run {follows!r} belongs to conversation {own!r}, not {conversation_id!r}"
            )
    assert conversation_id is not None
    state = await read_last_join(store, conversation_id)
    last = state.last_run_id
    members: tuple[str, ...] = ()
    if last is None:
        if followed is not None:
            assert followed.started is not None
            if followed.started.conversation_id is not None:
                # Its conversation's stream lost it (its first write never committed the join).
                raise ConversationConflictError(
                    f"run {follows!r} is not a run of conversation {conversation_id!r}"
                )
            members = (followed.run_id,)
    elif follows is not None and follows != last:
        raise ConversationConflictError(
            f"run {follows!r} is not the last run of conversation {conversation_id!r}: "
            f"{last!r} is; continue that one"
        )
    elif followed is None:
        followed = await _load(store, last)
    if followed is not None and not followed.is_terminal:
        raise ConversationBusyError(
            f"run {followed.run_id!r} of conversation {conversation_id!r} has not ended "
            f"({followed.status}); continue the conversation once it has"
        )
    return Continuation(conversation_id, followed, members, state.version, policy, max_bytes)


async def _load(store: EventStore, run_id: str) -> RunState:
    state = fold_run(await store.read_stream(run_stream(run_id)))
    if state.started is None:
        raise ConversationNotFoundError(f"no run {run_id!r} to follow in the store")
    return state
