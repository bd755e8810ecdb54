"""Autotuning of the fused convolution on a GPU: time every candidate configuration of a problem once, keep
the fastest whose output matches a reference, remember it per (GPU, problem key).

Tuning happens only inside `with kernels.autotuning():`, on real CUDA tensors, outside CUDA-graph capture and
outside tracing; everywhere else a launch uses the tuned winner or the untuned default (kernels/configs.py).
So a backend tunes in `prepare` by running one forward inside the block, before any warm-up or capture.
Triton's own `@triton.autotune` is not used: it cannot run on a CPU-only host (notes/kernels.md §16), it would time
inside graph capture, and a split-K candidate needs a workspace and a second kernel.

Every candidate is checked against an fp64 reference before it is timed, per element with the one-rounding bound
of kernels/accuracy.py plus a rel-L2 ceiling: a config that compiles to wrong code (the num_warps=8 hazard,
notes/kernels.md §13) or skips work is rejected, never chosen. A candidate that fails to compile, to assemble
(PTXASError) or to launch is rejected too; the others are still tried.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from kernels.accuracy import acceptance_error
from kernels.configs import ConvProblem, TileConfig, candidate_configs, record_tuned


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


def cross_check_error(out: torch.Tensor, reference: torch.Tensor, magnitude: torch.Tensor,
                      problem: ConvProblem) -> str | None:
    """None when `out` is a correct output of `problem` (kernels/accuracy.py); else why not."""
    tf32 = problem.dtype == torch.float32 and problem.input_precision == "tf32"
    return acceptance_error(out, reference, magnitude, problem.reduction, tf32=tf32, label=problem.key())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def choose(candidates: Iterable[TileConfig], run: Callable[[TileConfig], torch.Tensor],
           check: Callable[[torch.Tensor], str | None], time_ms: Callable[[TileConfig], float],
           ) -> tuple[TileConfig | None, dict[str, float], dict[str, str]]:
    """The fastest candidate whose output passes `check`: (winner or None, timings, rejections by label).

    `run(config)` launches once and returns the output (synchronized); any exception it raises (a compile
    error, OutOfResources, PTXASError, a launch error) rejects that candidate only."""
    timings: dict[str, float] = {}
    rejected: dict[str, str] = {}
    best: tuple[float, TileConfig] | None = None
    for config in candidates:
        try:
            out = run(config)
        except Exception as exc:  # one bad candidate must not sink the row (notes/gpu-audit.md, item 10)
            rejected[config.label()] = _first_line(exc)
            continue
        why = check(out)
        if why is not None:
            rejected[config.label()] = why
            continue
        try:
            ms = time_ms(config)
        except Exception as exc:
            rejected[config.label()] = _first_line(exc)
            continue
        timings[config.label()] = ms
        if best is None or ms < best[0]:
            best = (ms, config)
    return (None if best is None else best[1]), timings, rejected


def tune(problem: ConvProblem, device: torch.device, launch: Callable[[TileConfig, torch.Tensor], None],
         reference: torch.Tensor, magnitude: torch.Tensor, out: torch.Tensor) -> TileConfig:
    """Time every candidate for `problem` (writing into `out`), keep the fastest correct one.

    `reference` and `magnitude` are fp64 (`kernels.conv_bn_act._tuning_reference`)."""
    import triton.testing

    settings = _ACTIVE.get()
    key = problem.key()

    def run(config: TileConfig) -> torch.Tensor:
        out.fill_(float("nan"))  # an element the kernel does not write fails the check
        launch(config, out)
        torch.cuda.synchronize(device)
        return out

    def time_ms(config: TileConfig) -> float:
        return triton.testing.do_bench(lambda: launch(config, out), warmup=settings.warmup_ms, rep=settings.rep_ms,
                                       return_mode="median")

    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    winner, timings, rejected = choose(candidate_configs(problem, sm_count), run,
                                       lambda result: cross_check_error(result, reference, magnitude, problem),
                                       time_ms)
    settings.log.timings_ms[key] = timings
    settings.log.rejected[key] = rejected
    if winner is None:
        raise RuntimeError(f"no configuration of the fused conv computed {key} correctly: {rejected}")
    record_tuned(problem, device, winner)
    settings.log.winners[key] = winner
    return winner
