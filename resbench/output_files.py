"""Output paths: what resbench refuses to write, how it writes, and the lock that keeps two runs apart.

Every file resbench writes (run files, reports, comparisons) goes through here:
- **only regular files**, always **replaced atomically**: a temporary file in the target's folder, fsync,
  rename over the target. A reader sees the old file or the new one; a full disk leaves the old one.
- a **symlink is followed on purpose**: the file it points to is replaced and the link stays a link.
- **refused** with one line (exit 2), before any work: a directory, a device (`/dev/null`), a FIFO, a
  socket; an input of the command (the suite, a run file being read); for a run file, an existing file
  that is not a resbench run file of the same suite (`--force` replaces a run file of another suite;
  nothing replaces a file resbench did not write); for a report, an existing file that is not an earlier
  report of the same format (an empty file excepted): regenerating a report is routine, replacing a
  suite, a README or a run file is not.
- new files get mode 0666 & ~umask (0644 under the usual umask 022), as a shell redirection makes them
  (mkstemp's 0600 would make a run file unreadable to the rest of a team).
- a run holds an **exclusive lock** on its run file (`fcntl.flock` on a sibling `.NAME.lock` that holds
  the holder's pid) for its whole duration, so two runs on one file cannot silently lose each other's rows.
- temporary and lock names stay within NAME_MAX (255 bytes) for any legal target name."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from resbench.errors import OutputError, shown

RUN_SCHEMA = "resbench.run/1"       # results.SCHEMA (not imported: results imports this module)
NAME_MAX = 255                      # bytes in one path component (Linux, macOS)
SNIFF_LIMIT = 256 << 20             # larger files are not read to see whether they are run files
TEMP_STEM_CHARS = 100               # characters of the target's name kept in a temporary file's name
REPORT_SNIFF_BYTES = 64 << 10       # how much of an existing file is read to recognise an earlier report
# What an earlier report of each format begins with (or, for pytest-benchmark JSON, holds in machine_info,
# its first key), by the flag that writes it (report/html.py, markdown.py, comparison.py, csv_export.py,
# pytest_benchmark.py); a test writes each format and checks it is recognised.
REPORT_SIGNATURES: dict[str, tuple[str, re.Pattern[str]]] = {
    "--html": ("an HTML report", re.compile(r"\A<!DOCTYPE html>.*?<title>resbench: ", re.S)),
    "--md": ("a Markdown report", re.compile(r"\A### (?:\S+ )?resbench (?:run|compare): ")),
    "--csv": ("a CSV report", re.compile(r"\Amodel,backend,")),
    "--pytest-benchmark": ("a pytest-benchmark export", re.compile(r'\A\{\s*"machine_info":.*?"resbench_env":',
                                                                    re.S)),
}


class WriteError(OutputError):
    """Writing an output failed (a full disk, an I/O error); the target keeps its previous content."""

    def __init__(self, path: Path, exc: OSError):
        self.path, self.errno = path, exc.errno
        super().__init__(f"cannot write {str(path)!r}: {exc.strerror or exc}")


# ---------------------------------------------------------------------------------------------- names


def resolve(path: str | Path) -> Path:
    """The file a write to `path` must replace: symlinks followed (a dangling one to where it points)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _fits(name: str) -> bool:
    return len(os.fsencode(name)) <= NAME_MAX


def sibling(target: Path, tag: str) -> Path:
    """A hidden file next to `target`, the same for every process: `.NAME.TAG`, or for a name too long for
    that, a shortened name plus a checksum of the full one (still unique per target)."""
    name = f".{target.name}.{tag}"
    if _fits(name):
        return target.with_name(name)
    digest = f"{zlib.crc32(os.fsencode(target.name)):08x}"
    stem = os.fsencode(target.name)[: NAME_MAX - len(tag) - len(digest) - 4].decode(errors="ignore")
    return target.with_name(f".{stem}~{digest}.{tag}")


def _temp_prefix(target: Path) -> str:
    return f".{target.name[:TEMP_STEM_CHARS]}."


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc, kernel >= 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------- checks


def kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file. (Inputs use it too: a checkpoint.)"""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def run_file_suite(path: Path) -> str | None:
    """The suite name recorded in a resbench run file at `path`; None when `path` is not a run file."""
    try:
        if path.stat().st_size > SNIFF_LIMIT:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("schema") != RUN_SCHEMA:
        return None
    suite = data.get("suite")
    name = suite.get("name") if isinstance(suite, dict) else None
    return name if isinstance(name, str) else ""


def _check_common(path: Path, flag: str, inputs: Sequence[str | Path]) -> tuple[Path, os.stat_result | None]:
    """Resolve `path`; refuse a non-regular file or an input. Returns the target and its stat (None: new)."""
    target = resolve(path)
    label = f"{flag} {shown(str(path))}"
    via = f" (a symlink to {str(target)!r})" if Path(os.path.abspath(path)) != target else ""
    try:
        info = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):  # (a file where a folder should be: _check_folder says so)
        info = None
    except OSError as exc:
        raise OutputError(f"{label}{via} cannot be checked: {exc.strerror or exc}") from None
    if info is not None:
        kind = kind_of(info.st_mode)
        if kind is not None:
            raise OutputError(f"{label}{via} is {kind}; give a file path (resbench writes only regular files)")
        for source in inputs:
            if _same_file(target, Path(source)):
                raise OutputError(f"{label}{via} is an input of this command ({str(source)!r}); resbench never "
                                  f"overwrites its inputs: choose another path")
    _check_folder(target, label)
    return target, info


def _check_folder(target: Path, label: str) -> None:
    """The target's folder exists (created if need be) and a file can be created in it (permission bits
    alone say nothing for root or a read-only mount)."""
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{label}: cannot create output folder {str(folder)!r}: {exc.strerror or exc}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=_temp_prefix(target), suffix=".check"):
            pass
    except OSError as exc:
        raise OutputError(f"{label}: output folder {str(folder)!r} is not writable: {exc.strerror or exc}") from None


def check_run_output(path: str | Path, *, suite_name: str, inputs: Sequence[str | Path] = (),
                     force: bool = False, flag: str = "--out") -> Path:
    """The file `resbench run` may write for `path`, or OutputError. An existing file must be a resbench
    run file of suite `suite_name` (with `force`: of any suite)."""
    target, info = _check_common(path, flag, inputs)
    if info is None:
        return target
    recorded = run_file_suite(target)
    label = f"{flag} {shown(str(path))}"
    if recorded is None:
        raise OutputError(f"{label} exists and is not a resbench run file; resbench does not replace a file it "
                          f"did not write: remove it or choose another path")
    if recorded != suite_name and not force:
        raise OutputError(f"{label} is a run file of suite {shown(recorded)}, not {shown(suite_name)}; pass "
                          f"--force to replace it, or choose another path")
    return target


def check_report_output(path: str | Path, *, flag: str, inputs: Sequence[str | Path] = ()) -> Path:
    """The file a report or comparison may write for `path` with `flag` (a key of REPORT_SIGNATURES), or
    OutputError: an existing file must be empty or an earlier report of that format, never a run file."""
    target, info = _check_common(path, flag, inputs)
    if info is None or info.st_size == 0:
        return target
    label = f"{flag} {shown(str(path))}"
    if run_file_suite(target) is not None:
        raise OutputError(f"{label} is a resbench run file; a report never replaces measurements: choose "
                          f"another path")
    what, signature = REPORT_SIGNATURES[flag]
    try:
        with open(target, "rb") as file:
            head = file.read(REPORT_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError as exc:
        raise OutputError(f"{label} cannot be read to check what it is: {exc.strerror or exc}") from None
    if not signature.search(head):
        raise OutputError(f"{label} exists and is not {what} resbench wrote; resbench does not replace a file "
                          f"it did not write: remove it or choose another path")
    return target


# ---------------------------------------------------------------------------------------------- writing


def replace_file(target: str | Path, data: str | bytes) -> None:
    """Atomically replace `target` (already resolved: `resolve`) with `data` (str is written as UTF-8):
    a sibling temporary file, fsync, rename. Raises WriteError; the target then keeps its old content."""
    target = Path(target)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise WriteError(target, exc) from None
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise WriteError(target, exc) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------- the lock


@contextmanager
def exclusive(target: Path, what: str = "run file") -> Iterator[None]:
    """Hold an exclusive lock on `target` (resolved) while the block runs; OutputError naming the holder's
    pid if another process holds it. The lock is `fcntl.flock` on a sibling lock file (the target itself is
    replaced by rename, so a lock on it would not outlive the first write); the kernel drops it when the
    holder exits however it exits, so a killed run never leaves a stale lock."""
    lock_path = sibling(target, "lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {str(lock_path)!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {str(lock_path)!r}: {exc.strerror or exc}") from None
            raise OutputError(f"{what} {str(target)!r} is in use by another resbench process (pid {holder}); wait "
                              f"for it to finish or choose another path") from None
        # The previous holder unlinks the lock file when it is done: a lock taken on an unlinked file
        # would not exclude a process that creates the file anew, so take it again on the current one.
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            lock_path.unlink()
        except OSError:
            pass
        os.close(fd)
