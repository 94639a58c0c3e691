"""Structured output: an agent's final answer validated into a type (``Agent(output_type=M)``).

``StructuredOutput`` is built once per agent from the type: the JSON schema the model is sent
(``OutputSchema``, under a provider-safe name) and the pydantic ``TypeAdapter`` that checks the
answer. Checking is pure code on the answer's text, so the same text gives the same verdict in a
live run, a resumed one and a replay. The leniency is deliberately small: surrounding
whitespace and one Markdown ```json fence are tolerated, nothing else (no "first brace to last
brace" guessing), so a recorded output always validates the same way again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agentledger.engine._errors import AgentConfigError, EngineError
from agentledger.engine.models._model import OutputSchema
from agentledger.events import CheckResult

OUTPUT_CHECK_NAME = "output_type"
"""The name of the check an answer's validation against ``output_type`` is recorded as."""

MAX_LISTED_ISSUES = 10
"""At most this many validation errors are spelled out (the rest are counted in one line)."""

_FENCE = re.compile(r"\A```(?:json)?[ \t]*\r?\n(?P<body>.*?)\r?\n?```\Z", re.DOTALL | re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_NAME = 64
"""OpenAI's and Anthropic's limit on a function (tool) name, whose alphabet the name keeps to."""

_REVISION_PROMPT = (
    "Your answer is not valid output. Reply with only a JSON object that follows the {name} "
    "schema, with every issue below fixed:"
)
INSTRUCTION = (
    "Give your final answer as a JSON object that follows the {name} schema, and nothing else."
)
"""Added to the system prompt of an agent with an ``output_type``: a server that ignores the
request's schema still learns that the answer must be JSON."""


class InvalidOutputError(EngineError, ValueError):
    """Raised when a text does not validate as an agent's ``output_type``; ``issues`` holds one
    ``path: message`` line per error."""

    def __init__(self, type_name: str, issues: Sequence[str]) -> None:
        self.issues = tuple(issues)
        super().__init__(f"the answer is not a valid {type_name}: " + "; ".join(self.issues))


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """What checking an answer gave: the JSON text (fence and whitespace removed) and its value,
    or the issues that make it invalid."""

    json: str
    value: Any = None
    issues: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        """Whether the answer validated."""
        return not self.issues


@dataclass(frozen=True, slots=True, eq=False)
class StructuredOutput:
    """An agent's output type: the schema models are sent and the validation answers get."""

    output_type: Any
    schema: OutputSchema
    adapter: TypeAdapter[Any]

    @classmethod
    def of(cls, output_type: Any) -> StructuredOutput:
        """Build from a pydantic model class (or a dataclass or TypedDict: any type whose JSON
        schema is an object). Raises ``AgentConfigError`` for anything else."""
        if output_type is None or isinstance(output_type, str | bytes | int | float | bool):
            raise AgentConfigError(
                f"Agent.output_type must be a type such as a pydantic BaseModel, not "
                f"{output_type!r}"
            )
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(output_type)
            schema = adapter.json_schema()
        except Exception as exc:  # pydantic raises several kinds for a type it cannot handle
            raise AgentConfigError(
                f"Agent.output_type {output_type!r} has no JSON schema: "
                f"{type(exc).__name__}: {_first_line(str(exc))}"
            ) from None
        rooted = _object_root(schema)
        if rooted is None:
            raise AgentConfigError(
                f"Agent.output_type {output_type!r} must describe a JSON object (a BaseModel, "
                "dataclass or TypedDict; wrap a list or a scalar in a model): providers accept "
                "only an object schema as structured output"
            )
        return cls(output_type, OutputSchema(name=schema_name(output_type), schema=rooted), adapter)

    @property
    def name(self) -> str:
        """The schema's name, as models are sent it."""
        return self.schema.name

    def instruction(self) -> str:
        """The system prompt's line about the answer's form."""
        return INSTRUCTION.format(name=self.name)

    def check(self, answer: str) -> OutputCheck:
        """Validate ``answer``: one ```json fence and surrounding whitespace are tolerated."""
        text = answer.strip()
        fenced = _FENCE.match(text)
        if fenced is not None:
            text = fenced.group("body").strip()
        try:
            value = self.adapter.validate_json(text)
        except ValidationError as exc:
            return OutputCheck(text, issues=_issues(exc))
        return OutputCheck(text, value=value)

    def value(self, answer: str) -> Any:
        """The value of a valid ``answer``; ``InvalidOutputError`` for an invalid one."""
        checked = self.check(answer)
        if not checked.valid:
            raise InvalidOutputError(self.name, checked.issues)
        return checked.value

    def check_result(self, checked: OutputCheck) -> CheckResult:
        """The check as a critic verdict records it."""
        if checked.valid:
            return CheckResult(name=OUTPUT_CHECK_NAME, passed=True)
        return CheckResult(
            name=OUTPUT_CHECK_NAME,
            passed=False,
            issue=f"not a valid {self.name}: " + "; ".join(checked.issues),
        )

    def revision_message(self, issues: Sequence[str]) -> str:
        """The user message sending an invalid answer back, one issue per line."""
        listed = "\n".join(f"{i}. {issue}" for i, issue in enumerate(issues, start=1))
        return f"{_REVISION_PROMPT.format(name=self.name)}\n{listed}"


def schema_name(output_type: Any) -> str:
    """A provider-safe name for ``output_type``: its class name with anything outside
    ``[A-Za-z0-9_-]`` replaced by ``_``, at most 64 characters (``"output"`` if none is left)."""
    raw = getattr(output_type, "__name__", None)
    if not isinstance(raw, str):
        raw = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", repr(output_type))  # drop module paths
    name = _UNSAFE.sub("_", raw).strip("_")[:_MAX_NAME]
    return name or "output"


def _object_root(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` with an object at its root, or ``None``. A recursive model's schema is a bare
    ``$ref`` into ``$defs``; its definition is lifted to the root (the definition stays, for the
    references inside it)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
        if not isinstance(target, dict):
            return None
        lifted = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **lifted}
    return schema if schema.get("type") == "object" else None


def _issues(error: ValidationError) -> tuple[str, ...]:
    """One line per error, ``path: message`` (``(root)`` for the whole answer)."""
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"{path}: {_first_line(item['msg'])}")
    if len(lines) > MAX_LISTED_ISSUES:
        rest = len(lines) - MAX_LISTED_ISSUES
        lines = [*lines[:MAX_LISTED_ISSUES], f"... and {rest} more error(s)"]
    return tuple(lines)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
