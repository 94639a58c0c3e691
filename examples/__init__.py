"""Runnable examples of agentledger (``python -m examples.<name>`` from the repository root)."""
