"""Does resbench measure what it says? (GPU only; issue 7's validation, repeatable.)

On the same callables in the same process, resbench's `device`-mode median must agree within 3% with
`triton.testing.do_bench(..., return_mode="median")` (which flushes L2 before every call, so resbench runs
with `l2: cold` for that comparison) and with `torch.utils.benchmark.Timer.blocked_autorange` (warm L2,
host wall clock over blocks of calls); and two back-to-back resbench measurements of one case must agree
within 1%. By default one shape, eager ResNet-50 in bf16 at batch 32 (about 40 s with start-up: the budget of
scripts/gpu-check.sh, step b); RESBENCH_HARNESS_FULL=1 widens it to eager and compiled at batch 1, 32 and 256
(18 measurements and a compile per batch: about 10 minutes, a session of its own).

Where a comparison disagrees, the failure message carries all three numbers; a wall-clock timer reading
higher than CUDA events at batch 1 is launch overhead the events do not see, and is reported as such.

    RESBENCH_VALIDATION_OUT=reports/<gpu>/harness-validation.json python -m pytest tests/gpu -m gpu -s

writes every measurement to that file (commit it under reports/)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from resbench.models import ModelSpec, build_model
from resbench.suite import TimingConfig
from resbench.timing import Measurement, Sampler, measure_interleaved, warmup

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

AGREEMENT = 0.03        # resbench vs do_bench / blocked_autorange
REPEATABILITY = 0.01    # resbench vs resbench, back to back
FULL = os.environ.get("RESBENCH_HARNESS_FULL", "") not in ("", "0")
BATCHES = (1, 32, 256) if FULL else (32,)
BACKENDS = ("eager", "compile") if FULL else ("eager",)
# at batch 32 (~2-4 ms a call) 1 s holds hundreds of samples; the stopping rule ends a row by 5 s at the latest
CONFIG = dict(warmup_s=0.5, min_iters=50, min_time_s=1.0, max_time_s=5.0, target_rel_ci=0.005, rounds=1)
DO_BENCH_MS = dict(warmup=200, rep=1000)
AUTORANGE_S = 1.0
RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    model = build_model(ModelSpec("resnet50"))
    return model.to("cuda", torch.bfloat16).to(memory_format=torch.channels_last)


@pytest.fixture(scope="module", params=BACKENDS)
def forward(request, resnet50):
    torch.backends.cudnn.benchmark = True
    fn = resnet50 if request.param == "eager" else torch.compile(resnet50)
    return request.param, fn


def batch(size: int) -> torch.Tensor:
    x = torch.randn(size, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def resbench_median(fn, x: torch.Tensor, l2: str) -> float:
    sampler = Sampler(fn, x, "device", l2)
    warmup(sampler, CONFIG["warmup_s"])
    m = Measurement("validation", sampler)
    measure_interleaved([m], TimingConfig(**CONFIG, l2=l2))
    return statistics.median(m.samples)


@torch.no_grad()
def do_bench_median(fn, x: torch.Tensor) -> float:
    import triton.testing

    return float(triton.testing.do_bench(lambda: fn(x), **DO_BENCH_MS, return_mode="median"))


@torch.no_grad()
def blocked_autorange_median(fn, x: torch.Tensor) -> float:
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads())  # default: 1
    return timer.blocked_autorange(min_run_time=AUTORANGE_S).median * 1e3


def record(**fields) -> None:
    RESULTS.append(fields)
    path = os.environ.get("RESBENCH_VALIDATION_OUT")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                          "results": RESULTS}, indent=1))


def rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.mark.parametrize("size", BATCHES)
def test_agrees_with_do_bench_under_the_same_l2_policy(forward, size: int) -> None:
    name, fn = forward
    x = batch(size)
    fn(x)  # compile / cuDNN autotune before any timer
    ours, theirs = resbench_median(fn, x, "cold"), do_bench_median(fn, x)
    record(check="do_bench", backend=name, batch=size, l2="cold", resbench_ms=ours, other_ms=theirs,
           rel_diff=rel(ours, theirs))
    assert rel(ours, theirs) <= AGREEMENT, f"{name} b{size}: resbench {ours:.4f} ms vs do_bench {theirs:.4f} ms"


@pytest.mark.parametrize("size", BATCHES)
def test_agrees_with_blocked_autorange(forward, size: int) -> None:
    name, fn = forward
    x = batch(size)
    fn(x)
    ours, theirs = resbench_median(fn, x, "warm"), blocked_autorange_median(fn, x)
    record(check="blocked_autorange", backend=name, batch=size, l2="warm", resbench_ms=ours, other_ms=theirs,
           rel_diff=rel(ours, theirs))
    assert rel(ours, theirs) <= AGREEMENT, (
        f"{name} b{size}: resbench (CUDA events) {ours:.4f} ms vs blocked_autorange (host wall clock) "
        f"{theirs:.4f} ms; a wall clock above the events at small batch is launch overhead")


@pytest.mark.parametrize("size", BATCHES)
def test_back_to_back_repeats_agree(forward, size: int) -> None:
    name, fn = forward
    x = batch(size)
    fn(x)
    first, second = resbench_median(fn, x, "warm"), resbench_median(fn, x, "warm")
    record(check="repeat", backend=name, batch=size, l2="warm", resbench_ms=first, other_ms=second,
           rel_diff=rel(second, first))
    assert rel(second, first) <= REPEATABILITY, f"{name} b{size}: {first:.4f} ms then {second:.4f} ms"
