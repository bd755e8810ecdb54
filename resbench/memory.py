"""Memory per runtime: each backend's own footprint, comparable across the runtimes of one group.

The backends of a group share one process, so a process-wide figure (peak RSS, NVML process memory) is
the same for all of them and says nothing about which is leaner. The per-backend figure, `backend_mb`:

- **CPU**: resident memory (RSS) that this backend's preparation left the process holding — from just
  before its private copy of the model to the end of its warm-up (weights it keeps, packed weights, an
  exported graph and session, compiled code, allocator caches its calls built up) — plus the peak RSS
  growth during its own timed calls (activations not already held), the largest over its measurement
  slices. The peak is exact on Linux: the kernel's high-water mark (VmHWM) is reset before each slice
  (`/proc/self/clear_refs`) and read after it; elsewhere a thread samples RSS every RSS_POLL_S.
  Both prepare readings are taken settled (`settle`: Python's garbage collected, free C-heap pages handed
  back to the OS with glibc's malloc_trim), so garbage left by an earlier backend, or collected in the
  middle of this one's prepare, moves neither figure. The first backend of a group still carries
  one-time library costs (oneDNN primitives, thread pools), as every backend carries the libraries it
  loads first (the ONNX exporter). Figures of one group are comparable; across groups, with care.
- **GPU**: torch allocator bytes the backend holds after preparing (baseline taken before its private
  model copy; the harness's cold-L2 flush buffer left out), plus the reserved-but-free memory of the CUDA
  graph pools it created (a captured graph keeps its activations there, invisible to
  `memory_allocated`), plus the allocator peak of one call. Never negative. Runtimes that allocate
  outside torch's allocator (ONNX Runtime's arena, TensorRT's engine memory) have no comparable figure:
  their `backend_mb` is None and the row's source says why.

The arithmetic is pure functions (`gpu_backend_bytes`, `graph_pool_free_bytes`) tested on numbers; the
readers around them are thin."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import re
import resource
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MB = 2**20
RSS_POLL_S = 0.002      # fallback sampler period where the high-water mark cannot be reset
OUTSIDE_TORCH_ALLOCATOR = frozenset({"onnxruntime", "tensorrt"})  # GPU memory partly outside torch's allocator
DEFAULT_POOL = (0, 0)   # segment_pool_id of torch's ordinary pool; graph pools have their own ids

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_process_peak = {"bytes": 0}   # the largest RSS high-water mark seen before a reset (resets lower ru_maxrss)


# ------------------------------------------------------------------------------------------------ CPU


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def settle() -> None:
    """Collect Python's garbage and hand free C-heap pages back to the OS, so that RSS counts memory held
    rather than memory freed and cached (outside any timed region: it takes milliseconds)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _high_water_bytes() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_high_water() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    peak = _high_water_bytes()
    if peak is None:
        return False
    _process_peak["bytes"] = max(_process_peak["bytes"], peak)  # keep the process peak the reset forgets
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def process_peak_rss_mb() -> float:
    """Peak RSS of this process so far, including peaks that a high-water reset has since forgotten."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024   # Linux reports KiB, macOS bytes
    return max(peak_bytes, _process_peak["bytes"], _high_water_bytes() or 0) / MB


class _RssPoller:
    """Samples RSS in a thread (the fallback where the high-water mark cannot be reset)."""

    def __init__(self) -> None:
        # one handle for every poll: the thread runs beside the timed calls, and a new psutil.Process per
        # reading (rss_bytes) costs 33 us instead of 12 us
        self._process = psutil.Process()
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resbench-rss", daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(RSS_POLL_S):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=1)
        return max(self.peak, self._rss())


class PeakRss:
    """The peak RSS growth over windows: `start()` before a timed slice, `stop()` after it."""

    def __init__(self) -> None:
        self.growth = 0           # the largest (peak during a window - RSS at its start), bytes
        self._start_rss = 0
        self._poller: _RssPoller | None = None
        self.exact = True

    def start(self) -> None:
        self._start_rss = rss_bytes()
        if not _reset_high_water():
            self.exact = False
            self._poller = _RssPoller()

    def stop(self) -> None:
        if self._poller is not None:
            peak = self._poller.stop()
            self._poller = None
        else:
            peak = _high_water_bytes() or rss_bytes()
            _process_peak["bytes"] = max(_process_peak["bytes"], peak)
        self.growth = max(self.growth, peak - self._start_rss)


@dataclass
class CpuFootprint:
    """One backend's RSS account on CPU."""

    before_copy: int = 0      # RSS just before the backend's private model copy
    after_prepare: int = 0    # RSS at the end of its warm-up
    harness_bytes: int = 0    # the harness's buffers among them (the cold-L2 flush buffer)
    calls: PeakRss = field(default_factory=PeakRss)

    def start(self) -> None:
        settle()
        self.before_copy = rss_bytes()

    def prepared(self, harness_bytes: int = 0) -> None:
        settle()
        self.after_prepare = rss_bytes()
        self.harness_bytes = harness_bytes

    @property
    def prepare_bytes(self) -> int:
        return max(self.after_prepare - self.before_copy - self.harness_bytes, 0)

    def figures(self, during: str = "its timed calls") -> dict[str, Any]:
        """The Memory fields of this backend (MB); `during` names the windows `calls` watched."""
        calls = max(self.calls.growth, 0)
        how = ("exact (kernel high-water mark reset per slice)" if self.calls.exact
               else f"sampled every {RSS_POLL_S * 1e3:g} ms")
        return {
            "backend_mb": (self.prepare_bytes + calls) / MB,
            "prepare_mb": self.prepare_bytes / MB,
            "calls_mb": calls / MB,
            "source": ("backend_mb: this backend's own RSS = growth from its prepare (model copy to end of "
                       f"warm-up, incl. libraries it loads first) + peak growth during {during} ({how})"),
        }


# ------------------------------------------------------------------------------------------------ GPU


def graph_pool_free_bytes(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> int:
    """Reserved-but-unallocated bytes of the CUDA graph pools that exist in `after` (a
    torch.cuda.memory_snapshot()) and did not in `before`: the activations a captured graph keeps to
    itself. Its allocated blocks are already counted by memory_allocated, so only the free part is added."""
    old_pools = {tuple(s.get("segment_pool_id", DEFAULT_POOL)) for s in before}
    free = 0
    for segment in after:
        pool = tuple(segment.get("segment_pool_id", DEFAULT_POOL))
        if pool != DEFAULT_POOL and pool not in old_pools:
            free += max(int(segment["total_size"]) - int(segment["allocated_size"]), 0)
    return free


@dataclass(frozen=True)
class GpuAccount:
    """The torch-allocator readings of one backend, in bytes."""

    before_copy: int          # memory_allocated before its private model copy went to the GPU
    after_prepare: int        # memory_allocated at the end of its warm-up
    harness_bytes: int        # buffers of the harness alive at after_prepare (the cold-L2 flush buffer)
    graph_pool_free: int      # graph_pool_free_bytes over its preparation
    call_base: int            # memory_allocated before one measured call
    call_peak: int            # max_memory_allocated during that call (peak stats reset before it)


def gpu_backend_bytes(account: GpuAccount) -> tuple[int, list[str]]:
    """The backend's footprint: what it holds + its graph pools' free part + the peak of one call.
    Each part is clamped at 0 (a backend that freed more than it allocated, e.g. an in-place cast that
    dropped the fp32 copy, holds nothing extra); the notes say when a clamp applied."""
    notes = []
    held = account.after_prepare - account.before_copy - account.harness_bytes
    if held < 0:
        notes.append(f"held memory read {held / MB:.1f} MB (freed more than it allocated): counted as 0")
    transient = account.call_peak - account.call_base
    if transient < 0:
        notes.append(f"one call's peak read {transient / MB:.1f} MB: counted as 0")
    return max(held, 0) + max(account.graph_pool_free, 0) + max(transient, 0), notes


def gpu_source(backend: str) -> str:
    if backend in OUTSIDE_TORCH_ALLOCATOR:
        return (f"backend_mb: none; {backend} allocates outside torch's allocator (its arena / engine memory), "
                "so its allocator figure is not comparable; gpu_process_mb: NVML memory of the whole process")
    return ("backend_mb = peak_allocated_mb: torch allocator bytes this backend holds after prepare (baseline "
            "before its model copy, cold-L2 flush buffer excluded) + free memory of the CUDA graph pools it "
            "created + the peak of one call")


class GpuFootprint:
    """One backend's torch-allocator readings on a CUDA device (the readers around GpuAccount)."""

    def __init__(self, device: Any):
        import torch

        self.torch, self.device = torch, device
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self.before_copy = self.after_prepare = self.harness_bytes = self.graph_pool_free = 0
        self._segments: list[dict[str, Any]] = []

    def _segments_now(self) -> list[dict[str, Any]]:
        return [s for s in self.torch.cuda.memory_snapshot() if s.get("device", self.index) == self.index]

    def start(self) -> None:
        self.torch.cuda.synchronize(self.device)
        self.before_copy = self.torch.cuda.memory_allocated(self.device)
        self._segments = self._segments_now()

    def prepared(self, harness_bytes: int = 0) -> None:
        self.torch.cuda.synchronize(self.device)
        self.after_prepare = self.torch.cuda.memory_allocated(self.device)
        self.harness_bytes = harness_bytes
        self.graph_pool_free = graph_pool_free_bytes(self._segments, self._segments_now())
        self._segments = []

    def account(self, call_base: int, call_peak: int) -> GpuAccount:
        return GpuAccount(self.before_copy, self.after_prepare, self.harness_bytes, self.graph_pool_free,
                          call_base, call_peak)
