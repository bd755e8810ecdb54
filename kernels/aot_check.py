"""Ahead-of-time compile of the fused kernels for Hopper (sm_90) on any machine, GPU or not.

`triton.compile` targets an architecture without a device; the Triton wheel ships `ptxas` and `cuobjdump`
(`triton/backends/nvidia/bin/`), so register count, spills (STACK/LOCAL bytes) and shared memory are read
from the real cubin. The JIT's runtime specialisation is mirrored (16-byte-aligned pointers, channel counts
divisible by 16), otherwise the check under-reports pipelining (notes/kernels.md §9, §17).

This is compile-time evidence, not a runtime measurement: it catches configs that spill, overflow shared
memory, miss the wgmma path or lose software pipelining; it cannot catch a miscompile (GPU cross-check).

`python -m kernels.aot_check` prints the table quoted in docs/kernels.md; `--all` compiles every config
of every table on every shape class (exit 1 if any spills).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kernels.configs import (
    CONFIGS_16BIT,
    CONFIGS_16BIT_1X1_8WARPS,
    CONFIGS_FLAT_16BIT,
    CONFIGS_FLAT_FP32,
    CONFIGS_FP32,
    CONFIGS_FP32_IEEE,
    HOPPER_SMEM_BYTES,
    TileConfig,
)

_TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


@dataclass(frozen=True)
class ShapeClass:
    """The constexpr flags of one kind of ResNet layer (what changes the generated code)."""

    name: str
    R: int = 3
    stride: int = 1
    padding: int = 1
    has_residual: bool = False
    has_downsample: bool = False
    stride_ds: int = 1
    relu: bool = True
    flat_rsc: bool = False
    even_c: bool = True
    use_int64: bool = False
    prologue: bool = False  # BN(-ReLU) applied to x while loading (pre-activation ResNet, DenseNet)
    prologue_relu: bool = False
    groups: int = 1  # > 1: the grouped (block-diagonal) weight tiles of ResNeXt

    @property
    def is_1x1(self) -> bool:
        return self.R == 1


# One class per distinct code path of a ResNet (notes/kernels.md §2): names are the layers that use it.
CONV3X3_RESIDUAL = ShapeClass("3x3 s1 +res (BasicBlock conv2)", has_residual=True)
CONV3X3_S2_DOWNSAMPLE = ShapeClass("3x3 s1 +ds s2 (BasicBlock block0 conv2)", has_downsample=True, stride_ds=2)
CONV1X1_DOWNSAMPLE = ShapeClass("1x1 +ds s2 (Bottleneck block0 conv3)", R=1, padding=0, has_downsample=True,
                                stride_ds=2)
CONV1X1_RESIDUAL = ShapeClass("1x1 +res (Bottleneck conv3)", R=1, padding=0, has_residual=True)
CONV1X1_STRIDED = ShapeClass("1x1 s2 no relu (downsample, option A)", R=1, stride=2, padding=0, relu=False)
STEM = ShapeClass("7x7 s2 C=3 flat (stem)", R=7, stride=2, padding=3, flat_rsc=True, even_c=False)
CONV3X3_INT64 = ShapeClass("3x3 s2 int64 offsets (huge batch)", stride=2, use_int64=True)
# The second wave's families (docs/kernels.md "Prologue and grouped convolutions")
PROLOGUE_1X1 = ShapeClass("1x1 BN-ReLU prologue + BN-ReLU (DenseNet conv1)", R=1, padding=0, prologue=True,
                          prologue_relu=True, even_c=False)
PROLOGUE_3X3_S2 = ShapeClass("3x3 s2 BN-ReLU prologue (pre-act BasicBlock conv1)", stride=2, prologue=True,
                             prologue_relu=True, relu=True)
PROLOGUE_3X3_RESIDUAL = ShapeClass("3x3 BN prologue + res, no relu (pre-act conv2)", prologue=True,
                                   has_residual=True, relu=False)
GROUPED_3X3 = ShapeClass("3x3 groups 32 (ResNeXt conv2)", groups=32)  # BLOCK_N-channel windows: EVEN_C, aligned
SHAPE_CLASSES = (CONV3X3_RESIDUAL, CONV3X3_S2_DOWNSAMPLE, CONV1X1_DOWNSAMPLE, CONV1X1_RESIDUAL, CONV1X1_STRIDED,
                 STEM, CONV3X3_INT64, PROLOGUE_1X1, PROLOGUE_3X3_S2, PROLOGUE_3X3_RESIDUAL, GROUPED_3X3)
NEW_FAMILY_SHAPES = (PROLOGUE_1X1, PROLOGUE_3X3_S2, PROLOGUE_3X3_RESIDUAL, GROUPED_3X3)


@dataclass(frozen=True)
class CompileReport:
    """Resources and code facts of one compiled kernel (picklable: the tests compile in worker processes)."""

    kernel: str
    config: str
    dtype: str
    shape_class: str
    registers: int
    spill_bytes: int  # STACK + LOCAL from cuobjdump: 0 means no spills
    shared_bytes: int
    wgmma: bool
    loops: int  # scf.for in the pipelined TTGIR
    async_copies: int  # async_copy_global_to_local in the TTGIR (2 operands x stages per pipelined loop)
    rounds_bf16_to_nearest: bool  # cvt.rn.bf16 in the PTX (the interpreter truncates instead)
    seconds: float

    def row(self) -> str:
        return (f"| {self.kernel} | {self.config} | {self.dtype} | {self.shape_class} | {self.registers} | "
                f"{self.spill_bytes} | {self.shared_bytes // 1024} KB | {'yes' if self.wgmma else 'no'} | "
                f"{self.loops} | {self.async_copies} |")


def tool(name: str) -> Path:
    """A CUDA binary shipped in the Triton wheel (ptxas, cuobjdump); FileNotFoundError if it is not."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not shipped with this Triton ({path}); the sm_90 check needs it")
    return path


def _jit(kernel):
    """The JITFunction behind a kernel object, also when TRITON_INTERPRET=1 made it an InterpretedFunction."""
    from triton.runtime.jit import JITFunction

    return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)


def _compile(kernel, pointers: dict[str, str], ints: list[str], constexprs: dict, aligned: list[str],
             config: TileConfig):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    jit = _jit(kernel)
    signature = dict(pointers)
    signature.update({name: "i32" for name in ints})
    signature.update({name: "constexpr" for name in constexprs})
    attrs = {(jit.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    source = ASTSource(fn=jit, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": config.num_warps, "num_stages": config.num_stages,
                                   "enable_fp_fusion": True})


def _resources(cubin: bytes) -> tuple[int, int, int]:
    """(registers, STACK + LOCAL bytes, static SHARED bytes) of the cubin's one kernel, via cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([str(tool("cuobjdump")), "--dump-resource-usage", handle.name],
                              capture_output=True, text=True, check=True).stdout
    found = {key: int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}
    if "REG" not in found:
        raise RuntimeError(f"cuobjdump printed no resource usage: {text!r}")
    return found["REG"], found.get("STACK", 0) + found.get("LOCAL", 0), found.get("SHARED", 0)


def _report(kernel_name: str, compiled, config: TileConfig, dtype: torch.dtype, shape_class: str,
            seconds: float) -> CompileReport:
    registers, spills, static_shared = _resources(compiled.asm["cubin"])
    ttgir = compiled.asm["ttgir"]
    return CompileReport(
        kernel=kernel_name, config=config.label(), dtype=_TRITON_TYPES[dtype], shape_class=shape_class,
        registers=registers, spill_bytes=spills, shared_bytes=max(compiled.metadata.shared, static_shared),
        wgmma="wgmma.mma_async" in compiled.asm["ptx"], loops=ttgir.count("scf.for"),
        async_copies=ttgir.count("async_copy_global_to_local"),
        rounds_bf16_to_nearest=bool(re.search(r"cvt\.rn\.bf16(x2)?\.f32", compiled.asm["ptx"])), seconds=seconds)


def compile_conv(config: TileConfig, dtype: torch.dtype, shape: ShapeClass,
                 input_precision: str = "tf32") -> CompileReport:
    """Compile `_conv_bn_act_kernel` for sm_90 with `config` on one shape class, as the launcher would."""
    from kernels.conv_bn_act import GROUP_PACK_N, _conv_bn_act_kernel

    t = _TRITON_TYPES[dtype]
    out_type = "fp32" if config.split_k > 1 else t
    pointers = {"X": f"*{t}", "WEIGHT": f"*{t}", "SCALE": "*fp32", "SHIFT": "*fp32", "PROLOGUE_SCALE": "*fp32",
                "PROLOGUE_SHIFT": "*fp32", "RESIDUAL": f"*{t}", "X_DS": f"*{t}", "WEIGHT_DS": f"*{t}",
                "Y": f"*{out_type}"}
    ints = ["N", "H", "W", "C", "P", "Q", "K", "H_DS", "W_DS", "C_DS", "C_PER_GROUP", "K_PER_GROUP", "C_WINDOW"]
    constexprs = dict(
        R=shape.R, S=shape.R, STRIDE_H=shape.stride, STRIDE_W=shape.stride, PAD_H=shape.padding,
        PAD_W=shape.padding, DIL_H=1, DIL_W=1, STRIDE_DS=shape.stride_ds,
        HAS_RESIDUAL=shape.has_residual and config.split_k == 1, HAS_DOWNSAMPLE=shape.has_downsample,
        APPLY_RELU=shape.relu and config.split_k == 1, HAS_PROLOGUE=shape.prologue,
        PROLOGUE_RELU=shape.prologue_relu, GROUPED=shape.groups > 1, GROUP_PACK_N=GROUP_PACK_N,
        ALIGNED_WINDOWS=shape.groups > 1, FLAT_RSC=shape.flat_rsc,
        EVEN_C=shape.even_c, EVEN_C_DS=True, INPUT_PRECISION=input_precision, WIDEN_DOT=False,
        USE_INT64=shape.use_int64, SPLIT_K=config.split_k, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        BLOCK_K=config.block_k, GROUP_M=config.group_m)
    # What the JIT sees for ResNet layers: aligned tensors; C, K (and C_ds) multiples of 16 except the stem;
    # ResNeXt's groups have 4-32 channels (layer1-4), so per-group counts carry no divisibility hint.
    aligned = list(pointers) + ["K", "C_DS"] + ([] if not shape.even_c else ["C"])
    aligned += ["C_WINDOW"] + (["C_PER_GROUP", "K_PER_GROUP"] if shape.groups == 1 else [])
    start = time.perf_counter()
    compiled = _compile(_conv_bn_act_kernel, pointers, ints, constexprs, aligned, config)
    name = shape.name if input_precision == "tf32" or dtype != torch.float32 else f"{shape.name}, ieee"
    return _report("conv_bn_act", compiled, config, dtype, name, time.perf_counter() - start)


def compile_split_k_epilogue(dtype: torch.dtype, split_k: int = 8, has_residual: bool = True) -> CompileReport:
    from kernels.conv_bn_act import _split_k_epilogue_kernel

    t = _TRITON_TYPES[dtype]
    config = TileConfig(64, 64, 16, num_warps=4, num_stages=3, split_k=split_k)
    pointers = {"WORKSPACE": "*fp32", "SHIFT": "*fp32", "RESIDUAL": f"*{t}", "Y": f"*{t}"}
    constexprs = dict(SPLIT_K=split_k, HAS_RESIDUAL=has_residual, APPLY_RELU=True, USE_INT64=False,
                      BLOCK_M=64, BLOCK_N=64)
    start = time.perf_counter()
    compiled = _compile(_split_k_epilogue_kernel, pointers, ["M", "K"], constexprs, list(pointers) + ["K"], config)
    return _report("split_k_epilogue", compiled, config, dtype, f"split {split_k}", time.perf_counter() - start)


def problems_found(report: CompileReport, expected_loops: int | None = None) -> list[str]:
    """What is wrong with a compiled config: spills, shared memory over budget, a tensor-core conv without
    wgmma (exact-fp32 "ieee" dots run on the FMA units by design), a GEMM loop count other than expected."""
    problems = []
    if report.spill_bytes:
        problems.append(f"spills {report.spill_bytes} bytes")
    if report.shared_bytes > HOPPER_SMEM_BYTES:
        problems.append(f"shared memory {report.shared_bytes} > {HOPPER_SMEM_BYTES}")
    if report.kernel == "conv_bn_act" and not report.shape_class.endswith("ieee") and not report.wgmma:
        problems.append("no wgmma.mma_async in the PTX")
    if expected_loops is not None and report.loops != expected_loops:
        problems.append(f"{report.loops} scf.for loops, expected {expected_loops}")
    return problems


Job = tuple[TileConfig, torch.dtype, ShapeClass, str]


def matrix() -> list[Job]:
    """Every autotune config x each of its dtypes on its heaviest shape class (3x3 + fused strided downsample:
    two pipelined loops; 1x1 + downsample for the 1x1-only 8-warp configs; the stem for the flat-gather
    table), fp32 with TF32 and exact dots, and every other shape class once on the 4-warp config with the
    most registers per thread (128x64x64; exact fp32: its only config)."""
    jobs: list[Job] = []
    for config in CONFIGS_16BIT:
        for dtype in (torch.float16, torch.bfloat16):
            jobs.append((config, dtype, CONV3X3_S2_DOWNSAMPLE, "tf32"))
    for config in CONFIGS_16BIT_1X1_8WARPS:
        for dtype in (torch.float16, torch.bfloat16):
            jobs.append((config, dtype, CONV1X1_DOWNSAMPLE, "tf32"))
    for config in CONFIGS_FP32:
        jobs.append((config, torch.float32, CONV3X3_S2_DOWNSAMPLE, "tf32"))
    for config in CONFIGS_FP32_IEEE:
        for shape in (CONV3X3_S2_DOWNSAMPLE, CONV1X1_DOWNSAMPLE, CONV3X3_INT64):
            jobs.append((config, torch.float32, shape, "ieee"))
    for config in CONFIGS_FLAT_16BIT:
        for dtype in (torch.float16, torch.bfloat16):
            jobs.append((config, dtype, STEM, "tf32"))
    for config in CONFIGS_FLAT_FP32:
        for precision in ("tf32", "ieee"):
            jobs.append((config, torch.float32, STEM, precision))
    largest = CONFIGS_16BIT[2]
    for shape in SHAPE_CLASSES:
        if shape not in (CONV3X3_S2_DOWNSAMPLE, STEM):
            jobs.append((largest, torch.float16, shape, "tf32"))
    split = TileConfig(64, 64, 64, num_warps=4, num_stages=4, split_k=8)
    jobs.append((split, torch.float16, CONV3X3_S2_DOWNSAMPLE, "tf32"))
    # prologue and grouped variants: bf16 (the GPU suites' dtype) on every 4-warp 16-bit config, which the
    # tuner may pick for them (8-warp configs are 1x1 only: the DenseNet 1x1 prologue on the larger one)
    for shape in NEW_FAMILY_SHAPES:
        for config in CONFIGS_16BIT:
            if (config, shape) != (largest, shape):
                jobs.append((config, torch.bfloat16, shape, "tf32"))
    jobs.append((CONFIGS_16BIT_1X1_8WARPS[0], torch.bfloat16, PROLOGUE_1X1, "tf32"))
    jobs.append((CONFIGS_FP32[0], torch.float32, PROLOGUE_3X3_S2, "tf32"))
    return jobs


def full_matrix() -> list[Job]:
    """Every config of every table x every shape class x its dtypes (fp32 in both precisions): ~90 compiles,
    `python -m kernels.aot_check --all` (run it for a new Triton; the CI test compiles `matrix()`)."""
    jobs: list[Job] = []
    for shape in SHAPE_CLASSES:
        flat = shape.flat_rsc
        for config in (CONFIGS_FLAT_16BIT if flat else CONFIGS_16BIT + (CONFIGS_16BIT_1X1_8WARPS if shape.is_1x1
                                                                      else ())):
            jobs += [(config, dtype, shape, "tf32") for dtype in (torch.float16, torch.bfloat16)]
        jobs += [(config, torch.float32, shape, "tf32") for config in (CONFIGS_FLAT_FP32 if flat else CONFIGS_FP32)]
        jobs += [(config, torch.float32, shape, "ieee") for config in (CONFIGS_FLAT_FP32 if flat
                                                                      else CONFIGS_FP32_IEEE)]
    return jobs


def run_job(job: Job) -> CompileReport:
    config, dtype, shape, precision = job
    return compile_conv(config, dtype, shape, precision)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m kernels.aot_check", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every config x every shape class (~90 compiles)")
    args = parser.parse_args(argv)
    import triton

    print(f"Triton {triton.__version__}, sm_90")
    print("| kernel | config | dtype | shape class | REG | spill B | SMEM | wgmma | loops | async copies |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    spilled = 0
    for job in full_matrix() if args.all else matrix():
        report = run_job(job)
        spilled += bool(report.spill_bytes)
        print(report.row(), flush=True)
    print(compile_split_k_epilogue(torch.float16).row())
    if spilled:
        print(f"{spilled} configs spill", file=sys.stderr)
    return 1 if spilled else 0


if __name__ == "__main__":
    raise SystemExit(main())
