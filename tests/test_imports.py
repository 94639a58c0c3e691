"""Imports go one way: events <- projections <- replay <- engine; asyncpg stays optional."""

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
