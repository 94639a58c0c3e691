"""Where every command writes: rich on a terminal, plain text in a pipe, JSON for scripts.

On a terminal, tables and trees are drawn by rich with colour. Anywhere else (a pipe, a file,
a test's captured output) there are no colour codes and tables are plain columns (a header, a
rule of dashes, rows separated by two spaces), so ``grep`` and ``awk`` work on them.

Values from the log reach the screen only as ``rich.text.Text`` built from ``safe_text``: rich
never parses them as markup (an agent named ``[bold]x`` stays that), and their control
characters are shown, never obeyed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from ._escape import safe_json, safe_text

_PLAIN_WIDTH = 10_000
"""Line width when not on a terminal: wide enough that nothing is wrapped."""


def text(value: object, style: str = "") -> Text:
    """A value from the log as rich ``Text``: escaped, never read as markup."""
    return Text(safe_text(value), style=style)


def lines(value: str, style: str = "") -> Text:
    """A value of several lines as rich ``Text`` of several lines, each escaped (``text``
    would show a newline as ``\\x0a``)."""
    return Text("\n").join(text(line, style) for line in value.splitlines() or [""])


def plural(count: int, noun: str) -> str:
    """``1 turn``, ``2 turns``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class Output:
    """The current command's standard output (taken when it starts, so tests can capture it)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.console = Console(
            file=sys.stdout,
            highlight=False,
            markup=False,
            emoji=False,
            width=None if self.tty else _PLAIN_WIDTH,
            no_color=None if self.tty else True,
        )

    def print(self, *items: RenderableType) -> None:
        """Print renderables (build them with ``text`` for anything from the log)."""
        self.console.print(*items)

    def line(self, value: object = "", style: str = "") -> None:
        """One line of text, escaped."""
        self.console.print(text(value, style))

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        right: Sequence[int] = (),
        styles: Sequence[str] = (),
    ) -> None:
        """A table: columns ``right`` are right-aligned on a terminal, ``styles`` colour columns
        there (``""`` for none); in a pipe, plain left-aligned columns."""
        if not self.tty:
            sys.stdout.write(plain_table(headers, rows) + "\n")
            return
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for index, header in enumerate(headers):
            style = styles[index] if index < len(styles) else ""
            table.add_column(header, justify="right" if index in right else "left", style=style)
        for row in rows:
            table.add_row(*(c if isinstance(c, Text) else text(c) for c in row))
        self.console.print(table)

    def json(self, value: Any) -> None:
        """``value`` as one JSON document on stdout (non-JSON values such as Decimal, as
        strings), with the control characters a terminal would obey escaped."""
        data = safe_json(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2) + b"\n")
        binary = getattr(sys.stdout, "buffer", None)
        if binary is None:  # a text-only stream (an embedding's, a test's StringIO)
            sys.stdout.write(data.decode())
            return
        sys.stdout.flush()
        binary.write(data)
        binary.flush()


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns separated by two spaces under a header and a rule of dashes; values escaped."""
    cells = [[_plain(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(row.rstrip() for row in [line, rule, *body])


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else safe_text(cell)


def error(message: str) -> None:
    """One line on stderr, ``agentledger: error: ...``, escaped."""
    print(safe_text(f"agentledger: error: {message}"), file=sys.stderr)


def note(message: str) -> None:
    """One line on stderr that is not an error (progress, a hint), escaped."""
    print(safe_text(f"agentledger: {message}"), file=sys.stderr)
