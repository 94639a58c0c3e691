"""The command line's grammar: every command, its options, and values checked as they parse.

``--db`` and ``--json`` are accepted before or after the command name (``agentledger --db x
runs`` and ``agentledger runs --db x`` are the same), because each subcommand's parser gets them
too, with a default that does not overwrite a value given before the command.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

from agentledger.events._time import utc_now

from ._runs import STATUSES
from ._store import DEFAULT_DB

_AGO = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

EPILOG = """\
exit status: 0 ok; 1 not found (a run, the database) or a replay diverged; 2 usage error.
--db takes a SQLite file (default ./agentledger.db) or a postgresql:// URL, anywhere on the line.
"""


def positive_int(value: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def when(value: str) -> datetime:
    """An argparse type: an ISO date or time (UTC unless it says otherwise), or an age such as
    ``30m``, ``2h``, ``7d`` (that long before now)."""
    ago = _AGO.match(value.strip())
    if ago:
        return utc_now() - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {value!r} (e.g. 2026-11-29, 2026-11-29T14:00, 2h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _installed() -> str:
    try:
        return version("agentledger")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


def _shared(*, json: bool) -> argparse.ArgumentParser:
    # default=SUPPRESS: a subcommand that is not given --db leaves the top level's value alone.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    if json:
        shared.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return shared


class _Commands:
    """Adds subcommands with the shared options."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(self, name: str, help: str, *, json: bool = False) -> argparse.ArgumentParser:
        return self._sub.add_parser(
            name, help=help, description=help, parents=[_shared(json=json)], epilog=EPILOG
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``agentledger`` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="agentledger",
        description="An event-sourced engine for LLM agents: every step is an event in a log.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed()}")
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"SQLite file or postgresql:// URL (default: ./{DEFAULT_DB}); also after COMMAND",
    )
    parser.set_defaults(json=False)
    commands = _Commands(parser)
    commands.add("demo", "run the demo agent (scripted model, no network)")
    _runs(commands.add("runs", "list runs, newest first", json=True))
    _show(commands.add("show", "one run: a summary, then its timeline as a tree", json=True))
    spend = commands.add("spend", "a user's settled spend per day", json=True)
    spend.add_argument("user", help="the user id")
    critic = commands.add("critic", "an agent's critic accept rate per run, per check", json=True)
    critic.add_argument("agent", help="the agent name")
    health = commands.add(
        "health", "tool tiers: successes, failures and circuit breakers", json=True
    )
    health.add_argument(
        "--threshold", type=positive_int, help="failures in a row that open a breaker (default 3)"
    )
    health.add_argument("--cooldown", type=float, help="seconds a breaker stays open (default 60)")
    projections = commands.add("projections", "maintain the saved projections")
    action = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = action.add_parser(
        "rebuild",
        help="fold the whole log again into the saved projections",
        parents=[_shared(json=True)],
    )
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="only these (default: all)")
    tail = commands.add("tail", "print the log as JSON lines")
    tail.add_argument("--after", type=int, default=0, help="start after this global position")
    tail.add_argument("-f", "--follow", action="store_true", help="keep waiting for new events")
    return parser


def _runs(runs: argparse.ArgumentParser) -> None:
    runs.add_argument("--user", help="only this user's runs")
    runs.add_argument("--agent", help="only this agent's runs")
    runs.add_argument("--status", choices=STATUSES, help="only runs with this status")
    runs.add_argument("--since", type=when, help="started at or after (ISO time, or 2h, 7d ago)")
    runs.add_argument("--until", type=when, help="started before (ISO time, or 2h, 7d ago)")
    runs.add_argument(
        "--limit", type=positive_int, default=20, help="at most this many (default: 20)"
    )


def _show(show: argparse.ArgumentParser) -> None:
    show.add_argument("run_id", metavar="RUN", help="a run id, or a unique start or end of one")
    show.add_argument(
        "--context",
        type=positive_int,
        metavar="N",
        help="the messages model call N was sent, and what changed since call N-1",
    )
