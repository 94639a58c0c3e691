"""What each OpenAI-compatible server accepts: one ``WireProfile`` per server family.

The chat completions format is shared, but servers differ in small ways that break runs: a field
one honours and another ignores, a value one accepts and another answers with HTTP 500. A profile
names those differences; ``OpenAIChatModel`` builds every request body through its profile.

What each profile says, and where it comes from (recorded bodies are in
``tests/fixtures/wire/``; the rest was read in the servers' source, named in ``docs/models.md``):

- ``openai``: the reference. A tool-call-only assistant turn carries ``"content": null``; the
  output limit is ``max_completion_tokens``; every ``tool_choice``; ``response_format``
  ``json_schema`` with ``strict`` when the schema meets strict mode's rules; at most 4 stop
  sequences.
- ``vllm``: accepts ``null`` content and honours ``max_completion_tokens`` (``max_tokens`` is
  deprecated there); every ``tool_choice`` (``auto`` needs the server's
  ``--enable-auto-tool-choice``); ``json_schema`` through guided decoding, ``strict`` ignored.
- ``llama.cpp`` (llama-cpp-python's ``llama_cpp.server``, as recorded): HTTP 500 on ``null``
  *and* on a missing content, ``""`` accepted; ``max_completion_tokens`` ignored, ``max_tokens``
  honoured; with the ``chatml-function-calling`` format, a request *without* ``tool_choice``
  offers the model no tools at all, so ``"auto"`` is sent explicitly; ``"required"`` is not
  implemented (an assertion, so a 500), so it is sent as the tool's name when the agent has
  one tool and refused at build otherwise; ``response_format`` knows only ``json_object`` with
  a ``schema``. A *streamed* request with ``"auto"`` breaks when the model picks a tool: the
  server answers 200 and ends the stream with no event (it raised "Automatic streaming tool
  choice is not supported"), so such requests are made without streaming.
- ``ollama``: ``null`` content is accepted but drops the calls' ids, ``""`` keeps them;
  ``max_tokens`` only (read into ``num_predict``); ``tool_choice`` is not read at all, so
  ``"none"`` is done by not offering the tools and forcing a call is refused at build;
  ``json_schema`` (its ``schema`` becomes Ollama's ``format``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from agentledger.engine._errors import AgentConfigError

from ._model import OutputSchema, Sampling, ToolChoice

ServerName: TypeAlias = Literal["openai", "vllm", "llama.cpp", "ollama"]


@dataclass(frozen=True, slots=True)
class WireProfile:
    """How one OpenAI-compatible server wants a chat completions request.

    ``tool_turn_content``: what an assistant turn made only of tool calls carries as
    ``content`` (``"null"`` or ``"empty"``, the empty string). ``max_tokens_field``: the
    output-limit field the server honours. ``explicit_auto``: send ``"tool_choice": "auto"``
    when tools are offered (otherwise left to the server's default). ``forcing``: how the
    server forces tool calls: ``"native"`` (``"required"`` and a named tool work),
    ``"named_only"`` (only a named tool), ``"ignored"`` (``tool_choice`` is not read).
    ``response_format``: ``"json_schema"`` (OpenAI's shape) or ``"json_object_schema"``
    (``{"type": "json_object", "schema": ...}``). ``strict``: send ``"strict": true`` when the
    schema allows it. ``max_stop``: how many stop sequences the server takes (``None``: any).
    ``streams_auto_tools``: whether the server can stream a reply to a request that lets the
    model choose a tool (``tool_choice`` ``"auto"`` with tools); if not, ``stream`` makes such a
    request whole and hands the reply out at once (no output cut-off for it).
    """

    name: str
    tool_turn_content: Literal["null", "empty"] = "null"
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    explicit_auto: bool = False
    forcing: Literal["native", "named_only", "ignored"] = "native"
    response_format: Literal["json_schema", "json_object_schema"] = "json_schema"
    strict: bool = False
    max_stop: int | None = None
    streams_auto_tools: bool = True

    def check_settings(
        self, tool_choice: ToolChoice, sampling: Sampling, tool_names: Sequence[str]
    ) -> None:
        """Raise ``AgentConfigError`` for a setting this server cannot honour."""
        if self.max_stop is not None and len(sampling.stop) > self.max_stop:
            raise AgentConfigError(
                f"the {self.name} server takes at most {self.max_stop} stop sequences, "
                f"not {len(sampling.stop)}"
            )
        if tool_choice in ("auto", "none"):
            return
        if self.forcing == "ignored":
            raise AgentConfigError(
                f"the {self.name} server ignores tool_choice, so tool_choice={tool_choice!r} "
                "cannot be enforced; use 'auto' or 'none'"
            )
        if self.forcing == "named_only" and tool_choice == "required" and len(tool_names) != 1:
            raise AgentConfigError(
                f"the {self.name} server cannot force a call among {len(tool_names)} tools "
                "(tool_choice='required'); name one tool or use 'auto'"
            )

    def tool_fields(
        self, tool_choice: ToolChoice, tools: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The ``tools`` and ``tool_choice`` fields of a body offering ``tools``."""
        if not tools:
            # OpenAI rejects a tool_choice without tools, and an empty "tools" array.
            return {}
        if tool_choice == "none" and self.forcing == "ignored":
            return {}  # the only way to keep the model from calling a tool there
        fields: dict[str, Any] = {"tools": list(tools)}
        if tool_choice == "auto":
            if self.explicit_auto:
                fields["tool_choice"] = "auto"
            return fields
        if self.forcing == "ignored":
            return fields  # refused at Agent build; a direct caller gets the server's default
        if tool_choice == "required" and self.forcing == "named_only" and len(tools) == 1:
            tool_choice = tools[0]["function"]["name"]
        fields["tool_choice"] = openai_tool_choice(tool_choice)
        return fields

    def output_field(self, output: OutputSchema) -> dict[str, Any]:
        """The ``response_format`` asking for a final answer that follows ``output``."""
        if self.response_format == "json_object_schema":
            return {"type": "json_object", "schema": output.schema}
        spec: dict[str, Any] = {"name": output.name, "schema": output.schema}
        if self.strict and strict_compatible(output.schema):
            spec["strict"] = True
        return {"type": "json_schema", "json_schema": spec}


def openai_tool_choice(tool_choice: ToolChoice) -> str | dict[str, Any]:
    """``tool_choice`` in the chat completions format: a mode, or the tool a call must use."""
    if tool_choice in ("auto", "required", "none"):
        return tool_choice
    return {"type": "function", "function": {"name": tool_choice}}


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict structured output takes ``schema`` as it is.

    Strict mode requires, of every object, ``additionalProperties: false`` and every property
    listed in ``required`` (an optional field is a required one that may be null). A schema
    from a pydantic model meets that only with ``extra="forbid"`` and no defaults, so most get
    plain (non-strict) ``json_schema``, which the engine validates itself anyway.
    """
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, dict):
        if schema.get("additionalProperties") is not False:
            return False
        names = set(properties) if isinstance(properties, dict) else set()
        if set(schema.get("required", ())) != names:
            return False
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            # Maps of names to schemas: the names are data (a field may be called "type").
            children = list(value.values()) if isinstance(value, dict) else []
        elif key in ("required", "enum", "const", "default", "examples"):
            continue
        else:
            children = [value]
        if not all(strict_compatible(child) for child in children):
            return False
    return True


WIRE_PROFILES: Mapping[str, WireProfile] = {
    "openai": WireProfile("openai", strict=True, max_stop=4),
    "vllm": WireProfile("vllm"),
    "llama.cpp": WireProfile(
        "llama.cpp",
        tool_turn_content="empty",
        max_tokens_field="max_tokens",
        explicit_auto=True,
        forcing="named_only",
        response_format="json_object_schema",
        streams_auto_tools=False,
    ),
    "ollama": WireProfile(
        "ollama", tool_turn_content="empty", max_tokens_field="max_tokens", forcing="ignored"
    ),
}
"""The built-in profiles by server name."""


def wire_profile(server: str | WireProfile) -> WireProfile:
    """The profile named ``server`` (or ``server`` itself); ``ValueError`` for an unknown name."""
    if isinstance(server, WireProfile):
        return server
    try:
        return WIRE_PROFILES[server]
    except KeyError:
        known = ", ".join(repr(name) for name in WIRE_PROFILES)
        raise ValueError(
            f"unknown server {server!r}: use one of {known} or a WireProfile"
        ) from None
