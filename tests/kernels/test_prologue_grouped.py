"""The fused convolution's BN(-ReLU) prologue and grouped convolutions, under the Triton interpreter (CPU),
against the fp64 reference (`conv_bn_act_ref`, whose prologue is computed as the kernel's: one fp32 fma,
ReLU, rounded to x's dtype), with the one-rounding bound of kernels/accuracy.py.

Tiles are forced to 16-32 so a few pixels span several programs, partial tiles, channel masks and padding;
each case is labelled with the layer it stands for (DenseNet, pre-activation ResNet, ResNeXt)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernels import conv_bn_act, conv_bn_act_ref
from kernels.configs import ConvProblem, TileConfig, forced_config, reduction_iterations

sys.path.insert(0, str(Path(__file__).parent))  # conv_cases.py: the fields every parity case states
from conv_cases import ConvCase  # noqa: E402


@dataclass(frozen=True)
class Case(ConvCase):
    prologue: bool = True
    prologue_relu: bool = True
    groups: int = 1
    identity_epilogue: bool = False  # scale 1, shift 0: a conv with no BN after it (DenseNet's 3x3)


CASES = [
    Case("DenseNet conv1: 1x1, BN-ReLU prologue + BN-ReLU epilogue, C=40 (channel mask)", 2, 40, 5, 5, 32, 1),
    Case("DenseNet conv2: 3x3 pad 1, prologue, no epilogue (scale 1, shift 0)", 2, 16, 7, 7, 24, 3, padding=1,
         relu=False, identity_epilogue=True, dtype=torch.float32),
    Case("pre-act BasicBlock conv1: 3x3 s2 pad 1, odd 9x9, C=24 K=40", 2, 24, 9, 9, 40, 3, stride=2, padding=1,
         config=TileConfig(32, 16, 16)),
    Case("pre-act projection shortcut: 1x1 s2, no ReLU in the epilogue", 1, 16, 9, 9, 32, 1, stride=2,
         relu=False, dtype=torch.float32),
    Case("pre-act unit's last conv: 3x3 pad 1 prologue + residual, no ReLU", 1, 32, 6, 6, 32, 3, padding=1,
         relu=False, residual=True),
    Case("bare BN before a 3x3 conv (prologue without ReLU), bf16", 1, 32, 6, 5, 16, 3, padding=1,
         prologue_relu=False, dtype=torch.bfloat16, config=TileConfig(16, 16, 32)),
    Case("prologue + split-K 3, fp32", 1, 40, 3, 3, 24, 3, padding=1, dtype=torch.float32,
         config=TileConfig(16, 16, 16, split_k=3)),
    Case("prologue on the flat (r, s, c) gather: C=3 7x7 s2 pad 3", 1, 3, 15, 15, 16, 7, stride=2, padding=3,
         dtype=torch.float32, config=TileConfig(32, 16, 32)),
    Case("ResNeXt conv2: 3x3 groups 8, 4 channels per group (a tile spans 4 groups)", 2, 32, 6, 6, 32, 3,
         padding=1, prologue=False, groups=8),
    Case("grouped 3x3 s2, 6 channels per group: tiles straddle groups, odd 7x7", 1, 24, 7, 7, 24, 3, stride=2,
         padding=1, prologue=False, groups=4, dtype=torch.float32),
    Case("grouped 1x1, 24 channels per group > BLOCK_K (two channel blocks per group), bf16", 1, 48, 5, 5, 32, 1,
         prologue=False, groups=2, dtype=torch.bfloat16),
    Case("depthwise 3x3 (groups = C)", 1, 16, 6, 6, 16, 3, padding=1, prologue=False, groups=16),
    Case("grouped 3x3 + prologue + residual + split-K 2, fp32", 1, 32, 4, 4, 32, 3, padding=1, groups=4,
         residual=True, dtype=torch.float32, config=TileConfig(16, 16, 16, split_k=2)),
]


def _operands(case: Case, generator: torch.Generator) -> dict:
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    x = randn(case.N, case.C, case.H, case.W).to(case.dtype).contiguous(memory_format=torch.channels_last)
    per_group = case.C // case.groups
    weight = (randn(case.K, per_group, case.R, case.R) / (per_group * case.R**2) ** 0.5).to(case.dtype)
    operands = dict(x=x, weight=weight, scale=torch.rand(case.K, generator=generator) + 0.5, shift=randn(case.K))
    if case.identity_epilogue:
        operands.update(scale=torch.ones(case.K), shift=torch.zeros(case.K))
    if case.prologue:
        # a BN's scale and a shift that is positive on most channels: relu(0 * s + t) > 0 at the padding
        operands.update(prologue_scale=torch.rand(case.C, generator=generator) + 0.5,
                        prologue_shift=randn(case.C) * 0.5 + 0.5, prologue_relu=case.prologue_relu)
    return operands


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_matches_fp64_reference_with_one_rounding(case: Case, one_rounding, magnitude):
    generator = torch.Generator().manual_seed(0)
    operands = _operands(case, generator)
    geometry = dict(stride=case.stride, padding=case.padding, groups=case.groups)
    residual = None
    if case.residual:
        shape = conv_bn_act_ref(**operands, relu=False, **geometry).shape
        residual = torch.randn(shape, generator=generator).to(case.dtype).contiguous(memory_format=torch.channels_last)
    reference = conv_bn_act_ref(**operands, residual=residual, relu=case.relu, **geometry)
    size = magnitude(**operands, residual=residual, **geometry)
    with forced_config(case.config):
        out = conv_bn_act(**operands, residual=residual, relu=case.relu, input_precision="ieee", **geometry)
    assert out.shape == reference.shape and out.dtype == case.dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    reduction = case.C // case.groups * case.R * case.R
    one_rounding(out, reference, size, reduction, case.label, rounding_ulps=0.5)


def test_padding_belongs_to_the_transformed_tensor(one_rounding, magnitude):
    """relu(0 * s + t) = relu(t) is not zero: a kernel that zero-filled the padding *before* the prologue
    (the transform applied to every loaded lane, padding included) would add w * relu(t) at every border
    output. Here t > 0 and w > 0 everywhere and the epilogue has no ReLU, so that wrong result is larger at
    every border pixel, equal inside, and the kernel must match the right one."""
    generator = torch.Generator().manual_seed(5)
    case = Case("3x3 pad 1 prologue", 2, 16, 6, 7, 16, 3, padding=1, relu=False)
    operands = _operands(case, generator)
    operands["prologue_shift"] = operands["prologue_shift"].abs() + 0.25
    operands["weight"] = operands["weight"].abs()
    with forced_config(case.config):
        out = conv_bn_act(**operands, padding=1, relu=False)
    right = conv_bn_act_ref(**operands, padding=1, relu=False)
    size = magnitude(**operands, padding=1)
    one_rounding(out, right, size, 16 * 9, "mask after the transform", rounding_ulps=0.5)

    # the order the kernel must not use: pad x with zeros first, then transform every lane
    padded = F.pad(operands["x"].float(), (1, 1, 1, 1)).to(case.dtype)
    wrong = conv_bn_act_ref(**{**operands, "x": padded}, padding=0, relu=False)
    border = torch.ones(right.shape[2:], dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert torch.equal(wrong[..., ~border], right[..., ~border])  # the interior reads no padding
    gap = (out.double() - wrong)[..., border]
    assert bool((gap < -0.1).all()), f"smallest border gap to the padded-first result: {gap.abs().min().item():.3g}"


def test_prologue_relu_propagates_nan_like_eager():
    """A NaN input reaches the outputs that read it, as eager's BN -> relu -> conv does (relu(NaN) = NaN)."""
    generator = torch.Generator().manual_seed(6)
    operands = _operands(Case("nan", 1, 16, 5, 5, 16, 3, padding=1), generator)
    operands["x"][0, 2, 1, 3] = float("nan")
    with forced_config(TileConfig(16, 16, 16)):
        out = conv_bn_act(**operands, padding=1)
    expected = torch.isnan(conv_bn_act_ref(**operands, padding=1))
    assert int(expected.sum()) == 16 * 9 and torch.equal(torch.isnan(out), expected)


@pytest.mark.parametrize("case", [CASES[0], CASES[8]], ids=["prologue", "grouped"])
def test_pytorch_fallback_computes_the_same_op(case: Case, no_interpreter, one_rounding, magnitude):
    """Without the interpreter (CPU, and while tracing) the op's PyTorch fallback takes the same arguments."""
    operands = _operands(case, torch.Generator().manual_seed(7))
    out = conv_bn_act(**operands, groups=case.groups, padding=case.padding)
    reference = conv_bn_act_ref(**operands, groups=case.groups, padding=case.padding)
    size = magnitude(**operands, groups=case.groups, padding=case.padding)
    one_rounding(out, reference, size, case.C // case.groups * case.R**2, "fallback", rounding_ulps=0.5)


def test_grouped_tile_reads_only_its_groups_channels():
    """ResNeXt-50 layer1's 3x3 (128 channels, 32 groups of 4): a 64-wide output tile spans 16 groups, 64 input
    channels, so its reduction loop runs 9 taps x 1 block of 64 channels, not 9 x 2 (all 128)."""
    problem = ConvProblem(N=1, C=128, H=56, W=56, K=128, R=3, S=3, P=56, Q=56, stride=(1, 1), padding=(1, 1),
                          dilation=(1, 1), dtype=torch.float16, has_residual=False, relu=True, groups=32)
    assert reduction_iterations(problem, TileConfig(64, 64, 64)) == 9
    assert problem.reduction == 4 * 9
    dense = ConvProblem(**{**problem.__dict__, "groups": 1})
    assert reduction_iterations(dense, TileConfig(64, 64, 64)) == 18
    assert problem.key() != dense.key() and problem.key().endswith("_g32")


def test_every_new_flag_is_in_the_tuning_key():
    base = ConvProblem(N=1, C=64, H=8, W=8, K=64, R=3, S=3, P=8, Q=8, stride=(1, 1), padding=(1, 1),
                       dilation=(1, 1), dtype=torch.float16, has_residual=False, relu=True)
    variants = [base, ConvProblem(**{**base.__dict__, "prologue": True}),
                ConvProblem(**{**base.__dict__, "prologue": True, "prologue_relu": True}),
                ConvProblem(**{**base.__dict__, "groups": 2})]
    assert len({v.key() for v in variants}) == len(variants)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(groups=4), r"weight has 8 input channels per group; with groups=4 x must have 32 channels, got 16"),
        (dict(groups=3, x=torch.randn(1, 15, 5, 5), weight=torch.randn(8, 5, 3, 3)),
         r"groups=3 must divide the 8 output channels"),
        (dict(groups=0), r"groups must be an int >= 1, got 0"),
        (dict(prologue_scale=torch.ones(8)), r"prologue_scale and prologue_shift must be given together"),
        (dict(prologue_scale=torch.ones(4), prologue_shift=torch.zeros(4)),
         r"prologue_scale must have shape \(16,\) \(one per input channel\), got \(4,\)"),
        (dict(prologue_scale=torch.ones(16).half(), prologue_shift=torch.zeros(16)),
         r"prologue_scale must be float32 \(BN folded in fp32\), got float16"),
    ],
    ids=["groups-mismatch", "groups-not-dividing", "groups-zero", "prologue-half-given", "prologue-shape",
         "prologue-dtype"],
)
def test_errors_name_the_bad_value(change, message):
    args = dict(x=torch.randn(1, 16, 5, 5), weight=torch.randn(8, 8, 3, 3), scale=torch.ones(8),
                shift=torch.zeros(8), groups=2)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        conv_bn_act(**args)
