"""``Agent``: what a run is made of (models, prompt, tools, limits), as plain configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, Generic

from typing_extensions import TypeVar

from agentledger.engine._errors import AgentConfigError
from agentledger.engine.models._http import HttpModel
from agentledger.engine.models._model import Model, OutputSchema, Sampling, ToolChoice, ToolSpec
from agentledger.engine.models._pricing import Price, resolve_price
from agentledger.engine.policies._critic import Critic
from agentledger.engine.policies._output import StructuredOutput
from agentledger.engine.tools._tools import Tool
from agentledger.projections._memory_view import MemoryPolicy

DEGRADED_TOOL_INSTRUCTION = (
    'If a tool result has "status": "degraded", that tool is unavailable for the rest of this '
    "run: do not call it again; answer with what you have and say what is missing."
)
"""Added to the system prompt of every agent with tools (pattern 4)."""

OutputT = TypeVar("OutputT", default=str, covariant=True)
"""What a run of an agent answers: ``str``, or the agent's ``output_type``."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing model call is retried before the next model in the chain is tried.

    Delays grow ``base_delay * multiplier ** (attempt - 1)`` up to ``max_delay``; a provider's
    ``Retry-After`` replaces the computed delay (still capped by ``max_retry_after``; a longer
    wait moves on to the fallback model instead).
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if _not_int(self.max_attempts) or self.max_attempts < 1:
            raise AgentConfigError("RetryPolicy.max_attempts must be an int of at least 1")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            _check_seconds(f"RetryPolicy.{name}", getattr(self, name), allow_zero=True)
        if not _finite(self.multiplier) or self.multiplier < 1:
            raise AgentConfigError("RetryPolicy.multiplier must be a finite number of at least 1")

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to stop retrying."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return float(min(self.base_delay * self.multiplier ** (attempt - 1), self.max_delay))


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a tool tier is skipped: after ``threshold`` failures in a row, for ``cooldown``."""

    threshold: int = 3
    cooldown: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        if _not_int(self.threshold) or self.threshold < 1:
            raise AgentConfigError("BreakerPolicy.threshold must be an int of at least 1")
        if not isinstance(self.cooldown, timedelta) or self.cooldown < timedelta(0):
            raise AgentConfigError("BreakerPolicy.cooldown must be a non-negative timedelta")


@dataclass(frozen=True, kw_only=True)
class Agent(Generic[OutputT]):
    """An agent: a model chain, a system prompt, tools and the limits of one run.

    ``name`` identifies the agent in the log; an ``Engine`` resumes a run with the agent of that
    name it was given, so keep names stable across deployments.

    With ``output_type`` (a pydantic model class) the agent is an ``Agent[M]``: its final answer
    must be JSON of that type, and ``engine.run`` returns a ``RunResult[M]`` whose ``value`` is
    the validated instance (see ``docs/structured-output.md``).
    """

    name: str
    model: Model
    fallback_models: Sequence[Model] = ()
    system_prompt: str = ""
    output_type: type[OutputT] | None = None
    """The type the final answer is validated into (structured output); ``None``: plain text."""
    output_revisions: int = 2
    """How many times an answer that is not a valid ``output_type`` is sent back to the model;
    the next invalid answer fails the run (``invalid_output``)."""
    tools: Sequence[Tool[Any]] = ()
    max_turns: int = 10
    max_tokens: int = 1024
    model_timeout: float = 60.0
    """Seconds one model attempt may take, in all: the one bound of an attempt. An HTTP
    client's own ``timeout`` then bounds only connecting (it bounds whole requests only when
    the client is used outside an engine)."""
    tool_timeout: float = 30.0
    """Seconds one tier of a tool call may take, unless the tool sets its own ``timeout``."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    prices: Mapping[str, Price] = field(default_factory=dict)
    """Prices by model name, overriding a model's own ``price`` and the bundled price table."""
    memory: MemoryPolicy | None = None
    """Bounded memory: compact old tool results past a token threshold (pattern 2)."""
    summary_model: Model | None = None
    """The model that writes memory summaries (default: ``model``)."""
    critic: Critic | None = None
    """Checks every answer before it is returned (pattern 6)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Temperature, top_p, stop sequences and seed of the agent's model calls (unset: the
    server's defaults). Each client maps them to its wire format; a setting a model of the
    chain cannot honour (a seed on Anthropic) is refused here."""
    tool_choice: ToolChoice = "auto"
    """Whether the model may (``"auto"``), must (``"required"``) or must not (``"none"``) call
    a tool, or the name of the one tool it must call. A forcing choice (``"required"``, a name)
    holds until a tool result follows the last user message; the next call is ``"auto"``, so
    the model can answer with the results (a revision forces again)."""
    _price_table: dict[str, Price] = field(init=False, repr=False, compare=False)
    _output: StructuredOutput | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name:
            raise AgentConfigError("Agent.name must be a non-empty string without NUL characters")
        for name in ("max_turns", "max_tokens"):
            value = getattr(self, name)
            if _not_int(value) or value < 1:
                raise AgentConfigError(f"Agent.{name} must be an int of at least 1, not {value!r}")
        if _not_int(self.output_revisions) or self.output_revisions < 0:
            given = self.output_revisions
            raise AgentConfigError(f"Agent.output_revisions must be an int >= 0, not {given!r}")
        _check_seconds("Agent.model_timeout", self.model_timeout, allow_zero=False)
        _check_seconds("Agent.tool_timeout", self.tool_timeout, allow_zero=False)
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AgentConfigError(
                f"Agent {self.name!r} has several tools named {', '.join(dupes)}"
            )
        output = None if self.output_type is None else StructuredOutput.of(self.output_type)
        if output is not None and output.name in names:  # Anthropic offers it as a tool too
            raise AgentConfigError(
                f"Agent {self.name!r} has a tool named {output.name!r}, the name of its output type"
            )
        object.__setattr__(self, "_output", output)
        self._check_settings(names)
        # Every model the agent may call is priced now: an unknown price is an error at build
        # time, never a silent zero at run time.
        models = [*self.models, self.summary_model or self.model]
        if self.critic is not None and self.critic.judge is not None:
            models.append(self.critic.judge.model)
        table = {
            m.name: resolve_price(
                m.name,
                overrides=self.prices,
                model_price=getattr(m, "price", None),
                provider=getattr(m, "provider", None),
            )
            for m in models
        }
        object.__setattr__(self, "_price_table", table)

    def _check_settings(self, tool_names: list[str]) -> None:
        """``sampling`` and ``tool_choice`` make sense, and every model of the chain takes them."""
        _check_sampling(self.sampling)
        choice = self.tool_choice
        if not isinstance(choice, str) or not choice:
            raise AgentConfigError(f"Agent.tool_choice must be a non-empty string, not {choice!r}")
        if choice not in ("auto", "none", "required") and choice not in tool_names:
            raise AgentConfigError(
                f"Agent.tool_choice {choice!r} names no tool of agent {self.name!r}"
            )
        if choice == "required" and not tool_names:
            raise AgentConfigError(
                f"Agent.tool_choice 'required' but agent {self.name!r} has no tools"
            )
        for model in self.models:
            if isinstance(model, HttpModel):
                model.check_settings(choice, self.sampling, tuple(tool_names))

    def price_of(self, model: Model) -> Price:
        """The price the agent charges ``model``'s calls at."""
        return self._price_table[model.name]

    @cached_property
    def models(self) -> tuple[Model, ...]:
        """The model chain: the primary model, then the fallbacks in order."""
        return (self.model, *self.fallback_models)

    @cached_property
    def tools_by_name(self) -> dict[str, Tool[Any]]:
        """The agent's tools by name."""
        return {t.name: t for t in self.tools}

    @cached_property
    def tool_specs(self) -> tuple[ToolSpec, ...]:
        """The tools as models are shown them (their JSON schemas are built once)."""
        return tuple(t.spec() for t in self.tools)

    @property
    def structured(self) -> StructuredOutput | None:
        """The agent's output type, built (``None`` without ``output_type``)."""
        return self._output

    @property
    def output_schema(self) -> OutputSchema | None:
        """The schema every agent-purpose request carries (``None`` without ``output_type``)."""
        return None if self._output is None else self._output.schema

    def output_value(self, text: str) -> OutputT:
        """``text`` (a run's output, e.g. ``RunCompleted.output``) as the agent's answer type:
        validated into ``output_type`` (``InvalidOutputError`` if it is not valid), or the text
        itself for an agent without one."""
        if self._output is None:
            return text  # type: ignore[return-value]  # OutputT is str without output_type
        value: OutputT = self._output.value(text)
        return value

    def full_system_prompt(self) -> str:
        """The system prompt as sent, with the degraded-tool instruction when there are tools
        and the answer's form when there is an ``output_type``."""
        parts = [self.system_prompt] if self.system_prompt else []
        if self.tools:
            parts.append(DEGRADED_TOOL_INSTRUCTION)
        if self._output is not None:
            parts.append(self._output.instruction())
        return "\n\n".join(parts)


_INT64 = 2**63


def _check_sampling(sampling: object) -> None:
    """A ``Sampling`` whose values every OpenAI-compatible server and Anthropic can take."""
    if not isinstance(sampling, Sampling):
        raise AgentConfigError(f"Agent.sampling must be a Sampling, not {type(sampling).__name__}")
    temperature, top_p, seed = sampling.temperature, sampling.top_p, sampling.seed
    if temperature is not None and (not _finite(temperature) or not 0 <= temperature <= 2):
        raise AgentConfigError(f"Sampling.temperature must be from 0 to 2, not {temperature!r}")
    if top_p is not None and (not _finite(top_p) or not 0 < top_p <= 1):
        raise AgentConfigError(f"Sampling.top_p must be above 0 and at most 1, not {top_p!r}")
    if not isinstance(sampling.stop, tuple) or not all(
        isinstance(stop, str) and stop for stop in sampling.stop
    ):
        raise AgentConfigError(
            f"Sampling.stop must be a tuple of non-empty strings, not {sampling.stop!r}"
        )
    if seed is not None and (_not_int(seed) or not -_INT64 <= seed < _INT64):
        raise AgentConfigError(f"Sampling.seed must be a 64-bit int, not {seed!r}")


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    """A duration in seconds: a finite number, positive (or zero when ``allow_zero``)."""
    if not _finite(value) or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        least = "non-negative" if allow_zero else "positive"
        raise AgentConfigError(f"{name} must be a finite, {least} number of seconds, not {value!r}")
