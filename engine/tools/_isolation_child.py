"""The process a tool with ``isolation="process"`` runs in: it reads one request (the
function's module and name, its arguments and context as JSON) on stdin, runs it, and writes one
JSON answer on stdout. What the tool prints goes to stderr."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import typing
from collections.abc import Callable
from types import ModuleType
from typing import Any

import orjson

from ._tools import ToolContext, to_json_value

_MAX_ERROR_TEXT = 8192
_MAIN_ALIAS = "__agentledger_tool_main__"
"""The name the parent's ``__main__`` script is imported under (its ``if __name__ ==
"__main__"`` part does not run)."""


def main() -> None:
    """The worker process: read one request on stdin, run it, write one JSON answer."""
    request = orjson.loads(sys.stdin.buffer.read())
    # The answer has stdout to itself; what the tool prints goes to stderr.
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        sys.path[:] = [*request["path"], *(p for p in sys.path if p not in request["path"])]
        fn = _resolve(request["module"], request["file"], request["qualname"])
        first = next(iter(inspect.signature(fn).parameters))
        model = typing.get_type_hints(fn)[first]
        args = model.model_validate(request["args"])
        result = to_json_value(fn(args, ToolContext(**request["ctx"])))
        reply = orjson.dumps({"ok": True, "result": result})
    except BaseException as exc:  # every failure is the answer
        message = str(exc)[:_MAX_ERROR_TEXT] or type(exc).__name__
        reply = orjson.dumps({"ok": False, "error_type": type(exc).__name__, "message": message})
    answer.write(reply)
    answer.flush()


def _resolve(module_name: str, file: str | None, qualname: str) -> Callable[..., object]:
    module: ModuleType
    if file is not None:
        spec = importlib.util.spec_from_file_location(_MAIN_ALIAS, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MAIN_ALIAS] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part)
    # The name of a tool's primary function holds the Tool the decorator made of it.
    tiers = getattr(found, "tiers", None)
    if tiers is not None:
        for _, fn in tiers:
            if fn.__qualname__ == qualname:
                return typing.cast(Callable[..., object], fn)
        raise LookupError(f"{module_name}.{qualname} is a tool without that function")
    return typing.cast(Callable[..., object], found)
