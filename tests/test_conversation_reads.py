"""What a new run of a long conversation reads: the conversation's last join, not every join.

The docs promise that a run of a conversation reads only the run it follows, never the whole
conversation, so a run's start costs the same at the 200th run as at the second
(``benchmarks/conversations.py`` measures it). A store that counts what it hands out shows it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from agentledger.engine import Agent, Engine, MemoryPolicy
from agentledger.engine.testing import ScriptedModel, reply
from agentledger.events import RecordedEvent, SqliteEventStore
from agentledger.projections._streams import conversation_stream


class CountingStore(SqliteEventStore):
    """A SQLite store that counts the events each stream read returned, per stream."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read: Counter[str] = Counter()

    async def read_stream(
        self, stream_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        events = await super().read_stream(stream_id, after=after, limit=limit)
        self.read[stream_id] += len(events)
        return events


async def test_a_new_run_reads_the_conversations_last_join_only(tmp_path: Path) -> None:
    model = ScriptedModel(lambda request: reply("Noted."))
    policy = MemoryPolicy(max_tokens=2000, compact_at=1500)
    agent = Agent(name="chat", model=model, memory=policy)
    joins = conversation_stream("c1")
    async with CountingStore(tmp_path / "c.db") as store, Engine(store) as engine:
        reads = []
        for n in range(1, 31):
            before = store.read[joins]
            result = await engine.run(agent, f"Message {n}.", conversation_id="c1")
            assert result.status == "completed"
            reads.append(store.read[joins] - before)
        assert len((await engine.conversation("c1")).runs) == 30
    # The first run finds no join; every later one reads the last join only (a join racing in
    # between could add one), however many runs joined before it.
    assert reads[0] == 0
    assert max(reads[1:]) <= 2, reads
