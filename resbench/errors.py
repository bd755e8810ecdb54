"""One exception hierarchy. Every user-facing error is one line that names the bad value and the
allowed ones; the CLI prints it to stderr and exits with code 2 (no traceback unless --debug).

Messages are capped: a value can be arbitrarily long (a 4 MB alias-expanded YAML value, a corrupt run
file's field), and an error line that is megabytes long is no longer one line anyone can read. A long
message keeps its head and tail (the allowed values usually come last) with the middle elided."""

from __future__ import annotations

from collections.abc import Iterable

MESSAGE_LIMIT = 600          # characters of one error line (head and tail kept)
VALUE_LIMIT = 80             # characters of one quoted value inside a message


def cap(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` on one line, at most about `limit` characters: newlines become spaces, the middle of a long
    text is replaced by `…[N chars]…`."""
    text = " ".join(str(text).split("\n"))
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}…[{len(text) - head - tail} chars]…{text[-tail:]}"


def shown(value: object, limit: int = VALUE_LIMIT) -> str:
    """repr(value) for a message, capped at `limit` characters (a value from user input can be huge)."""
    try:
        text = repr(value)
    except RecursionError:  # a self-referencing structure
        text = f"<{type(value).__name__} nested too deeply to show>"
    return cap(text, limit)


class ResbenchError(Exception):
    """Base class of every error resbench reports to a user (exit code 2). The message is capped."""

    exit_code = 2

    def __init__(self, message: object = ""):
        super().__init__(cap(str(message)))


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


class OutputError(ResbenchError):
    """An output path resbench refuses to write (an input, a device, a file it did not write), one that is
    in use by another resbench process, or a write that failed (a full disk)."""


class UsageError(ResbenchError):
    """A bad command-line argument."""


def message_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line: the exception type and the first line of its message (the type alone without one)."""
    return f"{type(exc).__name__}: {message_line(exc)}" if str(exc).strip() else type(exc).__name__


def one_of(allowed: Iterable[object]) -> str:
    """Format allowed values for a message: "one of: a, b, c"."""
    return "one of: " + ", ".join(str(a) for a in allowed)
