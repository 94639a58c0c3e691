"""``agentledger conversation ID``: a conversation's runs in order, with their tasks and answers.

A conversation is a projection: its stream lists the runs that joined it, and each run's own
stream says where it stands. ``runs --conversation ID`` lists the same runs in the runs table.
"""

from __future__ import annotations

import argparse
from typing import Any

from agentledger.engine._conversations import conversation_view
from agentledger.projections._conversation import ConversationRun

from ._errors import NotFoundError
from ._output import Output
from ._runs import status_text
from ._store import open_store

_CLIP = 60
"""Characters of a task or answer shown in the table (``--json`` has them whole)."""


def _clip(value: str | None) -> str:
    if value is None:
        return "-"
    flat = " ".join(value.split())
    return flat if len(flat) <= _CLIP else flat[: _CLIP - 1] + "…"


def _json(run: ConversationRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "follows": run.follows,
        "status": run.status,
        "task": run.task,
        "output": run.output,
    }


async def command(options: argparse.Namespace, out: Output) -> int:
    """``conversation``: one conversation's runs, oldest first, as a table or ``--json``."""
    async with open_store(options.db) as store:
        convo = await conversation_view(store, options.conversation_id)
    if convo is None:
        raise NotFoundError(f"no conversation {options.conversation_id!r} in this log")
    if options.json:
        out.json({"conversation_id": convo.conversation_id, "runs": [_json(r) for r in convo.runs]})
        return 0
    cells = [
        (n, r.run_id, status_text(r.status), _clip(r.task), _clip(r.output))
        for n, r in enumerate(convo.runs, 1)
    ]
    out.table(["#", "run", "status", "task", "answer"], cells, right=(0,), styles=("", "cyan"))
    return 0
