"""``gen_ai.provider.name`` for a model name: the log records model names, not providers."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

ProviderOf = Callable[[str], str | None]
"""A model name -> its ``gen_ai.provider.name``, or ``None`` when unknown (the attribute is
then left out rather than guessed)."""

# genai-prices provider ids -> the well-known values of gen_ai.provider.name; any other id
# is used as it is (the conventions allow values of one's own).
_WELL_KNOWN = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "x-ai": "x_ai",
    "groq": "groq",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
}


@lru_cache(maxsize=256)
def default_provider(model: str) -> str | None:
    """The provider whose models match ``model`` in the price table shipped with
    ``genai-prices`` (``"gpt-4o"`` -> ``"openai"``), or ``None``."""
    # Imported here: the bundled table takes a noticeable time to load.
    from genai_prices import data_snapshot

    try:
        provider, _ = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
    except LookupError:
        return None
    return _WELL_KNOWN.get(provider.id, provider.id)
