"""The worker process of an isolated run (isolated.py starts it): `python -m resbench.executors.worker FD`,
or `main()` called with FD as the first argument.

It reads one request from stdin (one JSON line: the group's cases and the parent's sys.path), runs
measure.run_group on them, and writes JSON lines to file descriptor FD as it goes (a request with "check"
instead of cases checks models instead: model_check.py, which sends "checked" messages instead of rows):
  {"type": "ready"}                                  imports done, cases parsed
  {"type": "stage", "case": i | null, "stage": s}    work moved to case i (null: group-wide) and stage s
  {"type": "row", "case": i, "row": {...}}           case i's final row
  {"type": "error", "message": s, "oom": bool}       an exception escaped measure.run_group
  {"type": "error", ..., "fatal": true}              the worker cannot work at all (its memory cap is too
                                                     small): the parent stops the run with that message
  {"type": "done"}                                   every row was sent
The channel is a separate pipe, not stdout, so nothing a library prints can corrupt it; stdout and
stderr go to the parent, which passes them on and keeps the tail for crash reasons.

A worker never outlives its parent: stdin stays open for the whole group and its end (the parent exited,
or was killed) ends the worker; on Linux PR_SET_PDEATHSIG does the same even if Python is stuck in C.
RESBENCH_WORKER_MEMORY_MB caps the worker's memory once torch is imported (_cap_memory): its address space
(RLIMIT_AS) on CPU; its data segment (RLIMIT_DATA) when a case runs on CUDA, whose driver reserves far more
address space than any cap when it initialises."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

EXIT_PARENT_GONE = 3


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the stdin watch below still applies

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(1 << 16):
                pass
        except (OSError, ValueError):
            pass
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch_stdin, name="resbench-parent-watch", daemon=True).start()


MEMORY_HEADROOM_MB = 256  # memory a capped worker needs beyond its imports (a small model, inputs)


def _cap_memory(on_cuda: bool) -> str | None:
    """Apply RESBENCH_WORKER_MEMORY_MB once torch is imported. Returns why the cap is too small when what
    the worker holds after its imports leaves less than MEMORY_HEADROOM_MB under it.

    After the imports, not before: importing torch maps hundreds of MiB of address space (about 700 MiB
    with the CPU wheel, several GiB with CUDA's libraries), and under a smaller cap the import died with
    SIGABRT in numpy's or torch's C code, a crash that named neither the cap nor what it needs.

    Under CUDA not RLIMIT_AS: the driver reserves virtual address space for unified addressing (on the
    order of the host's and the GPUs' memory together, none of it resident) when it initialises, so any
    useful address-space cap makes CUDA initialisation fail (notes/gpu-audit.md, item 9). RLIMIT_DATA
    (Linux >= 4.7: heap plus private writable mappings) still stops a runaway host allocation; read-only
    and PROT_NONE reservations and the device's shared mappings are not counted."""
    from resbench.executors.isolated import MEMORY_ENV, memory_cap_mb

    cap_mb = memory_cap_mb()  # (valid: the parent checked it before starting this worker)
    if cap_mb is None:
        return None
    import resource

    import psutil

    info = psutil.Process().memory_info()
    limit, used_mb, what = ((resource.RLIMIT_DATA, info.data >> 20, "data segment") if on_cuda else
                            (resource.RLIMIT_AS, info.vms >> 20, "address space"))
    if cap_mb < used_mb + MEMORY_HEADROOM_MB:
        return (f"{MEMORY_ENV}={cap_mb} is too small: a worker maps {used_mb:,} MiB of {what} "
                f"once torch is imported, before any model; give at least {used_mb + MEMORY_HEADROOM_MB:,} "
                f"(its imports + {MEMORY_HEADROOM_MB} MiB for a small model)")
    cap = cap_mb << 20
    _, hard = resource.getrlimit(limit)
    resource.setrlimit(limit, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[0])
    os.set_inheritable(fd, False)  # programs the worker starts must not hold the parent's channel open
    channel = os.fdopen(fd, "w", encoding="utf-8")

    def send(message: dict[str, Any]) -> None:
        try:
            channel.write(json.dumps(message) + "\n")
            channel.flush()
        except (BrokenPipeError, OSError):
            os._exit(EXIT_PARENT_GONE)

    request = json.loads(sys.stdin.readline() or "null")
    if not isinstance(request, dict):
        os._exit(EXIT_PARENT_GONE)  # the parent went away before sending the cases
    _die_with_parent()
    for entry in request["sys_path"]:  # python:module:callable models import in the worker as in the parent
        if entry not in sys.path:
            sys.path.append(entry)

    try:
        from resbench import measure
        from resbench.models import ModelCost
        from resbench.suite import Case

        # the model check runs user code too: capped alike (on the CPU: it has no "cases")
        too_small = _cap_memory(any(case.get("device") == "cuda" for case in request.get("cases", [])))
        if too_small is not None:
            send({"type": "error", "message": too_small, "oom": False, "fatal": True})
            _exit(1)
        if "check" in request:  # a model check (model_check.py): the stages' "case" is a model's index
            from resbench.executors.model_check import run_checks

            run_checks(request["check"], send)  # it says "ready" itself, after its imports
            send({"type": "done"})
            _exit(0)
        measure.IN_WORKER = True
        cases = [Case.model_validate(c) for c in request["cases"]]
        cost = ModelCost(**request["cost"]) if request.get("cost") else None
        send({"type": "ready"})
        measure.run_group(
            cases,
            on_stage=lambda index, stage: send({"type": "stage", "case": index, "stage": stage}),
            on_row=lambda index, row: send({"type": "row", "case": index, "row": row.model_dump(mode="json")}),
            cost=cost,
        )
    except BaseException as exc:  # anything that escapes is reported, then the worker exits
        from resbench.errors import describe
        from resbench.measure import is_oom

        send({"type": "error", "message": describe(exc), "oom": is_oom(exc)})
        _exit(1)
    send({"type": "done"})
    _exit(0)
    return 0


def _exit(code: int) -> None:
    """Leave without interpreter teardown (seconds with torch loaded; nothing left to flush but output)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
