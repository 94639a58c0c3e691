"""The command line's own errors: each is one line on stderr and a documented exit status.

Exit statuses are part of the command's contract, for scripts: 0 ok, 1 not found (a run, a
database, a user's ledger) or divergent (a replay), 2 usage (a bad option or value, an
ambiguous run id prefix). Errors of the store, the projections and the engine exit with 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Raised when a command cannot do what it was asked; the message is shown as it is."""

    exit_code = EXIT_NOT_FOUND


class NotFoundError(CliError):
    """Raised when what a command names (a run, a database file, a user) is not there."""


class UsageError(CliError):
    """Raised when the command line itself is wrong (a value argparse could not check)."""

    exit_code = EXIT_USAGE
