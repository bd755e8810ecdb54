"""Every autotune config compiles ahead of time for Hopper (sm_90) on this CPU-only machine, with no register
spills, shared memory within the 227 KB budget, the wgmma tensor-core path and one pipelined loop per GEMM
(notes/kernels.md §17). Compile-time evidence only: a miscompile is a GPU cross-check's job (test_gpu.py).

One representative (the heaviest) shape class per config; every shape class once on the 4-warp config with
the most registers (kernels/aot_check.py `matrix`), and the prologue / grouped variants (DenseNet, pre-activation
ResNet, ResNeXt) on every 4-warp 16-bit config. The 51 compiles run in two worker processes (about 75 s on 2
cores). `scripts/check-sm90-triton36.sh` runs this file under Triton 3.6.0, the H200 image's version."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from kernels import aot_check
from kernels.configs import (
    CONFIGS_16BIT,
    CONFIGS_16BIT_1X1_8WARPS,
    CONFIGS_FLAT_16BIT,
    CONFIGS_FLAT_FP32,
    CONFIGS_FP32,
    CONFIGS_FP32_IEEE,
)

JOBS = aot_check.matrix()

USES_INTERPRETER = False  # tests/kernels/conftest.py: no kernel runs on CPU here


def _tools_or_skip() -> None:
    for name in ("ptxas", "cuobjdump"):
        try:
            aot_check.tool(name)
        except FileNotFoundError as exc:
            pytest.skip(str(exc))


@pytest.fixture(scope="module")
def reports() -> dict[int, aot_check.CompileReport]:
    _tools_or_skip()
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        conv = list(pool.map(aot_check.run_job, JOBS))
        epilogue = pool.submit(aot_check.compile_split_k_epilogue, torch.float16).result()
    return {**dict(enumerate(conv)), -1: epilogue}


def test_matrix_covers_every_autotune_config_and_dtype():
    covered = {(config, dtype) for config, dtype, _, _ in JOBS}
    for config in CONFIGS_16BIT + CONFIGS_16BIT_1X1_8WARPS + CONFIGS_FLAT_16BIT:
        assert {(config, torch.float16), (config, torch.bfloat16)} <= covered
    for config in CONFIGS_FP32 + CONFIGS_FP32_IEEE + CONFIGS_FLAT_FP32:
        assert (config, torch.float32) in covered
    assert {shape for _, _, shape, _ in JOBS} == set(aot_check.SHAPE_CLASSES)


@pytest.mark.parametrize("index", range(len(JOBS)),
                         ids=[f"{c.label()}-{str(d).removeprefix('torch.')}-{s.name}-{p}" for c, d, s, p in JOBS])
def test_config_compiles_for_sm90_without_spills(reports, index):
    config, dtype, shape, precision = JOBS[index]
    report = reports[index]
    loops = 2 if shape.has_downsample else 1
    problems = aot_check.problems_found(report, expected_loops=loops)
    assert not problems, f"{report.row()}: {problems}"
    # The gathered stem loads A element-wise (no 16-byte rows for cp.async): only B is async-copied there.
    copies_per_stage = 1 if shape.flat_rsc else 2
    assert report.async_copies >= copies_per_stage * config.num_stages * loops, report.row()
    if precision == "ieee":
        assert not report.wgmma  # exact fp32 runs on the FMA units, not the tensor cores
    else:
        assert report.wgmma, report.row()
    if dtype == torch.bfloat16:
        assert report.rounds_bf16_to_nearest, report.row()


def test_split_k_epilogue_compiles(reports):
    report = reports[-1]
    assert aot_check.problems_found(report, expected_loops=1) == [], report.row()
