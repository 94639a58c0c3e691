"""The README's "Testing your agents" example runs as written: its code block is executed and
every test it defines is called, as pytest would call them in a user's test file."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _testing_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Testing your agents", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the README's 'Testing your agents' section has no python block"
    return str(blocks[0])


def test_the_readme_testing_example_runs_as_written() -> None:
    namespace: dict[str, object] = {"__name__": "readme_testing_example"}
    exec(compile(_testing_block(), "README.md", "exec"), namespace)
    tests = {name: fn for name, fn in namespace.items() if name.startswith("test_")}
    assert len(tests) == 2, sorted(tests)
    for test in tests.values():
        assert callable(test)
        test()
