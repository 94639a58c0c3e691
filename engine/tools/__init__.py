"""Tools: the ``tool`` decorator and tiers, argument validation, schemas and idempotency keys."""
