"""Policies: budgets (caps per surface) and the critic (code checks, then an LLM judge)."""
