"""The example of docs/streaming.md runs as written and shows what it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "streaming.md"


async def test_the_documented_listener_sees_the_reply_in_pieces() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    assert await namespace["main"]() == "Sunny in Paris, 24 degrees."
