"""Tool declaration, boundary validation, model-facing results and idempotency keys."""

from __future__ import annotations

import json
import random
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, RootModel

from agentledger.engine.tools._tool_keys import canonical_arguments, idempotency_key
from agentledger.engine.tools._tool_validation import (
    MAX_ARGUMENT_DEPTH,
    RejectedCall,
    ValidCall,
    validate_call,
)
from agentledger.engine.tools._tools import (
    Reconciled,
    Tool,
    ToolContext,
    to_json_value,
    tool,
    tools_by_name,
)
from agentledger.events import FieldIssue, ToolCall
from agentledger.projections._tool_results import (
    tool_result_degraded,
    tool_result_denied,
    tool_result_error,
    tool_result_ok,
    tool_result_pending_confirmation,
    tool_result_unknown_outcome,
)

# -- argument models (module level: annotations are resolved against module globals) ----------


class Address(BaseModel):
    street: str
    title: str = Field(description="a property that happens to be called title")


class SendEmail(BaseModel):
    to: str
    subject: str
    request_id: str = ""
    sent_at: str = ""


class Item(BaseModel):
    sku: str
    quantity: int = Field(ge=1)


class Order(BaseModel):
    """An order."""

    items: list[Item]
    ship_to: Address
    note: str | None = None


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Tree(BaseModel):
    root: Node


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    request_id: str = Field(default="", alias="requestId")
    amount: int


class NoArgs(BaseModel):
    pass


class Payload(BaseModel):
    data: Any = None


class Other(BaseModel):
    x: int


class Listy(RootModel[list[int]]):
    pass


CTX = ToolContext(run_id="run-1", call_id="call-1", user_id="user-1")


@tool(side_effect=True, volatile=("request_id", "sent_at"), key_scope="user")
async def send_email(args: SendEmail, ctx: ToolContext) -> dict[str, str]:
    """Send an email.

    Only to addresses the user gave.
    """
    return {"sent_to": args.to, "tier": ctx.tier}


@send_email.tier("backup_smtp")
async def send_email_backup(args: SendEmail, ctx: ToolContext) -> dict[str, str]:
    return {"sent_to": args.to, "tier": ctx.tier}


@send_email.reconciler
async def check_sent(args: SendEmail, ctx: ToolContext) -> Reconciled:
    return Reconciled.done({"sent_to": args.to, "found": True})


@tool
async def place_order(args: Order, ctx: ToolContext) -> Order:
    """Place an order."""
    return args


@tool(name="ping", description="Check the service is up.", max_argument_bytes=64)
async def ping_impl(args: NoArgs, ctx: ToolContext) -> str:
    return "pong"


@tool
async def store_payload(args: Payload, ctx: ToolContext) -> Any:
    """Store anything."""
    return args.data


TOOLS = tools_by_name([send_email, place_order, ping_impl, store_payload])


def call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id="call-1", name=name, arguments=arguments)


def rejected(name: str, arguments: str) -> RejectedCall:
    outcome = validate_call(TOOLS, call(name, arguments))
    assert isinstance(outcome, RejectedCall), outcome
    return outcome


# -- declaration ------------------------------------------------------------------------------


def test_declared_tool_exposes_its_options_and_chain() -> None:
    assert send_email.name == "send_email"
    assert send_email.description == "Send an email.\n\nOnly to addresses the user gave."
    assert send_email.args_model is SendEmail
    assert send_email.side_effect and not send_email.confirm and not send_email.retry_safe
    assert send_email.volatile == ("request_id", "sent_at")
    assert send_email.key_scope == "user"
    assert send_email.max_argument_bytes == 64 * 1024
    assert send_email.tiers == (
        ("primary", send_email.tiers[0][1]),
        ("backup_smtp", send_email_backup),
    )
    assert send_email.tier_names == ("primary", "backup_smtp")
    assert send_email.has_reconciler
    # the registration decorators hand the function back unchanged
    assert check_sent.__name__ == "check_sent"
    assert ping_impl.name == "ping" and ping_impl.description == "Check the service is up."


def test_tool_is_frozen() -> None:
    with pytest.raises(AttributeError):
        send_email.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del send_email.confirm


async def _ok(args: SendEmail, ctx: ToolContext) -> None:
    """Doc."""


def _sync(args: SendEmail, ctx: ToolContext) -> None:
    """Doc."""


async def _first_not_model(args: dict[str, Any], ctx: ToolContext) -> None:
    """Doc."""


async def _first_unannotated(args, ctx: ToolContext) -> None:  # type: ignore[no-untyped-def]
    """Doc."""


async def _second_not_context(args: SendEmail, ctx: str) -> None:
    """Doc."""


async def _three_params(args: SendEmail, ctx: ToolContext, extra: int) -> None:
    """Doc."""


async def _root_model(args: Listy, ctx: ToolContext) -> None:
    """Doc."""


async def _no_doc(args: SendEmail, ctx: ToolContext) -> None:
    pass


async def _other_model(args: Other, ctx: ToolContext) -> None:
    """Doc."""


async def _aliased(args: Aliased, ctx: ToolContext) -> None:
    """Doc."""


@pytest.mark.parametrize(
    ("fn", "options", "message"),
    [
        (_sync, {}, "must be an async def"),
        (_first_not_model, {}, "BaseModel subclass"),
        (_first_unannotated, {}, "BaseModel subclass"),
        (_second_not_context, {}, "annotated with ToolContext"),
        (_three_params, {}, "exactly (args"),
        (_root_model, {}, "RootModel"),
        (_no_doc, {}, "docstring or description"),
        (_ok, {"name": "send email"}, "tool name must match"),
        (_ok, {"name": "x" * 65}, "tool name must match"),
        (_ok, {"side_effect": True, "volatile": ("nope",)}, "volatile fields ['nope']"),
        (_ok, {"side_effect": True, "volatile": "request_id"}, "not one string"),
        (_ok, {"side_effect": True, "volatile": ("to", "to")}, "twice"),
        (_ok, {"volatile": ("request_id",)}, "only apply to side_effect=True"),
        (_ok, {"retry_safe": True}, "only apply to side_effect=True"),
        (_ok, {"retention": timedelta(days=1)}, "only apply to side_effect=True"),
        (_ok, {"key_scope": "user"}, "only apply to side_effect=True"),
        (_ok, {"side_effect": True, "key_scope": "tenant"}, "key_scope must be"),
        (_ok, {"side_effect": True, "retention": timedelta(0)}, "retention must be a positive"),
        (_ok, {"timeout": 0}, "timeout must be a positive"),
        (_ok, {"max_argument_bytes": 0}, "max_argument_bytes"),
        (_ok, {"max_argument_bytes": True}, "max_argument_bytes"),
        (_ok, {"preview": lambda args: "x"}, "set confirm=True"),
    ],
)
def test_declaration_mistakes_raise_type_error(
    fn: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=_escape(message)):
        tool(**options)(fn)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_model_local_to_the_declaring_function_is_found() -> None:
    class Local(BaseModel):
        x: int

    async def local_tool(args: Local, ctx: ToolContext) -> None:
        """Doc."""

    declared = tool(side_effect=True)(local_tool)
    assert declared.args_model is Local

    @declared.tier("backup")
    async def local_backup(args: Local, ctx: ToolContext) -> None:
        pass

    assert declared.tier_names == ("primary", "backup")


def _made_elsewhere() -> Any:
    class Hidden(BaseModel):
        x: int

    async def hidden_tool(args: Hidden, ctx: ToolContext) -> None:
        """Doc."""

    return hidden_tool


def test_a_model_no_scope_can_see_is_a_clear_error() -> None:
    # declared outside the function that holds ``Hidden``: nothing can resolve the annotation
    with pytest.raises(TypeError, match="declare the argument model at module level"):
        tool(_made_elsewhere())


def test_tier_mistakes_raise_type_error() -> None:
    t = tool(side_effect=True)(_ok)
    with pytest.raises(TypeError, match="already has a tier named 'primary'"):
        t.tier("primary")
    t.tier("backup")(_ok)
    with pytest.raises(TypeError, match="already has a tier named 'backup'"):
        t.tier("backup")
    with pytest.raises(TypeError, match="non-empty name"):
        t.tier(" ")
    with pytest.raises(TypeError, match="must be an async def"):
        t.tier("sync")(_sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes Other; the tool takes SendEmail"):
        t.tier("other")(_other_model)  # type: ignore[arg-type]
    early, late = t.tier("twice"), t.tier("twice")
    early(_ok)
    with pytest.raises(TypeError, match="already has a tier named 'twice'"):
        late(_ok)
    assert t.tier_names == ("primary", "backup", "twice")


def test_reconciler_mistakes_raise_type_error() -> None:
    async def reconcile(args: SendEmail, ctx: ToolContext) -> Reconciled:
        return Reconciled.unknown()

    read_only = tool(_ok)
    with pytest.raises(TypeError, match="only side_effect=True tools can be in doubt"):
        read_only.reconciler(reconcile)
    writer = tool(side_effect=True)(_ok)
    writer.reconciler(reconcile)
    with pytest.raises(TypeError, match="already has a reconciler"):
        writer.reconciler(reconcile)


def test_volatile_field_given_by_python_name_is_stripped_under_its_alias() -> None:
    t = tool(side_effect=True, volatile=("request_id",))(_aliased)
    assert t.volatile == ("requestId",)
    outcome = validate_call(
        tools_by_name([t]),
        ToolCall(id="c", name="_aliased", arguments='{"requestId":"r","amount":3}'),
    )
    assert isinstance(outcome, ValidCall)
    assert outcome.arguments == {"requestId": "r", "amount": 3}
    a = t.idempotency_key(outcome.arguments, run_id="r", user_id="u")
    b = t.idempotency_key({"requestId": "other", "amount": 3}, run_id="r", user_id="u")
    assert a == b


def test_tools_by_name_refuses_two_tools_with_one_name() -> None:
    with pytest.raises(ValueError, match="two tools are named 'send_email'"):
        tools_by_name([send_email, send_email])


# -- spec -------------------------------------------------------------------------------------


def test_spec_is_the_argument_schema_without_titles_and_with_refs_inlined() -> None:
    spec = place_order.spec()
    assert spec.name == "place_order"
    assert spec.description == "Place an order."
    assert spec.parameters == {
        "type": "object",
        "description": "An order.",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "quantity": {"type": "integer", "minimum": 1},
                    },
                    "required": ["sku", "quantity"],
                },
            },
            "ship_to": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "title": {
                        "type": "string",
                        "description": "a property that happens to be called title",
                    },
                },
                "required": ["street", "title"],
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["items", "ship_to"],
    }
    assert "$defs" not in json.dumps(spec.parameters)


def test_spec_keeps_defs_only_for_recursive_models() -> None:
    async def grow(args: Tree, ctx: ToolContext) -> None:
        """Grow a tree."""

    parameters = tool(grow).spec().parameters
    node = {
        "type": "object",
        "properties": {
            "value": {"type": "integer"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "default": []},
        },
        "required": ["value"],
    }
    assert parameters == {
        "type": "object",
        "properties": {"root": node},
        "required": ["root"],
        "$defs": {"Node": node},
    }


def test_spec_of_a_tool_without_arguments() -> None:
    assert ping_impl.spec().parameters == {"type": "object", "properties": {}}


# -- validation -------------------------------------------------------------------------------


def test_a_valid_call_carries_typed_args_and_canonical_arguments() -> None:
    raw = '{"items":[{"sku":"A1","quantity":2.0}],"ship_to":{"street":"Main","title":"Dr"}}'
    outcome = validate_call(TOOLS, call("place_order", raw))
    assert isinstance(outcome, ValidCall)
    assert outcome.tool is place_order
    assert outcome.args == Order(
        items=[Item(sku="A1", quantity=2)], ship_to=Address(street="Main", title="Dr")
    )
    assert outcome.arguments == {
        "items": [{"sku": "A1", "quantity": 2}],
        "ship_to": {"street": "Main", "title": "Dr"},
        "note": None,
    }
    assert place_order.args_model.model_validate(outcome.arguments) == outcome.args


@pytest.mark.parametrize("raw", ["", "  ", "{}"])
def test_empty_arguments_mean_no_arguments(raw: str) -> None:
    assert isinstance(validate_call(TOOLS, call("ping", raw)), ValidCall)


def test_unknown_tool_lists_the_available_names() -> None:
    outcome = rejected("send_mail", "{}")
    assert outcome.error_type == "unknown_tool"
    assert outcome.errors == (
        FieldIssue(
            message="there is no tool named 'send_mail'; available tools: "
            "ping, place_order, send_email, store_payload",
            kind="unknown_tool",
        ),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"to": "a"', "not valid JSON: Expecting ',' delimiter (line 1, column 11)"),
        ("{'to': 'a'}", "not valid JSON: Expecting property name enclosed in double quotes"),
        ('{"x": NaN}', "NaN is not valid JSON"),
        ('{"x": -Infinity}', "-Infinity is not valid JSON"),
        ('{"to": "a", "to": "b"}', "the key 'to' appears twice in one object"),
        ('{"x": ' + "9" * 5000 + "}", "not valid JSON: ValueError"),
        ("[" * 30000 + "]" * 30000, "not valid JSON: RecursionError"),
    ],
)
def test_unparseable_arguments_are_invalid_json(raw: str, message: str) -> None:
    outcome = rejected("store_payload", raw)
    assert outcome.error_type == "invalid_json"
    (issue,) = outcome.errors
    assert issue.loc == () and issue.kind == "json_invalid"
    assert issue.message.startswith(message), issue.message


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("[1, 2]", "an array"),
        ('"hi"', "a string"),
        ("3", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_arguments_that_are_not_an_object_are_invalid_arguments(raw: str, kind: str) -> None:
    outcome = rejected("store_payload", raw)
    assert outcome.error_type == "invalid_arguments"
    assert outcome.errors == (
        FieldIssue(message=f"the arguments must be a JSON object, not {kind}", kind="dict_type"),
    )


def test_oversized_arguments_are_refused_by_utf8_size_before_parsing() -> None:
    # 64 bytes is ping's limit; "é" is two bytes, so 31 of them plus the quotes and braces...
    fits = '{"a":"' + "x" * 56 + '"}'
    assert len(fits.encode()) == 64
    assert isinstance(validate_call(TOOLS, call("ping", fits)), ValidCall)
    too_big = '{"a":"' + "é" * 29 + '"}'  # 37 characters, 66 bytes
    outcome = rejected("ping", too_big)
    assert outcome.error_type == "oversized_arguments"
    assert outcome.errors == (
        FieldIssue(message="the arguments are 66 bytes; ping accepts at most 64", kind="too_long"),
    )
    # not even parsed: broken JSON over the limit is still "oversized"
    assert rejected("ping", "{" * 100).error_type == "oversized_arguments"


def test_deeply_nested_arguments_are_oversized() -> None:
    depth = MAX_ARGUMENT_DEPTH  # the object itself is level 1
    ok = '{"data":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    assert isinstance(validate_call(TOOLS, call("store_payload", ok)), ValidCall)
    deep = '{"data":' + "[" * depth + "]" * depth + "}"
    outcome = rejected("store_payload", deep)
    assert outcome.error_type == "oversized_arguments"
    assert outcome.errors[0].kind == "too_deep"


def test_pydantic_errors_become_one_field_issue_each() -> None:
    raw = json.dumps(
        {"items": [{"sku": "A"}, {"sku": 5, "quantity": 0}], "ship_to": {"street": "Main"}}
    )
    outcome = rejected("place_order", raw)
    assert outcome.error_type == "invalid_arguments"
    assert outcome.errors == (
        FieldIssue(loc=("items", 0, "quantity"), message="Field required", kind="missing"),
        FieldIssue(
            loc=("items", 1, "sku"), message="Input should be a valid string", kind="string_type"
        ),
        FieldIssue(
            loc=("items", 1, "quantity"),
            message="Input should be greater than or equal to 1",
            kind="greater_than_equal",
        ),
        FieldIssue(loc=("ship_to", "title"), message="Field required", kind="missing"),
    )


def test_values_the_log_cannot_hold_are_invalid_arguments() -> None:
    outcome = rejected("store_payload", '{"data": [1, 18446744073709551616, "\\ud800"]}')
    assert outcome.error_type == "invalid_arguments"
    assert outcome.errors == (
        FieldIssue(loc=("data", 1), message="integer out of the 64-bit range", kind="int_range"),
        FieldIssue(loc=("data", 2), message="string holds a lone surrogate", kind="string_type"),
    )


# -- what the model receives ------------------------------------------------------------------


def test_result_contents_are_exact_and_deterministic() -> None:
    assert (
        tool_result_ok({"b": 1, "a": [True, None]})
        == '{"result":{"a":[true,null],"b":1},"status":"ok"}'
    )
    assert tool_result_error(
        "invalid_arguments",
        [FieldIssue(loc=("items", 0), message="Field required", kind="missing")],
    ) == (
        '{"error_type":"invalid_arguments",'
        '"errors":[{"loc":["items",0],"message":"Field required"}],'
        '"hint":"fix the arguments and call again","status":"error"}'
    )
    assert json.loads(tool_result_error("unknown_tool", []))["hint"].startswith("call one of")
    assert json.loads(tool_result_degraded("search")) == {
        "status": "degraded",
        "message": "search is unavailable right now; do not call this tool again in this run. "
        "Answer with what you have and say what is missing.",
    }
    pending = json.loads(tool_result_pending_confirmation('send_email(to="é")'))
    assert (
        pending["status"] == "pending_confirmation" and pending["preview"] == 'send_email(to="é")'
    )
    assert json.loads(tool_result_denied())["status"] == "denied"
    assert json.loads(tool_result_denied("not now"))["reason"] == "not now"
    unknown = json.loads(tool_result_unknown_outcome("send_email"))
    assert unknown["status"] == "unknown_outcome" and "do not repeat it" in unknown["message"]
    assert tool_result_ok(2**70) == '{"result":1180591620717411303424,"status":"ok"}'


def test_default_preview_renders_the_arguments_readably() -> None:
    async def wire(args: SendEmail, ctx: ToolContext) -> None:
        """Wire money."""

    confirmed = tool(confirm=True)(wire)
    args = SendEmail(to="ann@example.com", subject='Hi "you"')
    assert confirmed.render_preview(args) == (
        'wire(to="ann@example.com", subject="Hi \\"you\\"", request_id="", sent_at="")'
    )
    custom = tool(confirm=True, preview=lambda a: f"email {a.to}")(wire)
    assert custom.render_preview(args) == "email ann@example.com"


# -- running ----------------------------------------------------------------------------------


async def test_invoke_runs_the_named_tier_and_returns_json() -> None:
    args = SendEmail(to="a@b.c", subject="s")
    primary = await send_email.invoke("primary", args, CTX)
    backup = await send_email.invoke(
        "backup_smtp", args, ToolContext("r", "c", "u", tier="backup_smtp")
    )
    assert primary == {"sent_to": "a@b.c", "tier": "primary"}
    assert backup == {"sent_to": "a@b.c", "tier": "backup_smtp"}
    order = Order(items=[Item(sku="A", quantity=1)], ship_to=Address(street="S", title="T"))
    assert await place_order.invoke("primary", order, CTX) == order.model_dump(mode="json")
    with pytest.raises(KeyError):
        await send_email.invoke("nope", args, CTX)


async def test_invoke_enforces_the_timeout_per_tier() -> None:
    never = anyio.Event()

    async def hang(args: NoArgs, ctx: ToolContext) -> None:
        """Hang."""
        await never.wait()

    slow = tool(timeout=0.05)(hang)
    with pytest.raises(TimeoutError):
        await slow.invoke("primary", NoArgs(), CTX)


async def test_invoke_refuses_results_with_no_json_form() -> None:
    with pytest.raises(TypeError, match="has no JSON form"):
        await store_payload.invoke("primary", Payload(data=object()), CTX)


async def test_reconcile() -> None:
    args = SendEmail(to="a@b.c", subject="s")
    assert await send_email.reconcile(args, CTX) == Reconciled(
        "done", {"sent_to": "a@b.c", "found": True}
    )
    no_hook = tool(side_effect=True)(_ok)
    assert await no_hook.reconcile(args, CTX) == Reconciled.unknown()

    async def sloppy(args: SendEmail, ctx: ToolContext) -> Reconciled:
        return True  # type: ignore[return-value]

    no_hook.reconciler(sloppy)
    with pytest.raises(TypeError, match="returned bool, not a Reconciled"):
        await no_hook.reconcile(args, CTX)
    assert Reconciled.not_done() == Reconciled("not_done", None)
    assert Reconciled.done(Item(sku="A", quantity=2)).result == {"sku": "A", "quantity": 2}


def test_to_json_value() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert to_json_value({"t": (1, 2), "at": at, "m": Item(sku="A", quantity=1)}) == {
        "t": [1, 2],
        "at": "2024-01-02T03:04:05Z",
        "m": {"sku": "A", "quantity": 1},
    }
    assert to_json_value([float("nan"), float("inf")]) == [None, None]
    with pytest.raises(TypeError, match="64-bit"):
        to_json_value({"n": 2**64})
    assert to_json_value(2**64 - 1) == 2**64 - 1
    with pytest.raises(TypeError, match="lone surrogate"):
        to_json_value({"\ud800": 1})
    with pytest.raises(TypeError, match="lone surrogate"):
        to_json_value(["\udfff"])


# -- idempotency keys -------------------------------------------------------------------------


def test_canonical_form_is_pinned() -> None:
    arguments = {"b": {"d": True, "c": None}, "a": [1.0, 2.5, "e\u0301", -0.0, 1e20], "v": 1}
    assert canonical_arguments(arguments, volatile=("v",)) == (
        '{"a":[1,2.5,"é",0,100000000000000000000],"b":{"c":null,"d":true}}'.encode()
    )
    # Keys are stored in the log: this value may change only with KEY_VERSION.
    assert idempotency_key("send_email", {"to": "a@b.c"}, (), "user:u1") == (
        "send_email:"
        + _sha256(b'["agentledger-idempotency-v1","user:u1","send_email"]\n{"to":"a@b.c"}')
    )


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_canonical_form_refuses_what_is_not_json() -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        canonical_arguments({"x": float("nan")})
    with pytest.raises(TypeError, match="not a JSON value"):
        canonical_arguments({"x": {1, 2}})
    with pytest.raises(TypeError, match="not one string"):
        canonical_arguments({"x": 1}, volatile="x")
    with pytest.raises(ValueError, match="collide once NFC-normalised"):
        canonical_arguments({"x": {"e\u0301": 1, "\u00e9": 2}})


def test_distinct_json_types_never_share_a_key() -> None:
    values: list[object] = [True, 1, "1", None, [1], {"1": 1}, [], {}, 0, False, ""]
    keys = {idempotency_key("t", {"x": v}, (), "s") for v in values}
    assert len(keys) == len(values)
    assert idempotency_key("t", {}, (), "s") != idempotency_key("t", {"x": None}, (), "s")
    assert idempotency_key("t", {"x": [1, 2]}, (), "s") != idempotency_key(
        "t", {"x": [2, 1]}, (), "s"
    )


def test_scope_and_tool_name_are_part_of_the_key() -> None:
    args = {"to": "a"}
    assert idempotency_key("t", args, (), "run:1") != idempotency_key("t", args, (), "run:2")
    assert idempotency_key("t", args, (), "run:1") != idempotency_key("u", args, (), "run:1")
    # the header is self-delimiting: moving characters between scope and tool name changes it
    assert idempotency_key("ab", args, (), "x") != idempotency_key("b", args, (), "xa")


def test_tool_key_scope_picks_run_or_user() -> None:
    args = {"to": "a", "subject": "s", "request_id": "", "sent_at": ""}
    # send_email is user-scoped: two runs of one user share a key, two users do not
    assert send_email.idempotency_key(args, run_id="r1", user_id="u") == send_email.idempotency_key(
        args, run_id="r2", user_id="u"
    )
    assert send_email.idempotency_key(args, run_id="r1", user_id="u") != send_email.idempotency_key(
        args, run_id="r1", user_id="v"
    )
    run_scoped = tool(side_effect=True)(_ok)
    assert run_scoped.idempotency_key(args, run_id="r1", user_id="u") != run_scoped.idempotency_key(
        args, run_id="r2", user_id="u"
    )
    # "run:x" and "user:x" never collide even when a run id equals a user id
    user_scoped = tool(side_effect=True, key_scope="user")(_ok)
    assert run_scoped.idempotency_key(args, run_id="x", user_id="x") != user_scoped.idempotency_key(
        args, run_id="x", user_id="x"
    )
    assert place_order.idempotency_key({}, run_id="r", user_id="u") is None


_keys = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


def _nfc_keys_unique(value: Any) -> bool:
    if isinstance(value, dict):
        normal = [unicodedata.normalize("NFC", k) for k in value]
        return len(set(normal)) == len(normal) and all(_nfc_keys_unique(v) for v in value.values())
    if isinstance(value, list):
        return all(_nfc_keys_unique(v) for v in value)
    return True


_arguments = st.dictionaries(_keys, _json, max_size=5).filter(_nfc_keys_unique)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def _other_spelling(value: Any) -> Any:
    """The same JSON value written differently: NFD strings, integral numbers as floats."""
    if isinstance(value, dict):
        return {unicodedata.normalize("NFD", k): _other_spelling(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_other_spelling(v) for v in value]
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
        return float(value)
    if isinstance(value, float) and value == 0.0:
        return -0.0
    return value


SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(_arguments, st.integers(min_value=0, max_value=2**32))
def test_key_is_invariant_under_key_order(arguments: dict[str, Any], seed: int) -> None:
    shuffled = _shuffled(arguments, random.Random(seed))
    assert idempotency_key("t", shuffled, (), "s") == idempotency_key("t", arguments, (), "s")


@SETTINGS
@given(_arguments)
def test_key_is_invariant_under_number_and_unicode_spelling(arguments: dict[str, Any]) -> None:
    assert canonical_arguments(_other_spelling(arguments)) == canonical_arguments(arguments)


@SETTINGS
@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_integral_floats_and_json_number_forms_are_one_number(n: int) -> None:
    forms = [n, float(n), json.loads(f"{n}.0"), json.loads(f"{n}e0"), json.loads(f"{n * 10}e-1")]
    assert len({canonical_arguments({"x": form}) for form in forms}) == 1


@SETTINGS
@given(_arguments, _json, _json)
def test_volatile_fields_do_not_change_the_key(arguments: dict[str, Any], a: Any, b: Any) -> None:
    with_a = {**arguments, "request_id": a}
    with_b = {**arguments, "request_id": b}
    without = {k: v for k, v in arguments.items() if k != "request_id"}
    key = idempotency_key("t", without, ("request_id",), "s")
    assert idempotency_key("t", with_a, ("request_id",), "s") == key
    assert idempotency_key("t", with_b, ("request_id",), "s") == key


@SETTINGS
@given(_arguments, st.data())
def test_different_non_volatile_values_give_different_keys(
    arguments: dict[str, Any], data: st.DataObject
) -> None:
    field = unicodedata.normalize("NFC", data.draw(_keys.filter(lambda k: k != "v")))
    before = {k: v for k, v in arguments.items() if unicodedata.normalize("NFC", k) != field}
    first = data.draw(_json)
    second = data.draw(_json)
    a = {**before, field: first, "v": 1}
    b = {**before, field: second, "v": 2}
    if not _nfc_keys_unique(a) or not _nfc_keys_unique(b):
        return
    same_value = canonical_arguments({"x": first}) == canonical_arguments({"x": second})
    same_key = idempotency_key("t", a, ("v",), "s") == idempotency_key("t", b, ("v",), "s")
    assert same_key == same_value


@SETTINGS
@given(_arguments)
def test_canonical_form_is_compact_sorted_json(arguments: dict[str, Any]) -> None:
    text = canonical_arguments(arguments).decode("utf-8")
    decoded = json.loads(text)
    assert json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == text
    assert canonical_arguments(decoded) == text.encode()


def test_tool_type_is_generic_over_its_model() -> None:
    t: Tool[SendEmail] = send_email
    assert t.args_model is SendEmail
