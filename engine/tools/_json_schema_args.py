"""Argument models for tools whose contract is a JSON schema, not a pydantic model (MCP tools).

The engine validates a call's arguments with ``tool.args_model.model_validate`` and shows the
model ``tool.spec()``, built from the model's JSON schema. For a tool described by a JSON schema,
translating the schema into pydantic fields would lose what pydantic cannot express
(``oneOf``, ``patternProperties``, ``if``/``then``, ...) and say "valid" for what the server then
refuses. So the model built here keeps the arguments as they came (``extra="allow"``: the JSON
object is the model's data, dumped back unchanged) and checks them with a real JSON-schema
validator (the ``jsonschema`` package, which the ``mcp`` extra brings) against the schema
itself; every violation becomes one pydantic error with its path, so a rejection reaches the
model as the usual ``ToolArgumentsRejected`` with one issue per problem. The schema the model is
shown is the tool's own schema.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

_MAX_MESSAGE = 300
"""A violation's message repeats the offending value; a huge one is cut (the model has it)."""


class JsonSchemaArguments(BaseModel):
    """The base of argument models made by ``json_schema_model``: a JSON object checked
    against a JSON schema, kept and dumped as it came."""

    model_config = ConfigDict(extra="allow", frozen=True)


def json_schema_model(name: str, schema: Mapping[str, Any]) -> type[JsonSchemaArguments]:
    """An argument model that accepts exactly the JSON objects ``schema`` accepts.

    The dialect is the schema's ``$schema``, else JSON Schema 2020-12 (MCP's default); string
    ``format``s are checked where ``jsonschema`` can. Violations are pydantic errors of kind
    ``missing`` (a required property, located at that property) or ``json_schema_<keyword>``
    (``json_schema_type``, ``json_schema_minimum``, ...). The model's JSON schema is ``schema``.

    Raises ``ValueError`` for a schema that is not a valid JSON schema, and ``ImportError`` when
    ``jsonschema`` is not installed.
    """
    # jsonschema ships no type hints (types-jsonschema would be a dependency for three names).
    import jsonschema  # type: ignore[import-untyped]
    import jsonschema.exceptions  # type: ignore[import-untyped]
    import jsonschema.validators  # type: ignore[import-untyped]

    owned: dict[str, Any] = copy.deepcopy(dict(schema))
    validator_class = jsonschema.validators.validator_for(
        owned, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(owned)
    except jsonschema.exceptions.SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from exc
    validator = validator_class(owned, format_checker=validator_class.FORMAT_CHECKER)

    class Model(JsonSchemaArguments):
        model_config = ConfigDict(json_schema_extra=_shown(owned))

        @model_validator(mode="before")
        @classmethod
        def _check_json_schema(cls, data: Any) -> Any:
            problems = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
            if problems:
                raise ValidationError.from_exception_data(
                    cls.__name__, [_error_details(problem) for problem in problems]
                )
            return data

    Model.__name__ = Model.__qualname__ = name
    return Model


def _shown(schema: dict[str, Any]) -> Any:
    def shown_schema(target: dict[str, Any], cls: type[BaseModel]) -> None:
        # Pydantic's schema of an all-extras model is empty; the contract is the tool's schema.
        target.clear()
        target.update(copy.deepcopy(schema))

    return shown_schema


def _error_details(problem: Any) -> InitErrorDetails:
    location: tuple[str | int, ...] = tuple(problem.absolute_path)
    keyword = str(problem.validator)
    message = str(problem.message)
    if keyword == "required" and isinstance(problem.instance, dict):
        missing = [
            name
            for name in problem.validator_value
            if name not in problem.instance and message.startswith(repr(name))
        ]
        if missing:
            return InitErrorDetails(
                type=PydanticCustomError("missing", "Field required"),
                loc=(*location, missing[0]),
                input=problem.instance,
            )
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return InitErrorDetails(
        type=PydanticCustomError(f"json_schema_{keyword}", message),
        loc=location,
        input=problem.instance,
    )
