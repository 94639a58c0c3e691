"""Model clients: the ``Model`` port, OpenAI-compatible and Anthropic clients, pricing."""
