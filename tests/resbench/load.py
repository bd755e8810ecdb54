"""A real CPU load generator for the contention tests: Python processes spinning on `while True` (what a
user's stray `python -c "while True: pass"` does), bounded in time twice over: each spinner exits on its
own after `seconds`, and the context manager kills them on exit, whatever happened in between.

`stranger=True` starts them through a launcher that exits at once, so they are re-parented to init and
are NOT descendants of the test process: to a meter rooted at the test process they are other people's
processes. `stranger=False` keeps them as the test's own children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
QUIET = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


@contextmanager
def cpu_load(processes: int = 2, seconds: float = 60.0, stranger: bool = True) -> Iterator[list[psutil.Process]]:
    """`processes` spinning Python processes for at most `seconds`; yields them as psutil.Process."""
    code = SPIN.format(seconds=seconds)
    spinners: list[psutil.Process] = []
    children: list[subprocess.Popen] = []
    try:
        if stranger:
            launcher = ("import subprocess, sys\n"
                        f"ps = [subprocess.Popen([sys.executable, '-c', {code!r}], stdin=subprocess.DEVNULL, "
                        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True) "
                        f"for _ in range({processes})]\n"
                        "print(' '.join(str(p.pid) for p in ps))\n")
            out = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=60,
                                 check=True).stdout
            spinners = [psutil.Process(int(pid)) for pid in out.split()]
        else:
            children = [subprocess.Popen([sys.executable, "-c", code], **QUIET) for _ in range(processes)]
            spinners = [psutil.Process(child.pid) for child in children]
        time.sleep(0.3)  # past the interpreter's start-up: spinning from here on
        yield spinners
    finally:
        for spinner in spinners:
            try:
                if spinner.is_running():  # checks the start time too: never a recycled pid
                    os.kill(spinner.pid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError):
                pass
        for child in children:
            child.wait(timeout=10)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total
