"""One exception hierarchy. Every user-facing error is one line that names the bad value and the
allowed ones; the CLI prints it to stderr and exits with code 2 (no traceback unless --debug)."""

from __future__ import annotations

from collections.abc import Iterable


class ResbenchError(Exception):
    """Base class of every error resbench reports to a user (exit code 2)."""

    exit_code = 2


class SuiteError(ResbenchError):
    """A suite file that cannot be read or does not validate."""

    def __init__(self, path: str, key: str, message: str):
        self.path, self.key = path, key
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + message)


class ModelError(ResbenchError):
    """A model spec that cannot be resolved, or weights that cannot be loaded."""


class BackendError(ResbenchError):
    """An unknown backend or invalid backend options."""


class RunFileError(ResbenchError):
    """A run file that is missing, unreadable, or of another schema."""


class UsageError(ResbenchError):
    """A bad command-line argument."""


def one_of(allowed: Iterable[object]) -> str:
    """Format allowed values for a message: "one of: a, b, c"."""
    return "one of: " + ", ".join(str(a) for a in allowed)
