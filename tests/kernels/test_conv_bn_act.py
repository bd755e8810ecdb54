"""Parity of the fused convolution against an fp64 reference, under the Triton interpreter (CPU).

Tiles are forced to 16-32 (notes/kernels.md §18) so shapes of a few pixels still span several programs, partial
tiles and every mask; each case is labelled with the ResNet layer kind it stands for."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from kernels import conv_bn_act, conv_bn_act_ref
from kernels.configs import TileConfig, forced_config
from kernels.conv_bn_act import pack_downsample_weight, pack_weight

sys.path.insert(0, str(Path(__file__).parent))  # conv_cases.py: the fields every parity case states
from conv_cases import ConvCase  # noqa: E402


@dataclass(frozen=True)
class Case(ConvCase):
    dilation: int = 1
    # fused downsample branch: (C_ds, H_ds, W_ds, stride_ds)
    downsample: tuple[int, int, int, int] | None = None


CASES = [
    Case("layer1 3x3 s1 +res, GROUP_M=3 partial groups", 2, 16, 8, 8, 16, 3, padding=1, residual=True,
         config=TileConfig(16, 16, 16, group_m=3)),
    Case("layer2.0 conv 3x3 s2, odd 9x9, C=24 K=40 (not tile multiples)", 2, 24, 9, 9, 40, 3, stride=2, padding=1,
         config=TileConfig(32, 32, 16)),
    Case("3x3 s1 15x19 fp32 +res no relu", 1, 40, 15, 19, 24, 3, padding=1, residual=True, relu=False,
         dtype=torch.float32, config=TileConfig(32, 16, 32)),
    Case("Bottleneck conv3 1x1 +res (plain GEMM), K=40", 2, 64, 7, 7, 40, 1, residual=True,
         config=TileConfig(32, 32, 32)),
    Case("downsample 1x1 s2 no relu, odd 9x9", 2, 24, 9, 9, 64, 1, stride=2, relu=False, config=TileConfig(16, 32, 16)),
    Case("stem 7x7 s2 C=3 (flat r,s,c gather)", 1, 3, 16, 16, 16, 7, stride=2, padding=3,
         config=TileConfig(32, 16, 32)),
    Case("stem 7x7 s2 C=3 fp32, channel-block loop", 1, 3, 15, 15, 16, 7, stride=2, padding=3,
         dtype=torch.float32, config=TileConfig(32, 16, 16, flat_rsc=False)),
    Case("3x3 no padding fp32, 7x7 input", 2, 16, 7, 7, 16, 3, dtype=torch.float32, config=TileConfig(16, 16, 16)),
    Case("3x3 dilation 2 (generic CNN)", 1, 16, 9, 9, 16, 3, padding=2, dilation=2, config=TileConfig(16, 16, 16)),
    Case("anisotropic stride (2,1) padding (1,0)", 1, 16, 9, 8, 24, 3, stride=(2, 1), padding=(1, 0),
         dtype=torch.float32, config=TileConfig(16, 16, 16)),
    Case("layer1 3x3 bf16 +res (widened dot)", 2, 32, 8, 8, 32, 3, padding=1, residual=True, dtype=torch.bfloat16,
         config=TileConfig(32, 32, 32)),
    Case("1x1 bf16 +res", 1, 48, 5, 5, 32, 1, residual=True, dtype=torch.bfloat16, config=TileConfig(16, 32, 16)),
    Case("layer4 batch 1: 3x3 split-K 4 +res", 1, 64, 4, 4, 32, 3, padding=1, residual=True,
         config=TileConfig(16, 16, 32, split_k=4)),
    Case("split-K 3 (uneven split) fp32, K=24", 1, 40, 3, 3, 24, 3, padding=1, dtype=torch.float32,
         config=TileConfig(16, 16, 16, split_k=3)),
    Case("BasicBlock block0 conv2 3x3 + fused downsample s2", 2, 16, 4, 4, 32, 3, padding=1,
         downsample=(16, 8, 8, 2), config=TileConfig(16, 16, 16)),
    Case("Bottleneck block0 conv3 1x1 + fused downsample s2, C_ds=24 odd 7x7", 1, 32, 4, 4, 48, 1,
         downsample=(24, 7, 7, 2), dtype=torch.float32, config=TileConfig(16, 16, 16)),
    Case("fused downsample + split-K 2, bf16", 1, 32, 2, 2, 32, 3, padding=1, downsample=(32, 4, 4, 2),
         dtype=torch.bfloat16, config=TileConfig(16, 16, 16, split_k=2)),
]


def _make(case: Case, generator: torch.Generator):
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    x = randn(case.N, case.C, case.H, case.W).to(case.dtype).contiguous(memory_format=torch.channels_last)
    weight = (randn(case.K, case.C, case.R, case.R) / (case.C * case.R * case.R) ** 0.5).to(case.dtype)
    scale = torch.rand(case.K, generator=generator) + 0.5
    shift = randn(case.K)
    return x, weight, scale, shift


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_matches_fp64_reference_with_one_rounding(case: Case, one_rounding, magnitude):
    generator = torch.Generator().manual_seed(0)
    x, weight, scale, shift = _make(case, generator)
    geometry = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    reference_nc = conv_bn_act_ref(x, weight, scale, shift, relu=False, **geometry)
    residual = None
    if case.residual:
        residual = torch.randn(reference_nc.shape, generator=generator).to(case.dtype)
    ds = {}
    if case.downsample is not None:
        c_ds, h_ds, w_ds, stride_ds = case.downsample
        x_ds = torch.randn(case.N, c_ds, h_ds, w_ds, generator=generator).to(case.dtype)
        weight_ds = (torch.randn(case.K, c_ds, 1, 1, generator=generator) / c_ds**0.5).to(case.dtype)
        ds = dict(x_ds=x_ds.contiguous(memory_format=torch.channels_last), weight_ds=weight_ds, stride_ds=stride_ds)
    reference = conv_bn_act_ref(x, weight, scale, shift, residual=residual, relu=case.relu, **geometry, **ds)
    size = magnitude(x, weight, scale, shift, residual=residual, **geometry, **ds)

    with forced_config(case.config):
        if ds:
            out = torch.ops.resbench.conv_bn_act(
                x, pack_weight(weight), scale, shift, None, ds["x_ds"], pack_downsample_weight(ds["weight_ds"]),
                list(_pair(case.stride)), list(_pair(case.padding)), [case.dilation] * 2, ds["stride_ds"],
                case.relu, "tf32")
        else:
            out = conv_bn_act(x, weight, scale, shift, residual=residual, relu=case.relu, **geometry)

    assert out.shape == reference.shape and out.dtype == case.dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    reduction = case.C * case.R * case.R + (case.downsample[0] if case.downsample else 0)
    # half an ulp: one round-to-nearest (bf16 too: conftest makes the interpreter round like the GPU)
    one_rounding(out, reference, size, reduction, case.label, rounding_ulps=0.5)
    if case.relu:
        assert bool((out >= 0).all())


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def test_contiguous_nchw_input_gives_the_channels_last_result():
    generator = torch.Generator().manual_seed(1)
    case = CASES[0]
    x, weight, scale, shift = _make(case, generator)
    with forced_config(TileConfig(32, 16, 16)):
        from_nhwc = conv_bn_act(x, weight, scale, shift, padding=1)
        from_nchw = conv_bn_act(x.contiguous(), weight.contiguous(memory_format=torch.channels_last), scale, shift,
                                padding=1)
    assert torch.equal(from_nhwc, from_nchw)


def test_relu_propagates_nan_like_eager():
    """eager relu(NaN) = NaN; tl.maximum's default (maxnum) would turn it into 0 and hide overflow."""
    x = torch.randn(1, 16, 6, 6).half().contiguous(memory_format=torch.channels_last)
    x[0, 3, 2, 2] = float("nan")
    weight = torch.randn(16, 16, 3, 3).half() / 12
    scale, shift = torch.ones(16), torch.zeros(16)
    with forced_config(TileConfig(16, 16, 16)):
        out = conv_bn_act(x, weight, scale, shift, padding=1)
    expected_nan = torch.isnan(conv_bn_act_ref(x, weight, scale, shift, padding=1))
    assert expected_nan.sum() == 16 * 9  # every channel of the 3x3 neighbourhood
    assert torch.equal(torch.isnan(out), expected_nan)


def test_int64_offsets_path(monkeypatch: pytest.MonkeyPatch, one_rounding, magnitude):
    """USE_INT64 is chosen for tensors of >= 2**31 elements; lower the threshold to run that code path."""
    monkeypatch.setattr(importlib.import_module("kernels.conv_bn_act"), "INT32_LIMIT", 1)
    generator = torch.Generator().manual_seed(2)
    case = replace(CASES[1], residual=True)
    x, weight, scale, shift = _make(case, generator)
    residual = torch.randn(2, 40, 5, 5, generator=generator).half()
    with forced_config(TileConfig(32, 32, 16, split_k=2)):
        out = conv_bn_act(x, weight, scale, shift, stride=2, padding=1, residual=residual)
    reference = conv_bn_act_ref(x, weight, scale, shift, stride=2, padding=1, residual=residual)
    size = magnitude(x, weight, scale, shift, stride=2, padding=1, residual=residual)
    one_rounding(out, reference, size, 24 * 9, "int64 offsets + split-K", rounding_ulps=0.5)


def test_index_math_passes_the_interpreters_overflow_checks(overflow_checks):
    """With Triton's int32 overflow sanitiser on, the stem and a strided 3x3 run without an assertion."""
    generator = torch.Generator().manual_seed(3)
    for case in (CASES[5], CASES[1]):
        x, weight, scale, shift = _make(case, generator)
        with forced_config(case.config):
            out = conv_bn_act(x, weight, scale, shift, stride=case.stride, padding=case.padding)
        reference = conv_bn_act_ref(x, weight, scale, shift, stride=case.stride, padding=case.padding)
        assert (out.double() - reference).abs().max().item() < 1e-2


def test_default_interpreter_config_handles_small_m_and_wide_k(one_rounding, magnitude):
    """No forced config: the interpreter's default tiles (up to 128) on a layer4-like batch-1 shape."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 160, 2, 2, generator=generator).half().contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(136, 160, 3, 3, generator=generator) / 38).half()
    scale, shift = torch.rand(136, generator=generator) + 0.5, torch.randn(136, generator=generator)
    out = conv_bn_act(x, weight, scale, shift, padding=1)
    reference = conv_bn_act_ref(x, weight, scale, shift, padding=1)
    one_rounding(out, reference, magnitude(x, weight, scale, shift, padding=1), 160 * 9, "default tiles",
                 rounding_ulps=0.5)


# ---------------------------------------------------------------------------------------------------------
# Errors: one line naming the bad value and what is allowed


def _ok_args():
    x = torch.randn(1, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    return x, torch.randn(4, 8, 3, 3), torch.ones(4), torch.zeros(4)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: {"x": a["x"][0]}, r"x must be 4-D \(N x C x H x W\), got shape \(8, 5, 5\)"),
        (lambda a: {"x": a["x"].to(torch.int32)}, r"x has dtype int32; allowed: float16, bfloat16, float32"),
        (lambda a: {"x": a["x"].double(), "weight": a["weight"].double()}, r"x has dtype float64; allowed"),
        (lambda a: {"weight": a["weight"].half()}, r"weight dtype float16 differs from x dtype float32"),
        (lambda a: {"weight": torch.randn(4, 6, 3, 3)},
         r"weight has 6 input channels per group; with groups=1 x must have 6 channels, got 8"),
        (lambda a: {"weight": torch.randn(4, 8, 3)}, r"weight must be a 4-D tensor \(K x C x R x S\), got \(4, 8, 3\)"),
        (lambda a: {"scale": a["scale"].half()}, r"scale must be float32 \(BN folded in fp32\), got float16"),
        (lambda a: {"shift": torch.zeros(5)}, r"shift must have shape \(4,\) \(one per output channel\), got \(5,\)"),
        (lambda a: {"residual": torch.randn(1, 4, 5, 5)}, r"residual must have the output shape \(1, 4, 3, 3\)"),
        (lambda a: {"residual": torch.randn(1, 4, 3, 3).half()}, r"residual dtype float16 differs from x dtype"),
        (lambda a: {"stride": 0}, r"stride \(0, 0\) .* must be >= 1"),
        (lambda a: {"padding": (1, 2, 3)}, r"padding must be an int or a pair of ints, got \(1, 2, 3\)"),
        (lambda a: {"weight": torch.randn(4, 8, 7, 7)}, r"a 7x7 filter .* does not fit a 5x5 input"),
        (lambda a: {"input_precision": "fp64"}, r"input_precision 'fp64' is not allowed; one of: tf32, ieee"),
        (lambda a: {"scale": torch.ones(4, device="meta")}, r"scale is on meta but x is on cpu"),
    ],
    ids=["x-3d", "x-int", "x-fp64", "weight-dtype", "groups", "weight-3d", "scale-fp16", "shift-len",
         "residual-shape", "residual-dtype", "stride-0", "padding-3", "filter-too-big", "precision", "device"],
)
def test_bad_inputs_raise_one_clear_error(mutate, message):
    x, weight, scale, shift = _ok_args()
    args = dict(x=x, weight=weight, scale=scale, shift=shift)
    args.update(mutate(args))
    kwargs = {k: args.pop(k) for k in ("residual", "stride", "padding", "input_precision") if k in args}
    with pytest.raises(ValueError, match=message):
        conv_bn_act(args["x"], args["weight"], args["scale"], args["shift"], **kwargs)
