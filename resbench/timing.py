"""Timers, warm-up, the stopping rule, and interleaved rounds.

Modes (always named in the row's `timing_mode`):
- `device`: one call per sample; CUDA events around it on GPU, `perf_counter` around call + nothing on
  CPU (CPU calls are synchronous). The input is already on the device; the output stays there.
- `graph` (GPU): UNROLL calls captured in one CUDA graph and replayed; per-call time = replay / UNROLL.
  Launch-free: what a CUDA-graph deployment sees. On CPU it falls back to `device` with a warning. With
  `l2: cold` the graph holds one call, so that every timed call follows a flush (an unrolled replay would
  time 1 cold call and 9 warm ones under a "cold" label); each sample then includes one graph launch.
- `e2e`: host wall clock around host->device copy of a pinned batch, the call, the device->host copy of
  the logits and a synchronize: what a Python caller sees.

Stopping rule per backend: samples are taken in slices of min_time_s / rounds; after each slice (from
the last round on) the backend has converged when it has >= min_iters samples, >= min_time_s of measured
time and a median CI half-width <= target_rel_ci. It stops once max_time_s of host time has gone into
sampling it (timer overhead and cold-L2 flushes included) regardless: max_time_s is a cap, no call starts
after it (only the call running when it ends finishes), and every backend gets at least one sample. A row
that then misses the target carries a noise warning naming what it missed and how many samples it got.
Backends of one group take their slices in interleaved rounds, alternating the order (ABC, CBA, ...),
so clock or thermal drift hits all of them alike. A caller may veto a slice after the fact
(`accept_slice`, e.g. GPU telemetry saw the SM clock below 75% of its default during it): the slice's
samples move to `Measurement.discarded`, the backend pauses CLOCK_RECOVERY_S, and sampling goes on
(nvbench's throttle rule; measurement.md 4.6).

L2 (`timing.l2`): `warm` leaves caches as the previous call left them (weights of small ResNets stay in
the H200's 60 MB L2); `cold` writes a buffer of at least COLD_L2_BYTES and 4x the device's L2 before every
timed call, outside the timed region, so each sample starts with no model state in cache. On the GPU the
host then waits for the flush (untimed) before recording the start event: otherwise the host queues the
call's first kernels while the ~60 us flush runs, and a launch-bound call reads faster cold than warm
(notes/gpu-audit.md, item 13; `triton.testing.do_bench` has the same artifact)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from resbench.stats import rel_ci_half_width
from resbench.suite import TimingConfig

Forward = Callable[[torch.Tensor], torch.Tensor]

WARMUP_MIN_ITERS = 10     # and at least warmup_s (trtexec: 200 ms; optimum-benchmark: 10 runs)
WARMUP_CAP_S = 30.0       # a warm-up never runs longer than this
GRAPH_UNROLL = 10         # calls per captured graph in `graph` mode
COLD_L2_BYTES = 256 << 20  # at least 256 MiB written between calls in `l2: cold` (4.3x the H200's 60 MB L2)
COLD_L2_MULTIPLE = 4       # ... and at least 4x the device's L2 (torch reports 60 MB on the H200)
CLOCK_RECOVERY_S = 0.05   # pause after a discarded slice before sampling again (nvbench's default)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cold_l2_bytes(device: torch.device) -> int:
    """Bytes the cold-L2 flush writes on `device`: COLD_L2_BYTES, or COLD_L2_MULTIPLE x its L2 if larger."""
    if device.type != "cuda":
        return COLD_L2_BYTES
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
    return max(COLD_L2_BYTES, COLD_L2_MULTIPLE * l2)


class Sampler:
    """Takes latency samples (ms) of one callable on one input, in one timing mode."""

    def __init__(self, fn: Forward, x: torch.Tensor, mode: str, l2: str):
        self.fn, self.x, self.device = fn, x, x.device
        self.mode = mode if (mode != "graph" or x.is_cuda) else "device"
        self.warnings: list[str] = []
        if mode == "graph" and not x.is_cuda:
            self.warnings.append("timing mode 'graph' needs CUDA; measured in 'device' mode on CPU")
        # l2 cold: written before every timed call, outside the timed region
        self.flush_buffer = (torch.empty(cold_l2_bytes(x.device), dtype=torch.uint8, device=x.device)
                             if l2 == "cold" else None)
        self._graph: torch.cuda.CUDAGraph | None = None
        self.unroll = 1 if self.flush_buffer is not None else GRAPH_UNROLL  # calls per captured graph
        if self.mode == "e2e":
            self._host_input = x.detach().to("cpu").pin_memory() if x.is_cuda else x.detach().clone()

    def _flush_l2(self) -> None:
        if self.flush_buffer is not None:
            self.flush_buffer.zero_()

    def _call_e2e(self) -> None:
        x = self._host_input.to(self.device, non_blocking=True)
        y = self.fn(x)
        y.to("cpu")
        synchronize(self.device)

    def _ensure_graph(self) -> None:
        if self._graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(self.x)
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                for _ in range(self.unroll):
                    self.fn(self.x)

    def sample(self, count: int, deadline: float | None = None) -> list[float]:
        """`count` samples in ms (one per call; in graph mode one per replay of `unroll` calls). Timed on the
        host clock (CPU, e2e), the chunk also ends at `deadline` (a perf_counter time), after at least one
        sample: calls that slow down mid-chunk no longer outlast max_time_s (a chunk planned at 1 ms a call
        ran on for seconds when the calls turned 50 ms). CUDA calls are queued at once: the chunk size,
        planned within the budget, is their bound."""
        if self.mode == "e2e" or not self.x.is_cuda:
            call = self._call_e2e if self.mode == "e2e" else lambda: self.fn(self.x)
            out = []
            for _ in range(count):
                self._flush_l2()
                if self.mode == "e2e":
                    synchronize(self.device)
                t0 = time.perf_counter()
                call()
                t1 = time.perf_counter()
                out.append((t1 - t0) * 1e3)
                if deadline is not None and t1 >= deadline:
                    break
            return out
        if self.mode == "graph":
            self._ensure_graph()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(count)]
        for start, end in events:
            if self.flush_buffer is not None:
                self._flush_l2()
                synchronize(self.device)  # untimed: the call's launches start after the flush (see above)
            start.record()
            if self._graph is not None:
                self._graph.replay()
            else:
                self.fn(self.x)
            end.record()
        synchronize(self.device)
        per = self.unroll if self._graph is not None else 1
        return [start.elapsed_time(end) / per for start, end in events]


def warmup(sampler: Sampler, warmup_s: float) -> int:
    """Run until >= warmup_s and >= WARMUP_MIN_ITERS calls (capped at WARMUP_CAP_S); return the calls."""
    t0, calls = time.perf_counter(), 0
    while True:
        sampler.sample(1)
        calls += 1
        elapsed = time.perf_counter() - t0
        if (elapsed >= warmup_s and calls >= WARMUP_MIN_ITERS) or elapsed >= WARMUP_CAP_S:
            return calls


@dataclass
class Measurement:
    """Samples and state of one backend during interleaved measurement."""

    label: str
    sampler: Sampler
    samples: list[float] = field(default_factory=list)
    discarded: list[float] = field(default_factory=list)   # samples of slices the caller vetoed
    spent_s: float = 0.0          # host wall time spent sampling (includes sync and timer overhead)
    converged: bool = False
    failed: BaseException | None = None

    @property
    def measured_s(self) -> float:
        return sum(self.samples) / 1e3


def has_converged(samples: Sequence[float], cfg: TimingConfig) -> bool:
    return (len(samples) >= cfg.min_iters and sum(samples) / 1e3 >= cfg.min_time_s
            and rel_ci_half_width(samples) <= cfg.target_rel_ci)


def _take_slice(m: Measurement, cfg: TimingConfig, slice_s: float, budget_s: float) -> list[float]:
    """Sample for about slice_s of host time (and at least min_iters / rounds calls, while the backend's
    remaining max_time_s budget `budget_s` lasts), in chunks sized from the host time per sample seen so
    far (not the median latency: on a loaded host the mean host cost per call can be many times the
    median, and a chunk sized from the median overshoots the slice). max_time_s is a cap: once the budget
    is gone no further call starts, whatever min_iters asks (a 10 s call under max_time_s 2 gives one
    sample, not min_iters / rounds calls that outlast case_timeout_s). Returns the slice's samples (at
    least one); the caller decides whether they are kept."""
    t0 = time.perf_counter()
    need = -(-cfg.min_iters // cfg.rounds)
    taken: list[float] = []
    while True:
        elapsed = time.perf_counter() - t0
        if taken and (elapsed >= budget_s or (len(taken) >= need and elapsed >= slice_s)):
            break
        spent, count = m.spent_s + elapsed, len(m.samples) + len(m.discarded) + len(taken)
        if count == 0:
            chunk = 1
        else:
            per_sample_s = max(spent / count, 1e-6)
            chunk = int(min(max((slice_s - elapsed) / per_sample_s, 1), 1000))
            chunk = max(chunk, need - len(taken))
            chunk = max(1, min(chunk, int((budget_s - elapsed) / per_sample_s)))  # never plan past the budget
        taken.extend(m.sampler.sample(chunk, deadline=t0 + budget_s))
    m.spent_s += time.perf_counter() - t0
    return taken


def measure_interleaved(measurements: list[Measurement], cfg: TimingConfig,
                        on_round: Callable[[int], None] | None = None, *,
                        on_slice: Callable[[Measurement], None] | None = None,
                        accept_slice: Callable[[Measurement, float, float], bool] | None = None) -> None:
    """Fill every measurement's samples by the stopping rule, in alternating interleaved rounds.
    A backend whose call raises keeps `failed` set and drops out; the others go on.

    `on_slice(m)` is called before each slice (progress, telemetry labels, a worker's watchdog);
    `accept_slice(m, t0, t1)` after it, with the slice's perf_counter bounds: False discards the slice."""
    slice_s = max(cfg.min_time_s / cfg.rounds, 1e-3)
    round_index = 0
    while True:
        active = [m for m in measurements
                  if not m.converged and m.failed is None and m.spent_s < cfg.max_time_s]
        if not active:
            break
        order = active if round_index % 2 == 0 else active[::-1]
        for m in order:
            if on_slice is not None:
                on_slice(m)
            t0 = time.perf_counter()
            try:
                budget = max(cfg.max_time_s - m.spent_s, 1e-3)
                taken = _take_slice(m, cfg, min(slice_s, budget), budget)
            except Exception as exc:  # a backend failing mid-measurement must not lose the others
                m.failed = exc
                continue
            if accept_slice is None or accept_slice(m, t0, time.perf_counter()):
                m.samples.extend(taken)
            else:
                m.discarded.extend(taken)
                time.sleep(CLOCK_RECOVERY_S)
            m.converged = round_index + 1 >= cfg.rounds and has_converged(m.samples, cfg)
        round_index += 1
        if on_round is not None:
            on_round(round_index)
    for m in measurements:  # out of time before `rounds` rounds, yet the target met: not noisy
        if m.failed is None and not m.converged:
            m.converged = has_converged(m.samples, cfg)


DISCARD_WARN_FRACTION = 0.05  # flag a row when more than this share of its samples was discarded (4.6)


def noise_warnings(m: Measurement, cfg: TimingConfig) -> list[str]:
    """The row's warnings when the stopping rule's target was not met, or too many samples were discarded."""
    out = []
    if not m.converged:
        missed = []
        rel = rel_ci_half_width(m.samples)
        if rel > cfg.target_rel_ci:
            missed.append(f"median CI half-width {rel:.2%} > target {cfg.target_rel_ci:.2%}")
        if len(m.samples) < cfg.min_iters:
            missed.append(f"{len(m.samples)} samples < min_iters {cfg.min_iters}")
        if m.measured_s < cfg.min_time_s:
            missed.append(f"{m.measured_s:.2f} s measured < min_time_s {cfg.min_time_s:g}")
        out.append(f"noisy: {'; '.join(missed)} when max_time_s ran out ({len(m.samples)} samples, "
                   f"{m.spent_s:.1f} s of sampling incl. overhead)")
    total = len(m.samples) + len(m.discarded)
    if total and len(m.discarded) / total > DISCARD_WARN_FRACTION:
        out.append(f"throttled: {len(m.discarded)} of {total} samples ({len(m.discarded) / total:.0%}) "
                   f"discarded because the SM clock fell below 75% of its default")
    return out
