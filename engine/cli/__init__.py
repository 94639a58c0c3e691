"""The ``agentledger`` command line (``python -m agentledger.engine`` runs it too).

Exit statuses: 0 ok, 1 not found (a run, the database, a user's ledger) or divergent (a
replay), 2 usage (a bad option or value, an ambiguous run id prefix).
"""

from ._main import main

__all__ = ["main"]
