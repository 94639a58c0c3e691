"""The service's structured answer: what the agent's final reply must be."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TravelAnswer(BaseModel):
    """A travel desk's answer: the text for the user and the facts behind it."""

    reply: str = Field(description="The answer to show the user.")
    city: str = Field(description="The city the answer is about.")
    temperature_c: int = Field(description="Today's temperature there, in °C.")
    umbrella: bool = Field(description="Whether to pack an umbrella.")
