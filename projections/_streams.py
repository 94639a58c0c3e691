"""Stream names: where each kind of fact lives in the store.

A run's events go to ``run-<run id>``; the budget ledger of a user's day to
``budget-<user>-<day>``; the intents and outcomes of one idempotency key to ``idem-<key>``; the
runs of a conversation, in order, to ``conversation-<id>``.
Projections tell streams apart by these prefixes, so the names are defined once, here.
"""

from __future__ import annotations

from datetime import date

RUN_PREFIX = "run-"
DAY_PREFIX = "budget-"
KEY_PREFIX = "idem-"
CONVERSATION_PREFIX = "conversation-"


def run_stream(run_id: str) -> str:
    """The stream id of a run."""
    return f"{RUN_PREFIX}{run_id}"


def day_stream(user_id: str, day: date) -> str:
    """The id of the stream that holds ``user_id``'s budget ledger for ``day``."""
    return f"{DAY_PREFIX}{user_id}-{day.isoformat()}"


def key_stream(key: str) -> str:
    """The stream id of an idempotency key's ledger."""
    return f"{KEY_PREFIX}{key}"


def is_run_stream(stream_id: str) -> bool:
    """Whether ``stream_id`` is a run's stream."""
    return stream_id.startswith(RUN_PREFIX)


def conversation_stream(conversation_id: str) -> str:
    """The stream id of a conversation: its runs' ``ConversationJoined`` events, in order."""
    return f"{CONVERSATION_PREFIX}{conversation_id}"
