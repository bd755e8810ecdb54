"""Per-layer comparison: the fused kernel against cuDNN conv + one fused epilogue, on every distinct 1x1 and 3x3
convolution of a ResNet (ResNet-50 by default) at batch 32 in bf16 (scripts/gpu-check.sh, step d).

A fair baseline (notes/gpu-audit.md, item 6): both sides get their weights packed once, outside the timed call;
the fused kernel is autotuned first (`kernels.autotuning`) and cuDNN picks its algorithm first
(`cudnn.benchmark`); the baseline's epilogue is ONE kernel (`_bn_epilogue_kernel`: BN scale and shift in fp32,
the residual, the ReLU, one rounding), not eager's three or four bf16 passes. A block-0 conv3 with its fused
downsample compares against two cuDNN convs and the same one epilogue. Each side is timed by CUDA-graph replay
(20 calls per graph, median of 10 replays: device time without launch gaps) and by `triton.testing.do_bench`
(median), and the fused output is checked against an fp64 reference with the tuner's one-rounding bound
before it is timed. With `--device cpu` (the dry run) it runs the same steps at toy size: the interpreter
under TRITON_INTERPRET=1, host timers, no tuning and no graphs.

    python -m kernels.layer_bench [--batch 32] [--dtype bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.accuracy import acceptance_error, relative_error
from kernels.autotune import autotuning
from kernels.configs import ConvProblem
from kernels.conv_bn_act import (
    LaunchShape,
    _interpreted,
    conv_bn_act_magnitude,
    conv_bn_act_ref,
    interpreter_enabled,
    unpack_downsample_weight,
)
from kernels.fuse import FusedConvBnAct
from kernels.precompile import DTYPES, model_launches, retarget

GRAPH_CALLS = 20     # calls captured per graph
GRAPH_REPLAYS = 10   # timed replays; the median per call is reported
EPILOGUE_BLOCK = 1024


@triton.jit
def _bn_epilogue_kernel(
    Y,  # conv output, NHWC rows [M, K], in the output dtype (cuDNN rounded it once)
    SCALE, SHIFT,  # fp32 [K]
    EXTRA,  # NHWC [M, K]: residual and/or the downsample conv's output (unused unless HAS_EXTRA)
    OUT,  # NHWC [M, K]
    TOTAL, K,  # M * K elements, K channels
    HAS_EXTRA: tl.constexpr, APPLY_RELU: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < TOTAL
    channel = offs % K
    acc = tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32) * tl.load(SCALE + channel, mask=mask, other=0.0)
    acc += tl.load(SHIFT + channel, mask=mask, other=0.0)
    if HAS_EXTRA:
        acc += tl.load(EXTRA + offs, mask=mask, other=0.0).to(tl.float32)
    if APPLY_RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(OUT + offs, acc.to(OUT.dtype.element_ty), mask=mask)


def bn_epilogue(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, extra: torch.Tensor | None,
                relu: bool) -> torch.Tensor:
    """relu(y * scale + shift + extra) in fp32 with one rounding: one kernel over channels_last tensors."""
    out = torch.empty_like(y, memory_format=torch.channels_last)
    kernel = _interpreted(_bn_epilogue_kernel) if y.device.type == "cpu" else _bn_epilogue_kernel
    total = y.numel()
    kernel[(triton.cdiv(total, EPILOGUE_BLOCK),)](
        y.contiguous(memory_format=torch.channels_last), scale, shift,
        y if extra is None else extra.contiguous(memory_format=torch.channels_last), out, total, y.shape[1],
        HAS_EXTRA=extra is not None, APPLY_RELU=relu, BLOCK=EPILOGUE_BLOCK)
    return out


@dataclasses.dataclass
class Layer:
    """One distinct convolution: both implementations on the same operands."""

    label: str
    calls_per_forward: int
    launch: LaunchShape
    device: torch.device
    fused: Callable[[], torch.Tensor]
    baseline: Callable[[], torch.Tensor]
    reference: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    config: str | None = None  # the tuned winner (GPU)
    errors: tuple[float, float] = (float("nan"), float("nan"))  # rel-L2 of fused, baseline vs fp64

    @property
    def gflop(self) -> float:
        p = self.launch.problem
        return 2 * p.M * p.K * p.reduction / 1e9


def describe(launch: LaunchShape) -> str:
    p = launch.problem
    text = f"{p.R}x{p.S} s{p.stride[0]} {p.C}->{p.K} @{p.H}"
    if p.c_ds:
        text += f" +ds {p.c_ds}@{launch.h_ds} s{launch.stride_ds}"
    elif p.has_residual:
        text += " +res"
    return text + ("" if p.relu else " no relu")


def build_layer(launch: LaunchShape, calls: int, device: torch.device, seed: int = 0) -> Layer:
    p = launch.problem
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, generator=g)

    def activation(*shape: int) -> torch.Tensor:
        return randn(*shape).to(p.dtype).contiguous(memory_format=torch.channels_last)

    x = activation(p.N, p.C, p.H, p.W)
    weight = randn(p.K, p.C, p.R, p.S) * (2 / p.reduction) ** 0.5
    scale, shift = torch.rand(p.K, device=device, generator=g) + 0.5, randn(p.K) * 0.1
    residual = activation(p.N, p.K, p.P, p.Q) if p.has_residual else None
    x_ds = activation(p.N, p.c_ds, launch.h_ds, launch.w_ds) if p.c_ds else None
    module = FusedConvBnAct(weight.to(p.dtype), scale, shift, stride=p.stride, padding=p.padding,
                            dilation=p.dilation, relu=p.relu, input_precision=p.input_precision,
                            downsample=((randn(p.K, p.c_ds, 1, 1) * p.c_ds**-0.5).to(p.dtype), randn(p.K) * 0.1,
                                        launch.stride_ds) if p.c_ds else None).to(device)
    # cuDNN's operands, made once: KCRS channels_last weights, the downsample's pre-scaled weight
    weight_kcrs = weight.to(p.dtype).contiguous(memory_format=torch.channels_last)
    weight_ds = unpack_downsample_weight(module.weight_ds).contiguous() if p.c_ds else None
    shift_total = module.shift_fused if p.c_ds else module.shift

    def fused() -> torch.Tensor:
        return module(x, residual=residual, downsample_input=x_ds)

    def baseline() -> torch.Tensor:
        y = F.conv2d(x, weight_kcrs, stride=p.stride, padding=p.padding)
        extra = F.conv2d(x_ds, weight_ds, stride=launch.stride_ds) if x_ds is not None else residual
        return bn_epilogue(y, module.scale, shift_total, extra, p.relu)

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        geometry = dict(stride=p.stride, padding=p.padding, residual=residual, x_ds=x_ds, weight_ds=weight_ds,
                        stride_ds=launch.stride_ds)
        return (conv_bn_act_ref(x, weight_kcrs, module.scale, shift_total, relu=p.relu, **geometry),
                conv_bn_act_magnitude(x, weight_kcrs, module.scale, shift_total, **geometry))

    return Layer(describe(launch), calls, launch, device, fused, baseline, reference)


def table_launch(layer, batch: int, dtype: torch.dtype) -> LaunchShape:
    """The launch of a `resbench.models.layers.ConvLayer` row (ReLU on, no downsample) at `batch`."""
    P = (layer.size + 2 * layer.padding - layer.kernel) // layer.stride + 1
    return LaunchShape(ConvProblem(N=batch, C=layer.channels, H=layer.size, W=layer.size, K=layer.out_channels,
                                   R=layer.kernel, S=layer.kernel, P=P, Q=P, stride=(layer.stride, layer.stride),
                                   padding=(layer.padding, layer.padding), dilation=(1, 1), dtype=dtype,
                                   has_residual=layer.residual, relu=True))


def model_layers(model: str, batch: int, dtype: str, image_size: int, device: torch.device) -> list[Layer]:
    """The distinct 1x1 and 3x3 fused launches of `model` (the stem and other filters are left out)."""
    launches = [launch for launch in retarget(model_launches(model, image_size), batch, dtype)
                if (launch.problem.R, launch.problem.S) in ((1, 1), (3, 3))]
    counts = Counter(launches)
    return [build_layer(launch, counts[launch], device, seed) for seed, launch in enumerate(dict.fromkeys(launches))]


def graph_ms(fn: Callable[[], torch.Tensor]) -> float:
    """Per-call device time: GRAPH_CALLS calls in one CUDA graph, the median of GRAPH_REPLAYS timed replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(GRAPH_CALLS):
            fn()
    graph.replay()
    times = []
    for _ in range(GRAPH_REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / GRAPH_CALLS)
    return statistics.median(times)


def host_ms(fn: Callable[[], torch.Tensor], calls: int = 1) -> float:
    """CPU (dry run): median wall time of a few calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure_setup(layer: Layer) -> str | None:
    """Before any timing: tune the fused kernel and let cuDNN pick its algorithm (on a GPU), then check the
    fused output against fp64 with the tuner's one-rounding bound. None when it passes, else why not; the
    outputs' rel-L2 errors and the tuned config are kept on the layer."""
    on_gpu = layer.device.type == "cuda"
    with torch.no_grad():
        if on_gpu:
            with autotuning() as log:
                layer.fused()
            layer.config = next(iter(log.winners.values())).label() if log.winners else None
            torch.backends.cudnn.benchmark = True
            layer.baseline()
            torch.cuda.synchronize()
        fused_out, baseline_out = layer.fused(), layer.baseline()
        reference, magnitude = layer.reference()
    layer.errors = (relative_error(fused_out, reference), relative_error(baseline_out, reference))
    return acceptance_error(fused_out, reference, magnitude, layer.launch.problem.reduction)


def measure(layer: Layer) -> dict:
    """Tune, check, time one layer; a row of the table (numbers rounded for reading, full in JSON)."""
    check = measure_setup(layer)
    on_gpu = layer.device.type == "cuda"
    p = layer.launch.problem
    row = {"layer": layer.label, "calls_per_forward": layer.calls_per_forward, "M": p.M, "K": p.K,
           "reduction": p.reduction, "gflop": round(layer.gflop, 3), "config": layer.config,
           "fused_check": check or "ok", "fused_rel_l2": layer.errors[0], "baseline_rel_l2": layer.errors[1]}
    if on_gpu:
        row["fused_ms"], row["baseline_ms"] = graph_ms(layer.fused), graph_ms(layer.baseline)
        row["fused_do_bench_ms"] = triton.testing.do_bench(layer.fused, warmup=10, rep=40, return_mode="median")
        row["baseline_do_bench_ms"] = triton.testing.do_bench(layer.baseline, warmup=10, rep=40,
                                                              return_mode="median")
    else:
        row["fused_ms"], row["baseline_ms"] = host_ms(layer.fused), host_ms(layer.baseline)
    row["speedup"] = row["baseline_ms"] / row["fused_ms"] if row["fused_ms"] > 0 else None
    row["fused_tflops"] = layer.gflop / row["fused_ms"] if row["fused_ms"] > 0 else None
    return row


def table(rows: list[dict], timer: str) -> str:
    lines = [f"| layer | per fwd | GFLOP | fused config | fused us | cuDNN+epilogue us | speedup | fused TFLOP/s | "
             f"fused check | rel-L2 fused / baseline |  ({timer})",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['calls_per_forward']} | {r['gflop']:.2f} | {r['config'] or '-'} | "
                     f"{r['fused_ms'] * 1e3:.1f} | {r['baseline_ms'] * 1e3:.1f} | {r['speedup']:.2f}x | "
                     f"{r['fused_tflops']:.0f} | {r['fused_check'].splitlines()[0][:40]} | "
                     f"{r['fused_rel_l2']:.2e} / {r['baseline_rel_l2']:.2e} |")
    fused = sum(r["fused_ms"] * r["calls_per_forward"] for r in rows)
    base = sum(r["baseline_ms"] * r["calls_per_forward"] for r in rows)
    lines.append(f"per forward (these convs, weighted by calls): fused {fused:.3f} ms, cuDNN + epilogue "
                 f"{base:.3f} ms, {base / fused:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.layer_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--json", type=Path, help="write every row (full precision) here")
    parser.add_argument("--max-layers", type=int, help="only the first N distinct convs (the dry run's 3: a 1x1, "
                        "a 3x3 and a 1x1 with the fused downsample)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA GPU; use --device cpu for the dry run", file=sys.stderr)
        return 2
    if device.type == "cpu" and not interpreter_enabled():
        print("--device cpu runs the kernels in the Triton interpreter: set TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    layers = model_layers(args.model, args.batch, args.dtype, args.image_size, device)[:args.max_layers]
    print(f"{args.model} b{args.batch} {args.dtype} {args.image_size} px: {len(layers)} distinct 1x1/3x3 convs",
          flush=True)
    rows = []
    for layer in layers:
        rows.append(measure(layer))
        print(f"  {layer.label}: fused {rows[-1]['fused_ms'] * 1e3:.1f} us, baseline "
              f"{rows[-1]['baseline_ms'] * 1e3:.1f} us, check {rows[-1]['fused_check'].splitlines()[0]}",
              flush=True)
    print(table(rows, "CUDA-graph replay, median" if device.type == "cuda" else "host wall clock, CPU dry run"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "batch": args.batch, "dtype": args.dtype,
                                         "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                                         "torch": torch.__version__, "triton": triton.__version__, "rows": rows},
                                        indent=1))
    failed = [r["layer"] for r in rows if r["fused_check"] != "ok"]
    if failed:
        print(f"fused output outside the one-rounding bound on: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
