"""Autotuning of the fused convolution on a GPU: time every candidate configuration of a problem once, keep
the fastest whose output matches a reference, remember it per (GPU, problem key).

Tuning happens only inside `with kernels.autotuning():`, on real CUDA tensors, outside CUDA-graph capture and
outside tracing; everywhere else a launch uses the tuned winner or the untuned default (kernels/configs.py).
So a backend tunes in `prepare` by running one forward inside the block, before any warm-up or capture.
Triton's own `@triton.autotune` is not used: it cannot run on a CPU-only host (notes/kernels.md §16), it would time
inside graph capture, and a split-K candidate needs a workspace and a second kernel.

Every candidate is cross-checked against the fp32 PyTorch reference (TF32 off) before it is timed; a config
that compiles to wrong code (the num_warps=8 hazard, notes/kernels.md §13) is rejected, never chosen.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from kernels.configs import ConvProblem, TileConfig, candidate_configs, record_tuned

# Cross-check tolerance: the eps of the operand format (tf32 and fp16 share 10 mantissa bits).
_EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-10}


@dataclass
class TuningLog:
    """What one `autotuning()` block did: per problem key, the winner and every candidate's outcome."""

    winners: dict[str, TileConfig] = field(default_factory=dict)
    timings_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Settings:
    warmup_ms: int
    rep_ms: int
    log: TuningLog


_ACTIVE: contextvars.ContextVar[_Settings | None] = contextvars.ContextVar("kernels_autotuning", default=None)


@contextlib.contextmanager
def autotuning(*, warmup_ms: int = 5, rep_ms: int = 25) -> Iterator[TuningLog]:
    """Inside this block, the first CUDA launch of each new problem times its candidates and keeps the best."""
    log = TuningLog()
    token = _ACTIVE.set(_Settings(warmup_ms, rep_ms, log))
    try:
        yield log
    finally:
        _ACTIVE.reset(token)


def tuning_active() -> bool:
    return _ACTIVE.get() is not None


def cross_check_error(out: torch.Tensor, reference: torch.Tensor, problem: ConvProblem) -> str | None:
    """None when `out` matches `reference` within the format's rounding; else why not."""
    if out.shape != reference.shape:
        return f"shape {tuple(out.shape)} != {tuple(reference.shape)}"
    diff = (out.float() - reference.float()).abs()
    if not torch.isfinite(diff).all():
        return "non-finite values where the reference is finite"
    scale = max(1.0, reference.float().abs().max().item())
    bound = 10 * _EPS[problem.dtype] * math.sqrt(problem.reduction) * scale
    worst = diff.max().item()
    return None if worst <= bound else f"max error {worst:.3g} > bound {bound:.3g}"


def tune(problem: ConvProblem, device: torch.device, launch: Callable[[TileConfig, torch.Tensor], None],
         reference: torch.Tensor, out: torch.Tensor) -> TileConfig:
    """Time every candidate for `problem` (writing into `out`), keep the fastest correct one."""
    import triton.testing
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    settings = _ACTIVE.get()
    key = problem.key()
    timings: dict[str, float] = {}
    rejected: dict[str, str] = {}
    best: tuple[float, TileConfig] | None = None
    for config in candidate_configs(problem, torch.cuda.get_device_properties(device).multi_processor_count):
        try:
            out.fill_(float("nan"))
            launch(config, out)
            torch.cuda.synchronize(device)
        except (OutOfResources, CompilationError) as exc:
            rejected[config.label()] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        why = cross_check_error(out, reference, problem)
        if why is not None:
            rejected[config.label()] = why
            continue
        ms = triton.testing.do_bench(lambda config=config: launch(config, out), warmup=settings.warmup_ms,
                                     rep=settings.rep_ms, return_mode="median")
        timings[config.label()] = ms
        if best is None or ms < best[0]:
            best = (ms, config)
    settings.log.timings_ms[key] = timings
    settings.log.rejected[key] = rejected
    if best is None:
        raise RuntimeError(f"no configuration of the fused conv computed {key} correctly: {rejected}")
    record_tuned(problem, device, best[1])
    settings.log.winners[key] = best[1]
    return best[1]
