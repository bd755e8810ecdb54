"""pytest-benchmark microbenchmarks (GPU only): the fused kernels and one ResNet block per backend.

Run them on a GPU machine, save a baseline, and gate later runs against it:

    pytest tests/bench --benchmark-only --benchmark-save=base
    pytest tests/bench --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=median:5%

Every benchmark here times with `cuda_timer` (a synchronize before reading the clock): a round of
ITERATIONS asynchronous launches is timed as the GPU executes it and pytest-benchmark divides by
ITERATIONS, so a sample is the per-call time of a stream of calls, launch overhead included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

ROUNDS = 30          # pytest-benchmark rounds (samples) per benchmark
ITERATIONS = 20      # calls per round
WARMUP_ROUNDS = 3    # untimed rounds first (autotuning, lazy compilation, cuDNN algorithm search)
HERE = Path(__file__).resolve().parent


def cuda_timer() -> float:
    """perf_counter once the GPU has finished everything queued so far."""
    torch.cuda.synchronize()
    return time.perf_counter()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every benchmark under tests/bench the CUDA timer (pytest-benchmark's `timer` marker option)."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.benchmark(timer=cuda_timer))


@pytest.fixture
def run_benchmark(benchmark):
    """`run_benchmark(fn, x, group=..., **extra_info)`: time fn(x), ROUNDS x ITERATIONS calls."""

    def run(fn, x: torch.Tensor, *, group: str, **extra_info) -> None:
        benchmark.group = group
        benchmark.extra_info.update(extra_info)
        with torch.inference_mode():
            benchmark.pedantic(fn, args=(x,), rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=WARMUP_ROUNDS)

    return run
