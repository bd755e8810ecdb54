"""Timers, warm-up, the stopping rule, and interleaved rounds.

Modes (always named in the row's `timing_mode`):
- `device`: one call per sample; CUDA events around it on GPU, `perf_counter` around call + nothing on
  CPU (CPU calls are synchronous). The input is already on the device; the output stays there.
- `graph` (GPU): UNROLL calls captured in one CUDA graph and replayed; per-call time = replay / UNROLL.
  Launch-free: what a CUDA-graph deployment sees. On CPU it falls back to `device` with a warning.
- `e2e`: host wall clock around host->device copy of a pinned batch, the call, the device->host copy of
  the logits and a synchronize: what a Python caller sees.

Stopping rule per backend: samples are taken in slices of min_time_s / rounds; after each slice the
backend has converged when it has >= min_iters samples, >= min_time_s of measured time and a median CI
half-width <= target_rel_ci. It stops at max_time_s regardless (the row then carries a noise warning).
Backends of one group take their slices in interleaved rounds, alternating the order (ABC, CBA, ...),
so clock or thermal drift hits all of them alike."""

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
COLD_L2_BYTES = 256 << 20  # 256 MiB written between calls in `l2: cold` (> 5x the H200's 50 MB L2)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Sampler:
    """Takes latency samples (ms) of one callable on one input, in one timing mode."""

    def __init__(self, fn: Forward, x: torch.Tensor, mode: str, l2: str):
        self.fn, self.x, self.device = fn, x, x.device
        self.mode = mode if (mode != "graph" or x.is_cuda) else "device"
        self.warnings: list[str] = []
        if mode == "graph" and not x.is_cuda:
            self.warnings.append("timing mode 'graph' needs CUDA; measured in 'device' mode on CPU")
        self._flush = torch.empty(COLD_L2_BYTES, dtype=torch.uint8, device=x.device) if l2 == "cold" else None
        self._graph: torch.cuda.CUDAGraph | None = None
        if self.mode == "e2e":
            self._host_input = x.detach().to("cpu").pin_memory() if x.is_cuda else x.detach().clone()

    def _flush_l2(self) -> None:
        if self._flush is not None:
            self._flush.zero_()

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
                for _ in range(GRAPH_UNROLL):
                    self.fn(self.x)

    def sample(self, count: int) -> list[float]:
        """`count` samples in ms (one per call; in graph mode one per replay of GRAPH_UNROLL calls)."""
        if self.mode == "e2e":
            out = []
            for _ in range(count):
                self._flush_l2()
                synchronize(self.device)
                t0 = time.perf_counter()
                self._call_e2e()
                out.append((time.perf_counter() - t0) * 1e3)
            return out
        if not self.x.is_cuda:
            out = []
            for _ in range(count):
                self._flush_l2()
                t0 = time.perf_counter()
                self.fn(self.x)
                out.append((time.perf_counter() - t0) * 1e3)
            return out
        if self.mode == "graph":
            self._ensure_graph()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(count)]
        for start, end in events:
            self._flush_l2()
            start.record()
            if self._graph is not None:
                self._graph.replay()
            else:
                self.fn(self.x)
            end.record()
        synchronize(self.device)
        per = GRAPH_UNROLL if self._graph is not None else 1
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
    spent_s: float = 0.0          # host wall time spent sampling (includes sync and timer overhead)
    converged: bool = False
    failed: BaseException | None = None

    @property
    def measured_s(self) -> float:
        return sum(self.samples) / 1e3


def has_converged(samples: Sequence[float], cfg: TimingConfig) -> bool:
    return (len(samples) >= cfg.min_iters and sum(samples) / 1e3 >= cfg.min_time_s
            and rel_ci_half_width(samples) <= cfg.target_rel_ci)


def _take_slice(m: Measurement, cfg: TimingConfig, slice_s: float) -> None:
    """Sample for about slice_s of host time (and at least min_iters / rounds calls), in chunks sized from
    the host time per sample seen so far (not the median latency: on a loaded host the mean host cost
    per call can be many times the median, and a chunk sized from the median overshoots the slice)."""
    t0 = time.perf_counter()
    need = -(-cfg.min_iters // cfg.rounds)
    taken = 0
    while True:
        elapsed = time.perf_counter() - t0
        if taken >= need and elapsed >= slice_s:
            break
        spent, count = m.spent_s + elapsed, len(m.samples)
        if count == 0:
            chunk = 1
        else:
            per_sample_s = max(spent / count, 1e-6)
            chunk = int(min(max((slice_s - elapsed) / per_sample_s, 1), 1000))
            chunk = max(chunk, need - taken)
        m.samples.extend(m.sampler.sample(chunk))
        taken += chunk
    m.spent_s += time.perf_counter() - t0


def measure_interleaved(measurements: list[Measurement], cfg: TimingConfig,
                        on_round: Callable[[int], None] | None = None) -> None:
    """Fill every measurement's samples by the stopping rule, in alternating interleaved rounds.
    A backend whose call raises keeps `failed` set and drops out; the others go on."""
    slice_s = max(cfg.min_time_s / cfg.rounds, 1e-3)
    round_index = 0
    while True:
        active = [m for m in measurements if not m.converged and m.failed is None and m.spent_s < cfg.max_time_s]
        if not active:
            break
        order = active if round_index % 2 == 0 else active[::-1]
        for m in order:
            try:
                _take_slice(m, cfg, min(slice_s, max(cfg.max_time_s - m.spent_s, 1e-3)))
            except Exception as exc:  # a backend failing mid-measurement must not lose the others
                m.failed = exc
                continue
            m.converged = round_index + 1 >= cfg.rounds and has_converged(m.samples, cfg)
        round_index += 1
        if on_round is not None:
            on_round(round_index)


def noise_warnings(m: Measurement, cfg: TimingConfig) -> list[str]:
    """The row's warnings when the stopping rule's target was not met."""
    out = []
    if not m.converged:
        rel = rel_ci_half_width(m.samples)
        out.append(f"noisy: median CI half-width {rel:.2%} > target {cfg.target_rel_ci:.2%} after "
                   f"{len(m.samples)} samples ({m.spent_s:.1f} s, max_time_s {cfg.max_time_s:g})")
    return out
