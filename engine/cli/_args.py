"""The command line's grammar: every command, its options, and values checked as they parse.

``--db`` and ``--json`` are accepted before or after the command name (``agentledger --db x
runs`` and ``agentledger runs --db x`` are the same), because each subcommand's parser gets them
too, with a default that does not overwrite a value given before the command.
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from ._demo import add_demo_arguments
from ._replay_cmd import add_selection
from ._runs import STATUSES
from ._store import DEFAULT_DB
from ._values import positive_int, when

EPILOG = """\
exit status: 0 ok; 1 not found (a run, the database) or a replay diverged; 2 usage error.
--db takes a SQLite file (default ./agentledger.db) or a postgresql:// URL, anywhere on the line.
"""


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
    add_demo_arguments(commands.add("demo", "run the demo agent (scripted model unless --model)"))
    _runs(commands.add("runs", "list runs, newest first", json=True))
    _show(commands.add("show", "one run: a summary, then its timeline as a tree", json=True))
    conversation = commands.add("conversation", "a conversation's runs, oldest first", json=True)
    conversation.add_argument("conversation_id", metavar="ID", help="the conversation id")
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
    _replay(commands)
    _histories(commands)
    otel = commands.add("otel-export", "send recorded runs to OpenTelemetry as traces", json=True)
    otel.add_argument("runs", nargs="*", metavar="RUN", help="runs to export (ids or prefixes)")
    otel.add_argument("--all", action="store_true", help="every run (or those since --since)")
    otel.add_argument("--since", type=when, help="with --all: runs started after this")
    otel.add_argument("--endpoint", metavar="URL", help="OTLP/HTTP endpoint (default: the SDK's)")
    otel.add_argument("--console", action="store_true", help="print the spans as JSON instead")
    otel.add_argument("--include-open", action="store_true", help="also spans still open")
    otel.add_argument("--service-name", help="service.name of the traces (default: agentledger)")
    tail = commands.add("tail", "print the log as JSON lines")
    tail.add_argument("--after", type=int, default=0, help="start after this global position")
    tail.add_argument("-f", "--follow", action="store_true", help="keep waiting for new events")
    return parser


def _replay(commands: _Commands) -> None:
    replay = commands.add(
        "replay", "replay runs from their logs; exit 1 if any diverges", json=True
    )
    add_selection(replay, what="replay")
    fork = commands.add(
        "fork", "copy a run up to a version into a new run and continue it live", json=True
    )
    fork.add_argument("run_id", metavar="RUN", help="the run to fork (an id or a prefix)")
    fork.add_argument(
        "--at", type=positive_int, required=True, metavar="VERSION", help="copy versions 1..VERSION"
    )
    fork.add_argument(
        "--agents", action="append", default=[], metavar="MODULE:NAME", help="the new agent"
    )
    fork.add_argument("--agent", dest="agent_name", metavar="NAME", help="which loaded agent")
    fork.add_argument("--run-id", dest="new_run_id", help="the fork's id (default: a new one)")
    fork.add_argument("--user", help="charge the fork's calls to this user")
    fork.add_argument("--surface", help="under this budget surface")
    fork.add_argument(
        "--copy-only", action="store_true", help="copy, do not continue the fork live"
    )
    whatif = commands.add(
        "whatif", "fork runs with a changed agent, run them, compare old and new", json=True
    )
    add_selection(whatif, what="fork")
    whatif.add_argument("--with", dest="with_agent", metavar="NAME", help="which loaded agent")
    whatif.add_argument("--at", type=positive_int, metavar="VERSION", help="fork point (start)")
    whatif.add_argument("--budget", metavar="USD", help="stop starting forks past this spend")
    whatif.add_argument("--fork-user", help="charge the forks to this user (default: each run's)")
    whatif.add_argument(
        "--allow-side-effects", action="store_true", help="let forks run side-effecting tools"
    )


def _histories(commands: _Commands) -> None:
    export = commands.add("export", "write runs as a history file (JSON lines)", json=True)
    export.add_argument("runs", nargs="*", metavar="RUN", help="runs to export (ids or prefixes)")
    export.add_argument("--user", help="runs of this user")
    export.add_argument("--agent", dest="agent_name", metavar="NAME", help="runs of this agent")
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="file, or - for stdout"
    )
    import_ = commands.add("import", "append a history file to the store", json=True)
    import_.add_argument("file", metavar="FILE", help="the history file, or - for stdin")


def _runs(runs: argparse.ArgumentParser) -> None:
    runs.add_argument("prefix", nargs="?", metavar="PREFIX", help="only runs whose id starts so")
    runs.add_argument("--user", help="only this user's runs")
    runs.add_argument("--agent", help="only this agent's runs")
    runs.add_argument("--status", choices=STATUSES, help="only runs with this status")
    runs.add_argument("--since", type=when, help="started at or after (ISO time, or 2h, 7d ago)")
    runs.add_argument("--until", type=when, help="started before (ISO time, or 2h, 7d ago)")
    runs.add_argument(
        "--limit", type=positive_int, default=20, help="at most this many (default: 20)"
    )
    runs.add_argument("--conversation", metavar="ID", help="only the runs of this conversation")


def _show(show: argparse.ArgumentParser) -> None:
    show.add_argument("run_id", metavar="RUN", help="a run id, or a unique start or end of one")
    show.add_argument(
        "--context",
        type=positive_int,
        metavar="N",
        help="the messages model call N was sent, and what changed since call N-1",
    )
