"""The critic's parts built from plain data (JSON, TOML, a surface's settings), for
``Critic.from_config``.

The data is validated by private pydantic models (unknown fields refused, scalars strict so
``"800"`` is no length); user callables and judge models cannot be data, so they are passed in
and referenced by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from agentledger.engine.models._model import Model

from ._checks import (
    BannedPhrases,
    Check,
    Citations,
    CriticConfigError,
    JsonSchema,
    LLMJudge,
    MaxLength,
    RequiredKeywords,
    UserCheck,
)


class _Config(BaseModel):
    # Not strict as a whole, so tuples pass for lists; scalars are Strict* so "800" is no int.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _CitationsConfig(_Config):
    type: Literal["citations"]
    pattern: StrictStr = r"\[\d+\]"
    min_count: StrictInt = 1
    name: StrictStr = "citations"

    def build(self, callables: Mapping[str, Callable[[str], str | None]]) -> Check:
        return Citations(self.pattern, self.min_count, name=self.name)


class _MaxLengthConfig(_Config):
    type: Literal["max_length"]
    chars: StrictInt | None = None
    words: StrictInt | None = None
    name: StrictStr = "max_length"

    def build(self, callables: Mapping[str, Callable[[str], str | None]]) -> Check:
        return MaxLength(self.chars, self.words, name=self.name)


class _BannedPhrasesConfig(_Config):
    type: Literal["banned_phrases"]
    phrases: list[StrictStr]
    case_sensitive: StrictBool = False
    name: StrictStr = "banned_phrases"

    def build(self, callables: Mapping[str, Callable[[str], str | None]]) -> Check:
        return BannedPhrases(self.phrases, self.case_sensitive, name=self.name)


class _RequiredKeywordsConfig(_Config):
    type: Literal["required_keywords"]
    keywords: list[StrictStr]
    case_sensitive: StrictBool = False
    name: StrictStr = "required_keywords"

    def build(self, callables: Mapping[str, Callable[[str], str | None]]) -> Check:
        return RequiredKeywords(self.keywords, self.case_sensitive, name=self.name)


class _JsonSchemaConfig(_Config):
    type: Literal["json_schema"]
    # "schema" would shadow a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] = Field(alias="schema")
    name: StrictStr = "json_schema"

    def build(self, callables: Mapping[str, Callable[[str], str | None]]) -> Check:
        return JsonSchema(self.json_schema, name=self.name)


class _CallableConfig(_Config):
    type: Literal["callable"]
    name: StrictStr

    def build(self, callables: Mapping[str, Callable[[str], str | None]]) -> Check:
        if self.name not in callables:
            known = ", ".join(sorted(callables)) or "none were given"
            raise ValueError(f"no callable named {self.name!r} was given (known: {known})")
        return UserCheck(self.name, callables[self.name])


_CheckConfig = (
    _CitationsConfig
    | _MaxLengthConfig
    | _BannedPhrasesConfig
    | _RequiredKeywordsConfig
    | _JsonSchemaConfig
    | _CallableConfig
)

_CHECK_TYPES: dict[str, type[_CheckConfig]] = {
    "citations": _CitationsConfig,
    "max_length": _MaxLengthConfig,
    "banned_phrases": _BannedPhrasesConfig,
    "required_keywords": _RequiredKeywordsConfig,
    "json_schema": _JsonSchemaConfig,
    "callable": _CallableConfig,
}


class _JudgeConfig(_Config):
    model: StrictStr
    criteria: StrictStr
    max_tokens: StrictInt = 256
    temperature: StrictFloat | None = 0.0


class _CriticConfig(_Config):
    # Checks and judge are validated one by one below, so one bad check hides no other problem.
    max_revisions: StrictInt = Field(default=2, ge=0)
    checks: list[Any] = Field(default_factory=list)
    judge: Any = None


def _problems(exc: ValidationError, prefix: str = "") -> list[str]:
    found = []
    for error in exc.errors(include_url=False):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        where = (prefix + where).lstrip(".") or "the configuration"
        found.append(f"{where}: {error['msg']}")
    return found


def build_critic_parts(
    config: Mapping[str, Any],
    callables: Mapping[str, Callable[[str], str | None]],
    models: Mapping[str, Model],
) -> tuple[tuple[Check, ...], LLMJudge | None, int]:
    """The checks, judge and revision limit ``config`` describes; ``CriticConfigError`` listing
    every problem found."""
    if not isinstance(config, Mapping):
        raise CriticConfigError([f"expected a mapping, got {type(config).__name__}"])
    try:
        parsed = _CriticConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise CriticConfigError(_problems(exc)) from None
    problems: list[str] = []
    checks = [
        check
        for index, item in enumerate(parsed.checks)
        if (check := _build_check(f"checks[{index}]", item, callables, problems)) is not None
    ]
    judge = None if parsed.judge is None else _build_judge(parsed.judge, models, problems)
    if problems:
        raise CriticConfigError(problems)
    return tuple(checks), judge, parsed.max_revisions


def _build_check(
    where: str,
    item: object,
    callables: Mapping[str, Callable[[str], str | None]],
    problems: list[str],
) -> Check | None:
    known = ", ".join(_CHECK_TYPES)
    if not isinstance(item, Mapping):
        problems.append(f"{where}: expected an object with a type ({known})")
        return None
    kind = item.get("type")
    config_type = _CHECK_TYPES.get(kind) if isinstance(kind, str) else None
    if config_type is None:
        got = "no type" if kind is None else f"the unknown type {kind!r}"
        problems.append(f"{where}: {got}; a check's type is one of {known}")
        return None
    where = f"{where} ({kind})"
    try:
        return config_type.model_validate(dict(item)).build(callables)
    except ValidationError as exc:
        problems.extend(_problems(exc, where))
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
    return None


def _build_judge(item: object, models: Mapping[str, Model], problems: list[str]) -> LLMJudge | None:
    try:
        spec = _JudgeConfig.model_validate(item)
    except ValidationError as exc:
        problems.extend(_problems(exc, "judge"))
        return None
    if spec.model not in models:
        known = ", ".join(sorted(models)) or "none were given"
        problems.append(f"judge: no model named {spec.model!r} was given (known: {known})")
        return None
    try:
        return LLMJudge(models[spec.model], spec.criteria, spec.max_tokens, spec.temperature)
    except ValueError as exc:
        problems.append(f"judge: {exc}")
        return None
