"""Every ```python block of README.md runs as written, and every ``agentledger COMMAND`` it names
is a real command.

Each block is a complete program, written to a file in a fresh temporary directory and run in a
subprocess of its own, as a reader would run it (a block that defines ``test_*`` functions is run
with pytest, as a reader's test file would be). Blocks that name a real provider
(``OpenAIChatModel``, ``AnthropicModel``) talk HTTP to a local server started here, through
``$OPENAI_BASE_URL``/``$ANTHROPIC_BASE_URL``, which the clients read as the providers' SDKs do;
it answers with recorded wire bodies (``tests/fixtures/openai``, ``tests/fixtures/anthropic``,
and a real llama.cpp server's plain chat reply from ``tests/fixtures/wire``). A failure names the
block's line in the README.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from wire_server import Asked, recorded_provider

from agentledger.engine.cli._args import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str


def readme_blocks() -> list[Block]:
    """The fenced code blocks of the README, with the line of each opening fence."""
    blocks: list[Block] = []
    lines = README.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    language = ""
    body: list[str] = []
    for number, text in enumerate(lines, start=1):
        if start is None and text.startswith("```") and len(text) > 3:
            start, language, body = number, text[3:].strip(), []
        elif start is not None and text.startswith("```"):
            blocks.append(Block(start, language, "\n".join(body) + "\n"))
            start = None
        elif start is not None:
            body.append(text)
    assert start is None, f"README.md line {start}: a code block is never closed"
    return blocks


PYTHON_BLOCKS = [b for b in readme_blocks() if b.language == "python"]


def _promised_output(code: str) -> list[str]:
    """What a block says it prints: the comment line right under a ``print(...)`` line."""
    return re.findall(r"^[ \t]*print\(.*\)\n[ \t]*# (.+)$", code, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[str, list[Asked]]]:
    """The local server's URL and the paths it was asked so far."""
    with recorded_provider() as (url, asked):
        yield url, asked


# -- the python blocks --------------------------------------------------------------------------


def test_the_readme_has_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: f"line-{b.line}")
def test_python_block_runs_as_written(
    block: Block, provider: tuple[str, list[Asked]], tmp_path: Path
) -> None:
    url, asked = provider
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env |= {
        "OPENAI_BASE_URL": f"{url}/v1",
        "ANTHROPIC_BASE_URL": url,
        "OPENAI_API_KEY": "sk-readme-test",
        "ANTHROPIC_API_KEY": "sk-ant-readme-test",
    }
    script = tmp_path / f"readme_line_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    tests = re.findall(r"^def (test_\w+)", block.code, flags=re.MULTILINE)
    command = [sys.executable, script.name]
    if tests:  # a reader's test file: pytest runs it
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    before = len(asked)
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    where = f"README.md line {block.line}"
    assert done.returncode == 0, (
        f"{where}: the block exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    if tests:
        assert f"{len(tests)} passed" in done.stdout, f"{where}: {done.stdout}"
    for promised in _promised_output(block.code):
        assert promised in done.stdout, f"{where}: printed {done.stdout!r}, not {promised!r}"
    sent = [path for path, _ in asked[before:]]
    if "OpenAIChatModel(" in block.code:
        assert "/v1/chat/completions" in sent, f"{where}: no request reached the server"
    if "AnthropicModel(" in block.code and "fallback_models" not in block.code:
        assert "/v1/messages" in sent, f"{where}: no request reached the server"


# -- the commands -------------------------------------------------------------------------------


def _commands_named() -> list[tuple[int, str]]:
    """``(line, command)`` for every ``agentledger COMMAND`` in the README's shell and text
    blocks."""
    named: list[tuple[int, str]] = []
    for block in readme_blocks():
        if block.language not in ("bash", "sh", "console", "text"):
            continue
        for offset, text in enumerate(block.code.splitlines(), start=1):
            for match in re.finditer(r"(?:^|[\s;&|(])agentledger\s+([a-z][a-z-]*)", text):
                named.append((block.line + offset, match.group(1)))
    return named


def _shell_command_lines() -> list[tuple[int, str]]:
    """``(line, text)`` of every line of a shell block that is one ``agentledger`` command."""
    found: list[tuple[int, str]] = []
    for block in readme_blocks():
        if block.language in ("bash", "sh", "console"):
            for offset, text in enumerate(block.code.splitlines(), start=1):
                command = text.split("#", 1)[0].strip()
                if command.startswith("agentledger ") and not re.search(r"[|&;<>]", command):
                    found.append((block.line + offset, command))
    return found


@pytest.mark.parametrize("line,command", _shell_command_lines(), ids=lambda v: str(v))
def test_every_shell_command_line_parses(line: int, command: str) -> None:
    """Options too: the whole line as the command's parser reads it (nothing is run)."""
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exited:
        pytest.fail(f"README.md line {line}: `{command}` does not parse ({exited.code})")


def test_the_readme_names_commands() -> None:
    assert "demo" in {command for _, command in _commands_named()}


@pytest.mark.parametrize("line,command", _commands_named(), ids=lambda v: str(v))
def test_every_command_in_the_readme_exists(
    line: int, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0, f"README.md line {line}: `agentledger {command}` is no command"
