"""``agentledger``: parse the command line, run the command, turn errors into one line.

Every failure a user can cause or meet (a missing or foreign database, an unknown run, a store
that is down, a damaged log) is one line on stderr and a documented exit status (``_errors``),
never a traceback. A traceback means a bug in agentledger.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from agentledger.engine._errors import EngineError
from agentledger.events import EventStoreError
from agentledger.projections import ProjectionError, RunFilterError
from agentledger.replay import ReplayError

from ._args import build_parser
from ._conversation_cmd import command as conversation
from ._demo_cmd import command as demo
from ._errors import EXIT_NOT_FOUND, EXIT_USAGE, CliError
from ._health import command as health
from ._histories_cmd import export, import_
from ._maintenance import rebuild
from ._otel_cmd import command as otel_export
from ._output import Output, error
from ._replay_cmd import fork, replay, whatif
from ._reports import critic, spend
from ._runs import command as runs
from ._show import command as show
from ._tail import command as tail

Command = Callable[[argparse.Namespace, Output], Awaitable[int]]

COMMANDS: dict[str, Command] = {
    "demo": demo,
    "runs": runs,
    "show": show,
    "conversation": conversation,
    "spend": spend,
    "critic": critic,
    "health": health,
    "projections": rebuild,
    "tail": tail,
    "replay": replay,
    "fork": fork,
    "whatif": whatif,
    "export": export,
    "import": import_,
    "otel-export": otel_export,
}


def _leaf(exc: BaseException) -> BaseException:
    # A task group wraps what one of its tasks raised; the user's error is the one inside.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _run(command: Command, options: argparse.Namespace) -> int:
    try:
        return await command(options, Output())
    except BaseExceptionGroup as group:
        raise _leaf(group) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentledger`` command; returns the exit status."""
    try:
        options = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse: 2 after a usage error, 0 after --help or --version
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    try:
        return anyio.run(_run, COMMANDS[options.command], options)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        error(str(exc))
        return exc.exit_code
    except RunFilterError as exc:  # e.g. --until before --since
        error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``agentledger tail | head``): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (EventStoreError, EngineError, ProjectionError, ReplayError, OSError) as exc:
        # What a user can act on (a damaged or locked database, a server that is down).
        error(str(exc) or type(exc).__name__)
        return EXIT_NOT_FOUND


if __name__ == "__main__":
    sys.exit(main())
