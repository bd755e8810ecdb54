"""Compile the fused kernels a model (or a list of problems) will launch, in parallel worker processes, before
anything launches them: Triton's on-disk cache then serves every later launch, in any process.

Why: a cold Triton cache costs about a second per kernel variant, and tuning compiles every candidate config
of every distinct problem: 96 kernels for ResNet-50 bf16 at batch 1 (split-K candidates and their epilogues;
Triton makes an int argument equal to 1 a constant, so batch 1 is its own specialisation), 41 at batch 32, 135
for batches 1, 32 and 256 together (counted by `--list`). Compiled one after another that is over two minutes
of a GPU session; 14 processes take about a tenth of it.

How: each job is a (launch shape, tile config); a worker builds the launch exactly as the launcher would
(`LaunchPlan`) and calls `JITFunction.warmup` with dtypes in place of tensors (Triton's MockTensor: 16-byte
aligned, like every fresh allocation), so the cache key is the one a real launch computes. Needs a GPU (Triton
asks the driver for the target); `--list` only counts, on any machine.

    python -m kernels.precompile --model resnet50 --batches 1 32 256 --dtypes bf16 [--workers 14] [--list]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from kernels.configs import HOPPER_SM_COUNT, TileConfig, candidate_configs

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
Job = tuple  # (LaunchShape, TileConfig)


def _launcher():
    # the module, not the `kernels.conv_bn_act` function that kernels/__init__.py exports under that name
    return importlib.import_module("kernels.conv_bn_act")


def model_launches(model: str = "resnet50", image_size: int = 224) -> list:
    """The LaunchShapes of one batch-1 forward of `fuse_model(model)`, recorded on CPU (PyTorch fallback)."""
    from kernels.fuse import fuse_model
    from resbench.models import ModelSpec, build_model

    fused = fuse_model(build_model(ModelSpec(model)).eval())
    with torch.no_grad(), _launcher().recording_launches() as launches:
        saved = os.environ.pop("TRITON_INTERPRET", None)  # the fallback, not the interpreter: ~0.1 s
        try:
            fused(torch.randn(1, 3, image_size, image_size))
        finally:
            if saved is not None:
                os.environ["TRITON_INTERPRET"] = saved
    return launches


def retarget(launches: Iterable, batch: int, dtype: str) -> list:
    """The same launches at another batch size and dtype (fp32 rows run exact dots, tf32 rows TF32)."""
    precision = "tf32" if dtype != "fp32" else "ieee"
    out = []
    for launch in launches:
        problem = dataclasses.replace(launch.problem, N=batch, dtype=DTYPES[dtype], input_precision=precision)
        out.append(dataclasses.replace(launch, problem=problem))
    return out


def tuning_jobs(launches: Iterable, sm_count: int = HOPPER_SM_COUNT) -> list[Job]:
    """(launch, config) for every candidate the tuner will try, one per distinct compiled kernel."""
    jobs: dict[tuple, Job] = {}
    for launch in launches:
        for config in candidate_configs(launch.problem, sm_count):
            jobs.setdefault(compile_key(launch, config), (launch, config))
    return list(jobs.values())


def _specialisation(value: int) -> str:
    """How Triton specialises an int argument: 1 becomes a constant, multiples of 16 are marked divisible."""
    return "1" if value == 1 else "16" if value % 16 == 0 else ""


def compile_key(launch, config: TileConfig) -> tuple:
    """What decides the compiled kernels of one launch (as Triton's cache key does): dtypes, constexprs,
    options and the specialisation of every int argument."""
    plan = _launcher().LaunchPlan(launch.problem, config, launch.stride_ds, launch.h_ds, launch.w_ds, False,
                                  traceable=False)
    main = (str(launch.problem.dtype), tuple(sorted((k, str(v)) for k, v in plan.main_constexprs.items())),
            tuple(_specialisation(v) for v in plan.sizes))
    if plan.split_k == 1:
        return main, None
    epilogue = tuple(sorted((k, str(v)) for k, v in plan.epilogue_constexprs.items()))
    return main, (main[0], epilogue, _specialisation(launch.problem.M), _specialisation(launch.problem.K))


def compile_count(jobs: Sequence[Job]) -> int:
    """Distinct kernels the jobs compile: main kernels plus split-K epilogues (both shared between jobs)."""
    keys = [compile_key(*job) for job in jobs]
    return len({main for main, _ in keys}) + len({epilogue for _, epilogue in keys if epilogue is not None})


def warm(job: Job) -> tuple[str, float, str | None]:
    """Compile one job's kernels into Triton's cache (in a worker); (label, seconds, error or None)."""
    launch, config = job
    conv = _launcher()
    plan = conv.LaunchPlan(launch.problem, config, launch.stride_ds, launch.h_ds, launch.w_ds, False,
                           traceable=False)
    dtype = launch.problem.dtype
    out_dtype = torch.float32 if plan.split_k > 1 else dtype
    label = f"{launch.problem.key()} {config.label()}"
    start = time.perf_counter()
    try:
        fp32 = torch.float32  # scale, shift, prologue scale, prologue shift
        conv._conv_bn_act_kernel.warmup(dtype, dtype, fp32, fp32, fp32, fp32, dtype, dtype, dtype, out_dtype,
                                        *plan.sizes, grid=plan.grid, **plan.main_constexprs)
        if plan.split_k > 1:
            conv._split_k_epilogue_kernel.warmup(torch.float32, torch.float32, dtype, dtype, launch.problem.M,
                                                 launch.problem.K, grid=plan.epilogue_grid,
                                                 **plan.epilogue_constexprs)
    except Exception as exc:  # a config that does not compile is the tuner's to reject; report it here
        return label, time.perf_counter() - start, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    return label, time.perf_counter() - start, None


def precompile(jobs: Sequence[Job], workers: int, progress=print) -> dict[str, float]:
    """Compile every job in `workers` spawned processes; returns {"jobs", "failed", "seconds", "compile_s"}."""
    start = time.perf_counter()
    failed, compile_s = 0, 0.0
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(warm, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            label, seconds, error = future.result()
            compile_s += seconds
            if error:
                failed += 1
                progress(f"  {label}: {error}")
            if done % 20 == 0 or done == len(futures):
                progress(f"  {done}/{len(futures)} compiled ({time.perf_counter() - start:.0f} s)")
    return {"jobs": len(jobs), "failed": failed, "seconds": round(time.perf_counter() - start, 1),
            "compile_s": round(compile_s, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.precompile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--dtypes", nargs="+", default=["bf16"], choices=sorted(DTYPES))
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--list", action="store_true", help="count the kernels, compile nothing (any machine)")
    args = parser.parse_args(argv)
    launches = model_launches(args.model, args.image_size)
    jobs = tuning_jobs(launch for batch in args.batches for dtype in args.dtypes
                       for launch in retarget(launches, batch, dtype))
    print(f"{args.model} at {args.image_size} px, batches {args.batches}, {' '.join(args.dtypes)}: "
          f"{len(launches)} fused launches per forward, {compile_count(jobs)} kernels to compile")
    if args.list:
        return 0
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing compiled (Triton asks the driver for the target); use --list", file=sys.stderr)
        return 2
    stats = precompile(jobs, args.workers)
    print(f"compiled {stats['jobs'] - stats['failed']} of {stats['jobs']} jobs with {args.workers} workers in "
          f"{stats['seconds']} s ({stats['compile_s']} s of compiling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
