"""Machine load and contention: did anything besides this run use the cores (or the GPU) it measured on?

A latency measured while another process ran on the same cores is that process's number as much as the
runtime's: on 2 cores, one busy process turned a 30 ms ResNet-50 call into 564 ms (OpenMP threads of
two processes fighting). pyperf and nvbench check the machine before they trust a number; so does this.

What is measured (psutil over /proc):
- **Other processes' CPU time** while a case was sampled: the busy time of the cores in this process's
  affinity mask (user + nice + system + irq + softirq, from /proc/stat) minus the CPU time of this run's
  own processes (`OwnProcesses`: the measuring process, its descendants such as compile workers, and the
  parent `resbench` process of a worker). What is left was spent by other processes (and the kernel's own
  threads, a few thousandths of a core on a quiet machine). Divided by the wall time: "other processes
  used 1.7 of 2 cores". The attribution is what makes the figure usable: the measured runtime keeps every
  core busy itself, so a plain "CPU busy" or load-average figure reads 100% on a quiet machine.
- **Steal**: time the hypervisor gave this VM's cores to someone else (another tenant of a shared host).
- **Load average** (1, 5, 15 min) against the cores in the affinity mask: recorded, not judged. It counts
  this run's own threads and, in a container, the whole host's, so it cannot say who is busy.
- **Other processes on the GPU** (NVML): any compute or graphics process besides this run's.

A case is **contended** when other processes used more than CONTENDED_FRACTION of the cores its threads
use (plus any cores the thread policy leaves free, which others may use without contending), or steal
exceeded the same share, or another process held the GPU. Each cause is one warning on the row."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from resbench.results import ResultRow

CONTENDED_FRACTION = 0.10   # others using > 10% of our cores: on 2 cores 0.2 cores, ~20x a quiet box's background
PROBE_S = 1.0               # one window of --wait-idle's polling
START_PROBE_S = 0.5         # the check before a run (the banner): long enough for 50 ticks per core
TICK_S = 0.01               # /proc/stat and /proc/PID/stat count CPU time in 10 ms ticks (USER_HZ = 100)
WARNING_PREFIX = "machine busy: "   # every contention warning starts with this (reports mark such rows)
GPU_WARNING_PREFIX = "GPU shared: "


def affinity_cores() -> list[int]:
    """The CPU numbers this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return sorted(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error, OSError):  # macOS has no affinity API
        return list(range(psutil.cpu_count() or 1))


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------------------------- own processes


class OwnProcesses:
    """The processes whose CPU time is this run's own: `pid` with all its descendants, plus `extra` pids
    alone (a worker's parent `resbench` process, whose other children are not ours)."""

    def __init__(self, pid: int | None = None, extra: Iterable[int] = ()):
        self.pid = os.getpid() if pid is None else pid
        self.extra = tuple(p for p in extra if p and p != self.pid)

    @classmethod
    def of_worker(cls) -> OwnProcesses:
        """In a worker process: this process, its descendants, and the parent that started it."""
        return cls(os.getpid(), extra=(os.getppid(),))

    def pids(self) -> set[int]:
        found = {self.pid, *self.extra}
        try:
            found.update(child.pid for child in psutil.Process(self.pid).children(recursive=True))
        except psutil.Error:
            pass
        return found

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) of the own processes so far, including their reaped children: a
        compile worker that exits during a window moves from the live sum into its parent's
        children_user/children_system, so a difference of two readings stays right."""
        total = 0.0
        for pid in self.pids():
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:  # exited between listing and reading
                continue
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        return total


# ------------------------------------------------------------------------------------- CPU windows


@dataclass(frozen=True)
class CpuReading:
    """Cumulative counters at one moment: wall clock, busy and steal seconds of the cores, own CPU seconds."""

    t: float
    busy_s: float
    steal_s: float
    own_s: float


def read_cpu(own: OwnProcesses, cores: Sequence[int]) -> CpuReading:
    per_cpu = psutil.cpu_times(percpu=True)
    busy = steal = 0.0
    for index in cores:
        if index >= len(per_cpu):
            continue
        c = per_cpu[index]
        # guest time is already inside user (and guest_nice inside nice) in /proc/stat
        busy += c.user + c.nice + c.system + getattr(c, "irq", 0.0) + getattr(c, "softirq", 0.0)
        steal += getattr(c, "steal", 0.0)
    return CpuReading(time.monotonic(), busy, steal, own.cpu_seconds())


@dataclass
class CpuWindow:
    """CPU use over one or more time windows (the measurement slices of a case add up)."""

    wall_s: float = 0.0
    busy_s: float = 0.0
    steal_s: float = 0.0
    own_s: float = 0.0
    windows: int = 0        # how many start/stop pairs: each adds its own tick rounding (resolution_cores)

    def add(self, start: CpuReading, end: CpuReading) -> None:
        self.windows += 1
        self.wall_s += max(end.t - start.t, 0.0)
        self.busy_s += max(end.busy_s - start.busy_s, 0.0)
        self.steal_s += max(end.steal_s - start.steal_s, 0.0)
        self.own_s += max(end.own_s - start.own_s, 0.0)

    @property
    def other_s(self) -> float:
        """CPU seconds that other processes (and the kernel) spent on the cores. Never negative: per-CPU
        counters are sampled in 10 ms ticks, process times more finely, so a quiet window can read -0.01."""
        return max(self.busy_s - self.own_s, 0.0)

    def cores(self, seconds: float) -> float:
        return seconds / self.wall_s if self.wall_s > 0 else 0.0


class CpuMeter:
    """Adds up the CPU use of the windows between `start()` and `stop()` calls."""

    def __init__(self, own: OwnProcesses | None = None, cores: Sequence[int] | None = None):
        self.own = own or OwnProcesses()
        self.cores = list(cores) if cores is not None else affinity_cores()
        self.window = CpuWindow()
        self._start: CpuReading | None = None

    def start(self) -> None:
        self._start = read_cpu(self.own, self.cores)

    def stop(self) -> None:
        if self._start is not None:
            self.window.add(self._start, read_cpu(self.own, self.cores))
            self._start = None


def probe(seconds: float = PROBE_S, own: OwnProcesses | None = None,
          cores: Sequence[int] | None = None) -> CpuWindow:
    """CPU use of the machine over the next `seconds` (this process idle meanwhile)."""
    meter = CpuMeter(own, cores)
    meter.start()
    time.sleep(seconds)
    meter.stop()
    return meter.window


# ------------------------------------------------------------------------------------------ verdicts


def allowed_other_cores(cores: int, threads: int | None) -> float:
    """How much CPU other processes may use before a measurement counts as contended: CONTENDED_FRACTION
    of the cores the run's threads occupy, plus the cores the thread policy leaves free."""
    used = min(threads, cores) if threads else cores
    return (cores - used) + CONTENDED_FRACTION * used


def resolution_cores(window: CpuWindow, cores: int) -> float:
    """How far `other` can read above the truth from tick rounding alone, in cores: three standard
    deviations of the rounding error. Each window's `other` is a difference of per-CPU and per-process
    tick counters read at both ends, each off by less than a tick (a triangular error, sd 0.41 tick): about
    2 x `cores` such terms per window (the cores' counters, and as many of the run's own processes), adding
    up over the windows like a random walk. One 0.1 s window on 2 cores: 0.25 cores, more than the 0.2 the
    verdict allows, so a quiet machine read as busy; one 1 s window: 0.02; a latency row's ~5 slices over 3 s: 0.02."""
    if window.wall_s <= 0:
        return 0.0
    terms = 2 * cores * max(window.windows, 1)
    return 3 * 0.41 * TICK_S * math.sqrt(terms) / window.wall_s


def cpu_warnings(window: CpuWindow, cores: int, threads: int | None, when: str = " while measured") -> list[str]:
    """The contention warnings of a CPU window: other processes, then hypervisor steal. Others' use is
    judged against the allowance plus what the counters cannot resolve (resolution_cores): a warning
    must mean someone else ran, never that the window was short."""
    if window.wall_s <= 0:
        return []
    out = []
    allowed, resolution = allowed_other_cores(cores, threads), resolution_cores(window, cores)
    other, steal = window.cores(window.other_s), window.cores(window.steal_s)
    if other > allowed + resolution:
        limit = f"{allowed:.2g}" if resolution < 0.05 else \
            f"{allowed:.2g} + {resolution:.2g} for the 10 ms counters over {window.wall_s:.2g} s"
        out.append(f"{WARNING_PREFIX}other processes used {other:.1f} of {cores} cores{when} (allowed {limit})")
    if steal > CONTENDED_FRACTION * cores + resolution:
        out.append(f"{WARNING_PREFIX}the hypervisor withheld (steal) {steal:.1f} of {cores} cores{when}")
    return out


def cpu_record(window: CpuWindow, cores: int, threads: int | None) -> dict[str, Any]:
    """The figures of a window as the run file stores them."""
    return {
        "window_s": round(window.wall_s, 3),
        "other_cores": round(window.cores(window.other_s), 3),
        "own_cores": round(window.cores(window.own_s), 3),
        "steal_cores": round(window.cores(window.steal_s), 3),
        "allowed_other_cores": round(allowed_other_cores(cores, threads), 3),
        "resolution_cores": round(resolution_cores(window, cores), 3),   # judged: other > allowed + this
    }


def is_contention_warning(warning: str) -> bool:
    return warning.startswith((WARNING_PREFIX, GPU_WARNING_PREFIX))


# ------------------------------------------------------------------------------------------------ GPU


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_mb: float | None


def gpu_processes(torch_index: int = 0) -> tuple[list[GpuProcess] | None, str]:
    """Every compute and graphics process NVML lists on the GPU (None and why, without NVML or a GPU)."""
    try:
        from resbench import telemetry

        ok, why = telemetry.available()
        if not ok:
            return None, why
        nv = telemetry._nvml()
        handle = telemetry._handle(torch_index)
        listed: dict[int, GpuProcess] = {}
        for query in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
            for p in query(handle):
                used = getattr(p, "usedGpuMemory", None)
                listed[p.pid] = GpuProcess(p.pid, used / 2**20 if used is not None else None)
        return list(listed.values()), ""
    except Exception as exc:  # a figure NVML cannot give must never fail a run
        return None, f"NVML process list not available ({exc})"


def other_gpu_processes(listed: Sequence[GpuProcess], own_pids: set[int],
                        holds_context: bool) -> tuple[list[GpuProcess], str]:
    """The listed processes that are not this run's, and a note when that cannot be told exactly.

    NVML reports host PIDs; inside a container's PID namespace none of them is ours, though this process
    holds a context: then one listed process is assumed to be this one and the rest are others."""
    others = [p for p in listed if p.pid not in own_pids]
    if holds_context and listed and len(others) == len(listed):
        return others[1:] if len(others) > 1 else [], ("this process is not in NVML's list (another PID "
                                                       "namespace): one listed process is taken as this one")
    return others, ""


def gpu_warnings(others: Sequence[GpuProcess], when: str = " while measured") -> list[str]:
    if not others:
        return []
    pids = ", ".join(str(p.pid) for p in others[:5]) + (", ..." if len(others) > 5 else "")
    memory = sum(p.used_mb or 0.0 for p in others)
    held = f", {memory / 1024:.1f} GB" if memory else ""
    plural = "es" if len(others) > 1 else ""
    return [f"{GPU_WARNING_PREFIX}{len(others)} other process{plural} held the GPU{when} (pid {pids}{held})"]


# ------------------------------------------------------------------------------------ per case, in a group


class SliceMonitor:
    """The machine while each backend of a group is measured: `slice_started(label)` / `slice_ended(label)`
    around each of its timed slices add up its CPU window, and on a GPU note who else held the device.
    `record(label, threads)` is the row's `system` field and its contention warnings."""

    def __init__(self, device: str = "cpu", torch_index: int = 0, own: OwnProcesses | None = None):
        self.device, self.torch_index = device, torch_index
        self.own = own or OwnProcesses()
        self.cores = affinity_cores()
        self.meters: dict[str, CpuMeter] = {}
        self.gpu_others: dict[str, dict[int, GpuProcess]] = {}
        self.gpu_note = ""
        self.load_start = load_average()

    def slice_started(self, label: str) -> None:
        self.meters.setdefault(label, CpuMeter(self.own, self.cores)).start()

    def slice_ended(self, label: str) -> None:
        self.meters[label].stop()
        if self.device == "cuda":
            listed, why = gpu_processes(self.torch_index)
            if listed is None:
                self.gpu_note = why
                return
            others, self.gpu_note = other_gpu_processes(listed, self.own.pids(), holds_context=True)
            self.gpu_others.setdefault(label, {}).update({p.pid: p for p in others})

    def record(self, label: str, threads: int | None) -> tuple[dict[str, Any], list[str]]:
        meter = self.meters.get(label)
        if meter is None:
            return {}, []
        cores = len(self.cores)
        others = list(self.gpu_others.get(label, {}).values())
        record = {"cores": cores, **cpu_record(meter.window, cores, threads),
                  "load_avg": [round(v, 2) for v in self.load_start] if self.load_start else None}
        if self.device == "cuda":
            record["gpu_other_processes"] = [p.pid for p in others]
            if self.gpu_note:
                record["gpu_note"] = self.gpu_note
        warnings = cpu_warnings(meter.window, cores, threads) + gpu_warnings(others)
        record["contended"] = bool(warnings)
        return record, warnings


# --------------------------------------------------------------------------------- the machine at start


@dataclass
class MachineState:
    """The machine before a run (or a group): what the banner and `--wait-idle` judge."""

    cores: list[int]
    window: CpuWindow
    load_avg: tuple[float, float, float] | None
    gpu_others: list[GpuProcess] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return cpu_warnings(self.window, len(self.cores), None, when="") + gpu_warnings(self.gpu_others, when="")

    @property
    def busy(self) -> bool:
        return bool(self.warnings)

    def record(self) -> dict[str, Any]:
        return {"cores": len(self.cores), **cpu_record(self.window, len(self.cores), None),
                "load_avg": [round(v, 2) for v in self.load_avg] if self.load_avg else None,
                "gpu_other_processes": [p.pid for p in self.gpu_others], "busy": self.busy}

    def banner(self) -> str:
        """One line: 'machine busy: other processes used 1.7 of 2 cores (load average 2.9 on 2 cores)...'"""
        load = f"load average {self.load_avg[0]:.1f} on {len(self.cores)} cores" if self.load_avg else ""
        if not self.busy:
            return f"machine quiet: other processes used {self.window.cores(self.window.other_s):.2f} of " \
                   f"{len(self.cores)} cores" + (f" ({load})" if load else "")
        causes = "; ".join(w.removeprefix(WARNING_PREFIX) for w in self.warnings)
        return (f"{WARNING_PREFIX}{causes}" + (f" ({load})" if load else "") +
                ": timings will be contended; --wait-idle SECONDS waits for quiet, --strict fails such rows")


def machine_state(device: str = "cpu", seconds: float = PROBE_S, own: OwnProcesses | None = None) -> MachineState:
    """Probe the machine for `seconds` with this run idle."""
    own = own or OwnProcesses()
    cores = affinity_cores()
    window = probe(seconds, own, cores)
    others: list[GpuProcess] = []
    if device == "cuda":
        listed, _ = gpu_processes()
        if listed:
            others, _ = other_gpu_processes(listed, own.pids(), holds_context=False)
    return MachineState(cores, window, load_average(), others)


def wait_for_idle(timeout_s: float, device: str = "cpu", progress: Callable[[str], None] = lambda _m: None,
                  own: OwnProcesses | None = None) -> MachineState:
    """Probe until the machine is quiet or `timeout_s` has passed; report progress each probe. Returns
    the last state (busy when the wait ran out: the caller measures anyway, and the rows say so)."""
    started = time.monotonic()
    while True:
        state = machine_state(device, min(PROBE_S, max(timeout_s, 0.1)), own)
        waited = time.monotonic() - started
        if not state.busy:
            if waited > 2 * PROBE_S:
                progress(f"machine quiet after {waited:.0f} s")
            return state
        if waited >= timeout_s:
            progress(f"still busy after --wait-idle {timeout_s:g} s ({state.warnings[0]}); measuring anyway")
            return state
        progress(f"waiting for the machine to go quiet ({waited:.0f} of {timeout_s:g} s): {state.warnings[0]}")


# ---------------------------------------------------------------------------------------------- --strict


def fail_if_contended(row: ResultRow) -> ResultRow:
    """`--strict`: an `ok` row measured under contention becomes `failed`, its reason the contention
    warning(s). The samples stay in the row, so the figures can still be inspected."""
    causes = [w for w in row.warnings if is_contention_warning(w)]
    if row.status != "ok" or not causes:
        return row
    return row.model_copy(update={"status": "failed", "reason": "--strict: " + "; ".join(causes)})
