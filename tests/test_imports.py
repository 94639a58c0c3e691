"""Imports go one way: events <- projections <- replay <- engine; engine/ in floors; no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["events", "projections", "replay", "engine"]
"""Lowest first: a package may import only packages to its left."""


def _forbidden(package: str) -> set[str]:
    return set(LAYERS[LAYERS.index(package) + 1 :])


def _imported_packages(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, package) for every ``agentledger.<package>`` this module imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "agentledger":  # from agentledger import engine
                names = [f"agentledger.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "agentledger" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _sources(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    return files


@pytest.mark.parametrize("package", LAYERS)
def test_imports_go_one_way(package: str) -> None:
    forbidden = _forbidden(package)
    violations = []
    for path in _sources(package):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in _imported_packages(tree):
            if imported in forbidden:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports agentledger.{imported}")
    assert violations == [], f"{package} must not import {sorted(forbidden)}"


@pytest.mark.parametrize("package", LAYERS)
def test_relative_imports_stay_inside_their_package(package: str) -> None:
    # Each package is a flat folder: ``from ..x`` could only reach a sibling package.
    escapes = []
    for path in _sources(package):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                escapes.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert escapes == []


def test_the_checker_sees_every_import_form() -> None:
    source = textwrap.dedent(
        """
        import agentledger.engine
        import agentledger.replay._x as y
        from agentledger.projections import z
        from agentledger import engine, events
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from agentledger.engine._loop import Loop
        def late():
            import agentledger.replay
        from . import _local
        import agentledgerx.engine
        """
    )
    found = [pkg for _, pkg in _imported_packages(ast.parse(source))]
    assert found == ["engine", "replay", "projections", "engine", "events", "engine", "replay"]


def test_packages_import_without_asyncpg() -> None:
    # ``None`` in sys.modules makes ``import asyncpg`` raise ImportError, as if not installed.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["asyncpg"] = None
        import agentledger.events
        import agentledger.projections
        import agentledger.replay
        import agentledger.engine
        from agentledger.events import MemoryEventStore
        assert "asyncpg" not in [m for m, v in sys.modules.items() if v is not None]
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- engine/: floors by role, and no cycles anywhere --------------------------------------------

ENGINE_FLOORS = [
    ["_errors", "_inputs", "_secrets"],
    ["models"],
    ["tools"],
    ["policies"],
    ["_agent"],
    ["loop"],
    ["_engine", "_result", "_replaying", "_sink", "testing", "otel", "_conversations"],
    ["cli", "__init__", "__main__"],
]
"""Lowest first: an engine module imports modules of its own floor or of floors below it
(cli -> façade -> loop -> agent -> policies -> tools -> models -> errors)."""


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "agentledger." + ".".join(parts)


def _imports_of(path: Path) -> set[str]:
    """The ``agentledger.*`` modules ``path`` imports (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("agentledger."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.startswith("agentledger."):
                found.add(module)
                # ``from .loop import _driver`` imports a module too
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for layer in LAYERS for p in _sources(layer)}
    return {
        name: {m for m in _imports_of(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _floor(module: str) -> int:
    part = module.removeprefix("agentledger.engine.").split(".")[0]
    if module == "agentledger.engine":
        part = "__init__"
    for index, names in enumerate(ENGINE_FLOORS):
        if part in names:
            return index
    raise AssertionError(f"{module} is on no floor of ENGINE_FLOORS")


def test_engine_modules_import_only_their_floor_or_below() -> None:
    violations = []
    for module, imported in _graph().items():
        if not module.startswith("agentledger.engine"):
            continue
        for other in imported:
            if other.startswith("agentledger.engine") and _floor(other) > _floor(module):
                violations.append(f"{module} imports {other}, a floor above it")
    assert violations == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
