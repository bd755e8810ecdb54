"""Runs one group of cases in a fresh worker process (worker.py beside this file), so that a case that
crashes the process (segfault, CUDA error, abort), exhausts memory or hangs becomes a status row and the
run goes on.

The parent sends the group's cases to a worker (`resbench.executors.worker.main`) and reads JSON lines
back: which case and stage the worker is in, and each row as soon as it exists. It keeps a clock per case:
- a case whose stages (prepare, first call, warm-up, its measurement slices, parity, memory) add up to
  more than `timing.case_timeout_s` is `timeout`; group-wide stages (building the model, the parity
  reference) have their own allowance of `case_timeout_s`; start-up (importing torch) gets
  STARTUP_TIMEOUT_S or `case_timeout_s`, whichever is longer;
- a worker that dies (signal, non-zero exit) makes the case it was working on `crashed`, with the stage
  and the signal ("crashed during first call of eager: killed by SIGABRT");
- an exception that escapes measure.run_group in the worker is `failed` (or `oom`), like in-process.
The worker's whole process tree (its own process group) is killed on a timeout, on Ctrl-C, and after
every group. The cases of the group that have no row yet then run again in a new worker without the
culprit; a fault in a group-wide stage gives every remaining case of the group that status.

Memory errors the worker survives (MemoryError, CUDA OOM) are `oom` rows made by measure.py itself.
RESBENCH_WORKER_MEMORY_MB caps each worker's address space (RLIMIT_AS), so a runaway host allocation
fails inside the worker instead of swapping the machine (the tests use it). The worker applies it once
torch is imported; a cap too small to leave room for a model after that stops the run with one line
naming the worker's real minimum (worker._cap_memory)."""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import resbench
from resbench.errors import UsageError
from resbench.measure import ProgressFn, RowFn, base_row, stage_text
from resbench.models import ModelCost
from resbench.results import ResultRow
from resbench.suite import Case

STARTUP_TIMEOUT_S = 120.0     # a worker must have imported torch and read its cases by then
EXIT_WAIT_S = 30.0            # after closing its channel, a worker must be gone by then
EXIT_POLL_S = 0.5             # how often a silent worker is checked for having died
MEMORY_ENV = "RESBENCH_WORKER_MEMORY_MB"
OUTPUT_TAIL_BYTES = 4096      # the worker's last output, for the reason of a crashed row
STARTUP = "start-up"          # the clock owner before the worker is ready


def memory_cap_mb() -> int | None:
    """RESBENCH_WORKER_MEMORY_MB as an int (None when unset); a bad value is a one-line usage error."""
    value = os.environ.get(MEMORY_ENV, "").strip()
    if not value:
        return None
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 256:
        # 256 is only the floor this check knows: a worker needs its imports' address space (about 700 MiB
        # with torch's CPU wheel) + MEMORY_HEADROOM_MB on top, a figure the first worker measures and states
        raise UsageError(f"{MEMORY_ENV}={value!r} is not allowed; give an integer number of MiB >= 256 (a "
                         f"worker needs its imports + 256, about 1,000 with torch's CPU wheel; a run too small "
                         f"for them says the exact minimum)")
    return cap


@dataclass
class WorkerEnd:
    """How a worker ended when it did not finish its cases."""

    status: str                 # crashed | timeout | failed | oom
    reason: str
    culprit: int | None         # index (in the worker's case list) of the case it was on; None: group-wide


@dataclass
class _Clock:
    """Seconds spent per owner (a case index, None for group-wide stages, STARTUP before ready)."""

    owner: int | str | None = STARTUP
    stage: str = STARTUP
    mark: float = field(default_factory=time.monotonic)
    spent: dict[int | str | None, float] = field(default_factory=dict)

    def move(self, owner: int | str | None, stage: str) -> None:
        now = time.monotonic()
        self.spent[self.owner] = self.spent.get(self.owner, 0.0) + now - self.mark
        self.owner, self.stage, self.mark = owner, stage, now

    def remaining(self, limit: float) -> float:
        return limit - self.spent.get(self.owner, 0.0) - (time.monotonic() - self.mark)


def run_group_isolated(cases: list[Case], progress: ProgressFn = lambda _m: None, *,
                       on_row: RowFn | None = None, cost: ModelCost | None = None) -> list[ResultRow]:
    """measure.run_group in worker processes: one row per case, in case order, whatever the workers do."""
    rows: dict[int, ResultRow] = {}

    def record(index: int, row: ResultRow) -> None:
        rows[index] = row
        if on_row is not None:
            on_row(index, row)

    while True:
        todo = [i for i in range(len(cases)) if i not in rows]
        if not todo:
            break
        end = _run_worker([cases[i] for i in todo], progress, lambda j, row, todo=todo: record(todo[j], row),
                          cost)
        if end is None:  # every row is in (else, as no sound worker does, never leave a case without a row)
            end = WorkerEnd("crashed", "the worker finished without a row for it", None)
        culprit = todo[end.culprit] if end.culprit is not None else None
        if culprit is not None and culprit not in rows:
            record(culprit, base_row(cases[culprit], cost, end.status, end.reason))
        else:  # a group-wide stage (or a case already done): nothing to retry without
            for i in todo:
                if i not in rows:
                    record(i, base_row(cases[i], cost, end.status, end.reason))
    return [rows[i] for i in range(len(cases))]


def _run_worker(cases: list[Case], progress: ProgressFn, on_row: RowFn,
                cost: ModelCost | None) -> WorkerEnd | None:
    """Run `cases` in one worker; None when it sent every row, else how it ended."""
    request = {"cases": [c.model_dump(mode="json") for c in cases],
               "cost": dataclasses.asdict(cost) if cost is not None else None}

    def on_message(message: dict) -> None:
        if message["type"] == "row":
            on_row(message["case"], ResultRow.model_validate(message["row"]))

    return run_child(request, cases[0].timing.case_timeout_s,
                     lambda index, stage: stage_text(cases, index, stage), on_message, progress)


Describe = Callable[[int | None, str], str]   # (owner, stage) -> "prefix: where", e.g. stage_text


def run_child(request: dict, case_limit: float, describe: Describe, on_message: Callable[[dict], None],
              progress: ProgressFn) -> WorkerEnd | None:
    """Send `request` to a fresh worker process (worker.py) and follow it: its "stage" messages move the
    per-owner clocks (an owner is the index the message names: a case of a group, or a model being
    checked) and are shown through `progress(describe(owner, stage))`; every other message goes to
    `on_message`. None when the worker said "done", else how it ended (the owner it was on is the
    culprit). The worker's process tree is killed in every case."""
    memory_cap_mb()  # validate before spawning anything
    # The worker imports this very resbench, installed or not (appended: never shadows anything).
    project_root = str(Path(resbench.__file__).resolve().parent.parent)
    bootstrap = f"import sys; sys.path.append({project_root!r}); from resbench.executors.worker import main; main()"
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", bootstrap, str(write_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(write_fd,), start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    clock = _Clock()
    output = _Output()
    try:
        request = {**request, "sys_path": [p or os.getcwd() for p in sys.path]}
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died at once; its exit status says why
        return _follow(proc, read_fd, clock, output, case_limit, describe, on_message, progress)
    finally:
        _kill_tree(proc)
        os.close(read_fd)
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _follow(proc: subprocess.Popen, read_fd: int, clock: _Clock, output: _Output, case_limit: float,
            describe: Describe, on_message: Callable[[dict], None], progress: ProgressFn) -> WorkerEnd | None:
    """Read the worker's messages and output until it is done, dies, or overruns a clock."""
    state: dict = {"buffer": b"", "finished": False, "error": None}

    def take(chunk: bytes) -> None:
        *lines, state["buffer"] = (state["buffer"] + chunk).split(b"\n")
        for line in lines:
            message = json.loads(line)
            kind = message["type"]
            if kind == "ready":
                clock.move(None, "waiting for the first stage")
            elif kind == "stage":
                clock.move(message["case"], message["stage"])
                progress(describe(message["case"], message["stage"]))
            elif kind == "error":
                state["error"] = message
            elif kind == "done":
                state["finished"] = True
            else:
                on_message(message)

    out_fd = proc.stdout.fileno()
    channel_open = True
    while channel_open and not state["finished"]:
        limit = max(STARTUP_TIMEOUT_S, case_limit) if clock.owner == STARTUP else case_limit
        remaining = clock.remaining(limit)
        if remaining <= 0:
            _kill_tree(proc)
            where = _where(describe, clock)
            allowance = "start-up allowance" if clock.owner == STARTUP else "timing.case_timeout_s"
            return WorkerEnd("timeout", f"timed out during {where}: over {allowance} = {limit:g} s",
                             clock.owner if isinstance(clock.owner, int) else None)
        watched = [read_fd, out_fd] if out_fd >= 0 else [read_fd]
        readable, _, _ = select.select(watched, [], [], min(remaining, EXIT_POLL_S))
        if out_fd in readable:
            out_fd = _pass_on_output(out_fd, output)
        if read_fd in readable:
            chunk = os.read(read_fd, 1 << 16)
            channel_open = bool(chunk)
            take(chunk)
        elif _exit_status(proc) is not None:
            # Dead, yet its channel is open: a child it forked holds the write end. Take what is buffered.
            while select.select([read_fd], [], [], 0)[0] and (chunk := os.read(read_fd, 1 << 16)):
                take(chunk)
            channel_open = False
    if state["finished"]:
        return None  # every row is in; the caller kills what is left of the worker
    returncode = _wait_exit(proc, out_fd, output)
    where = _where(describe, clock)
    culprit = clock.owner if isinstance(clock.owner, int) else None
    error = state["error"]
    if error is not None and error.get("fatal"):
        raise UsageError(error["message"])  # no worker can run: stop the run instead of failing every case
    if error is not None:
        status = "oom" if error.get("oom") else "failed"
        return WorkerEnd(status, f"{where}: {error['message']}", culprit)
    return WorkerEnd("crashed", f"crashed during {where}: {_exit_description(returncode)}{output.last_line()}",
                     culprit)


def _where(describe: Describe, clock: _Clock) -> str:
    if clock.owner == STARTUP:
        return "worker start-up"
    index = clock.owner if isinstance(clock.owner, int) else None
    return describe(index, clock.stage).split(": ", 1)[1]


def _exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "the worker closed its channel but did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the kernel's OOM killer sends SIGKILL)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"the worker exited with code {returncode}"


class _Output:
    """The worker's stdout and stderr: passed on to ours, the tail kept for crash reasons."""

    def __init__(self) -> None:
        self.tail = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk)
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        self.tail = (self.tail + text)[-OUTPUT_TAIL_BYTES:]

    def last_line(self) -> str:
        lines = [line.strip() for line in self.tail.splitlines() if line.strip()]
        return f" (last output: {lines[-1][:200]})" if lines else ""


def _pass_on_output(out_fd: int, output: _Output) -> int:
    """Read one chunk of the worker's output (it is readable) into `output`; `out_fd`, or -1 at its end."""
    chunk = os.read(out_fd, 1 << 16)
    if not chunk:
        return -1
    output.add(chunk)
    return out_fd


def _exit_status(proc: subprocess.Popen) -> int | None:
    """The worker's exit code (negative: the signal that killed it), or None while it runs. The process is
    not reaped (WNOWAIT), so its process group stays valid for _kill_tree."""
    status = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    if status is None or status.si_pid != proc.pid:
        return None
    return status.si_status if status.si_code == os.CLD_EXITED else -status.si_status


def _wait_exit(proc: subprocess.Popen, out_fd: int, output: _Output) -> int | None:
    """The worker's exit status once its channel is closed (draining its output meanwhile); None if it
    is still running after EXIT_WAIT_S."""
    deadline = time.monotonic() + EXIT_WAIT_S
    while time.monotonic() < deadline:
        returncode = _exit_status(proc)
        if returncode is not None:
            while out_fd >= 0 and time.monotonic() < deadline and select.select([out_fd], [], [], 0)[0]:
                out_fd = _pass_on_output(out_fd, output)  # its last words (a C++ abort message, a CUDA error)
            return returncode
        if out_fd >= 0:
            readable, _, _ = select.select([out_fd], [], [], 0.05)
            if readable:
                out_fd = _pass_on_output(out_fd, output)
        else:
            time.sleep(0.02)
    return None


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the worker and everything it started (compile workers, ...) and reap the worker."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the worker leads its own group
        except (ProcessLookupError, PermissionError):
            pass
    for child in children:  # any that left the group
        try:
            child.kill()
        except psutil.Error:
            pass
    proc.wait()

