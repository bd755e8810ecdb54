"""The autotuner's acceptance check (kernels/accuracy.py) on the real ResNet-50 layer shapes, in every dtype,
on CPU with torch alone (no interpreter, no GPU): a correct kernel's output is accepted, and outputs of kernels
that skip work - all zero, one 3x3 (or 7x7) tap skipped, one trip of the reduction loop (32 channels at one tap)
skipped - are rejected. The old bound (10 * eps * sqrt(K_red) * max|ref|) accepted all three in bf16
(notes/gpu-audit.md, item 2).

A "correct output" is what the kernel computes: the operands as given (TF32: both truncated to 10 mantissa
bits, as Triton's tf32 dot does), fp32 accumulation, the epilogue in fp32, one rounding to the output dtype.
Also here: one failing candidate (any exception) is rejected and tuning goes on (`kernels.autotune.choose`)."""

from __future__ import annotations

import pytest
import torch

from kernels.accuracy import acceptance_error
from kernels.autotune import choose
from kernels.configs import TileConfig
from kernels.conv_bn_act import conv_bn_act_magnitude, conv_bn_act_ref
from resbench.models.layers import RESNET50_LAYERS, ConvLayer

USES_INTERPRETER = False

DTYPES = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "fp16": (torch.float16, False),
          "bf16": (torch.bfloat16, False)}
SKIPPED_TRIP_CHANNELS = 32  # BLOCK_K of the smallest tiles in the table: the least work a skipped trip drops


def _truncate_to_tf32(t: torch.Tensor) -> torch.Tensor:
    return (t.float().view(torch.int32) & ~0x1FFF).view(torch.float32)


def _inputs(layer: ConvLayer, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(sum(map(ord, layer.label)))
    C, K, R = layer.channels, layer.out_channels, layer.kernel
    x = torch.randn(1, C, layer.size, layer.size, generator=g).to(dtype)
    weight = (torch.randn(K, C, R, R, generator=g) * (2 / (C * R * R)) ** 0.5).to(dtype)
    scale = torch.rand(K, generator=g) + 0.5
    shift = torch.randn(K, generator=g) * 0.1
    P = (layer.size + 2 * layer.padding - R) // layer.stride + 1
    residual = torch.randn(1, K, P, P, generator=g).to(dtype) if layer.residual else None
    return dict(x=x, weight=weight, scale=scale, shift=shift, residual=residual)


def _kernel_output(p: dict, layer: ConvLayer, tf32: bool, weight: torch.Tensor | None = None) -> torch.Tensor:
    """What a kernel computes from these operands (or from `weight`, a kernel that dropped some of it)."""
    weight = p["weight"] if weight is None else weight
    x = _truncate_to_tf32(p["x"]) if tf32 else p["x"]
    weight = _truncate_to_tf32(weight) if tf32 else weight
    y = conv_bn_act_ref(x, weight, p["scale"], p["shift"], stride=layer.stride, padding=layer.padding,
                        residual=p["residual"], compute_dtype=torch.float32)
    return y.to(p["x"].dtype)


def _without_tap(weight: torch.Tensor) -> torch.Tensor:
    dropped = weight.clone()
    dropped[:, :, 0, 0] = 0
    return dropped


def _without_one_trip(weight: torch.Tensor) -> torch.Tensor:
    """The weight rows one trip of the flattened (r, s, c) loop reads: 32 channels at tap (0, 0), or for the
    3-channel stem (flat gather) the first 32 of its 147 (r, s, c) rows."""
    K, C, R, S = weight.shape
    rows = weight.permute(2, 3, 1, 0).reshape(R * S * C, K).clone()  # the packed [R, S, C, K] order
    rows[:SKIPPED_TRIP_CHANNELS] = 0
    return rows.reshape(R, S, C, K).permute(3, 2, 0, 1)


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("layer", RESNET50_LAYERS, ids=[layer.label for layer in RESNET50_LAYERS])
def test_correct_output_accepted_and_skipped_work_rejected(layer: ConvLayer, name: str):
    dtype, tf32 = DTYPES[name]
    p = _inputs(layer, dtype)
    geometry = dict(stride=layer.stride, padding=layer.padding, residual=p["residual"])
    reference = conv_bn_act_ref(p["x"], p["weight"], p["scale"], p["shift"], **geometry)
    magnitude = conv_bn_act_magnitude(p["x"], p["weight"], p["scale"], p["shift"], **geometry)
    reduction = layer.channels * layer.kernel**2

    def verdict(out: torch.Tensor) -> str | None:
        return acceptance_error(out, reference, magnitude, reduction, tf32=tf32, label=f"{layer.label} {name}")

    correct = _kernel_output(p, layer, tf32)
    assert verdict(correct) is None
    wrong = {"all zero": torch.zeros_like(correct),
             "one skipped trip": _kernel_output(p, layer, tf32, _without_one_trip(p["weight"]))}
    if layer.kernel > 1:
        wrong["one skipped tap"] = _kernel_output(p, layer, tf32, _without_tap(p["weight"]))
    for what, out in wrong.items():
        assert verdict(out) is not None, f"{layer.label} {name}: {what} was accepted"


def test_the_reasons_name_the_failure():
    layer = RESNET50_LAYERS[1]
    p = _inputs(layer, torch.bfloat16)
    geometry = dict(stride=layer.stride, padding=layer.padding)
    reference = conv_bn_act_ref(p["x"], p["weight"], p["scale"], p["shift"], **geometry)
    magnitude = conv_bn_act_magnitude(p["x"], p["weight"], p["scale"], p["shift"], **geometry)
    zeros = torch.zeros(reference.shape, dtype=torch.bfloat16)
    why = acceptance_error(zeros, reference, magnitude, 576, label="layer1.0.conv2")
    assert why.startswith("layer1.0.conv2: ") and "elements outside the bound" in why and "max error" in why
    nan = _kernel_output(p, layer, False).clone()
    nan[0, 0, 0, 0] = float("nan")
    assert "non-finite outputs 1" in acceptance_error(nan, reference, magnitude, 576)
    assert "shape" in acceptance_error(zeros[:, :1], reference, magnitude, 576)


def test_one_bad_candidate_is_rejected_and_the_fastest_correct_one_wins():
    configs = [TileConfig(64, 64, 32), TileConfig(64, 64, 64), TileConfig(128, 64, 64), TileConfig(64, 128, 64)]
    good = torch.ones(4)

    def run(config: TileConfig) -> torch.Tensor:
        if config.block_m == 128:
            raise RuntimeError("PTXASError: ptxas fatal: out of registers\nsecond line")
        return good if config.block_n == 128 or config.block_k == 32 else torch.zeros(4)

    def check(out: torch.Tensor) -> str | None:
        return None if torch.equal(out, good) else "wrong output"

    speeds = {"64x64x32/w4/s3": 2.0, "64x128x64/w4/s3": 1.0}
    winner, timings, rejected = choose(configs, run, check, lambda c: speeds[c.label()])
    assert winner == TileConfig(64, 128, 64)
    assert timings == speeds
    assert rejected == {"64x64x64/w4/s3": "wrong output",
                        "128x64x64/w4/s3": "RuntimeError: PTXASError: ptxas fatal: out of registers"}

    def always_fails(config: TileConfig) -> torch.Tensor:
        raise ValueError("launch failed")

    assert choose(configs[:1], always_fails, check, lambda c: 1.0) == (None, {}, {"64x64x32/w4/s3":
                                                                                  "ValueError: launch failed"})
