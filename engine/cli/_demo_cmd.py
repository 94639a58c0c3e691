"""``agentledger demo``: the demo's command lives with the demo agent (``_demo``)."""

from ._demo import command

__all__ = ["command"]
