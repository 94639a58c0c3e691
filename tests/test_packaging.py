"""What a non-editable install ships: every package of the source tree, each with its types.

``[tool.setuptools] packages`` is an explicit list, so a new subpackage left out of it is missing
from the wheel (an editable install of the checkout would not show it). ``.ci/user-types`` builds
the wheel and runs ``mypy --strict`` on user code against it; this is the quick check of the list.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def _source_packages() -> dict[str, Path]:
    """Every package under the mapped directories, by dotted name."""
    found: dict[str, Path] = {}
    for name, directory in SETUPTOOLS["package-dir"].items():
        root = ROOT / directory
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            if "__pycache__" not in relative:
                found[".".join([name, *relative])] = init.parent
    return found


def test_every_package_of_the_source_is_in_the_wheel() -> None:
    listed = set(SETUPTOOLS["packages"])
    source = _source_packages()
    assert set(source) - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - set(source) == set(), "listed packages with no __init__.py"


def test_every_top_package_ships_its_py_typed_marker() -> None:
    assert "py.typed" in SETUPTOOLS["package-data"]["*"]
    for name, directory in SETUPTOOLS["package-dir"].items():
        assert (ROOT / directory / "py.typed").is_file(), f"{name} has no py.typed"
