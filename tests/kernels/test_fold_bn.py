"""fold_bn: exact folding of eval-mode BatchNorm into a per-channel fp32 scale and shift (notes/kernels.md §12)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels import fold_bn
from kernels.fold import fold_into_weight


def _conv_bn(channels_in=6, channels_out=8, bias=False, affine=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(channels_out, affine=affine, eps=1e-5)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / 7)
        if bias:
            conv.bias.copy_(torch.randn(channels_out, generator=generator))
        bn.running_mean.copy_(torch.randn(channels_out, generator=generator))
        bn.running_var.copy_(torch.rand(channels_out, generator=generator) * 4 + 0.1)
        if affine:
            bn.weight.copy_(torch.rand(channels_out, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(channels_out, generator=generator))
    return conv.eval(), bn.eval()


def _exact_fp32(values) -> torch.Tensor:
    """The fp32 numbers nearest to `values` (Python doubles from math.*), rounded by numpy, not torch."""
    return torch.from_numpy(np.array(values, dtype=np.float64).astype(np.float32))


def _expected(conv, bn):
    mean, var = bn.running_mean.double().tolist(), bn.running_var.double().tolist()
    gamma = bn.weight.double().tolist() if bn.affine else [1.0] * len(mean)
    beta = bn.bias.double().tolist() if bn.affine else [0.0] * len(mean)
    bias = conv.bias.double().tolist() if conv.bias is not None else [0.0] * len(mean)
    scale = [g / math.sqrt(v + bn.eps) for g, v in zip(gamma, var, strict=True)]
    shift = [b - m * s + c * s for b, m, s, c in zip(beta, mean, scale, bias, strict=True)]
    return _exact_fp32(scale), _exact_fp32(shift)


@pytest.mark.parametrize("bias, affine", [(False, True), (True, True), (False, False)],
                         ids=["no-bias", "conv-bias", "bn-affine-false"])
def test_scale_and_shift_are_the_nearest_fp32_numbers(bias, affine):
    conv, bn = _conv_bn(bias=bias, affine=affine)
    weight, scale, shift = fold_bn(conv, bn)
    expected_scale, expected_shift = _expected(conv, bn)
    assert scale.dtype == shift.dtype == torch.float32
    assert torch.equal(scale, expected_scale), (scale - expected_scale).abs().max()
    assert torch.equal(shift, expected_shift), (shift - expected_shift).abs().max()
    assert torch.equal(weight, conv.weight) and weight.data_ptr() != conv.weight.data_ptr()


def test_gamma_zero_and_tiny_or_zero_variance_channels():
    conv, bn = _conv_bn()
    with torch.no_grad():
        bn.weight[0] = 0.0  # zero_init_residual: the conv branch vanishes
        bn.running_var[1] = 0.0  # scale = gamma / sqrt(eps), about 316 x gamma
        bn.running_var[2] = 1e-7  # below fp16's normal range: a 16-bit fold is least accurate here
    weight, scale, shift = fold_bn(conv, bn)
    assert scale[0].item() == 0.0 and shift[0].item() == bn.bias[0].item()
    assert torch.isfinite(scale).all() and torch.isfinite(shift).all()
    expected_scale, expected_shift = _expected(conv, bn)
    assert torch.equal(scale, expected_scale) and torch.equal(shift, expected_shift)
    assert scale[1].item() == pytest.approx(bn.weight[1].item() / math.sqrt(1e-5), rel=1e-7)


def test_folded_affine_equals_eval_batchnorm_in_fp64():
    """bn(conv(x)) == conv_nobias(x) * scale + shift, to fp32 rounding of scale and shift (rel ~6e-8)."""
    conv, bn = _conv_bn(bias=True)
    with torch.no_grad():
        bn.weight[0] = 0.0
        bn.running_var[1] = 1e-7
    x = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weight, scale, shift = fold_bn(conv, bn)
    with torch.no_grad():
        expected = bn.double()(conv.double()(x))
        folded = F.conv2d(x, weight.double(), padding=1) * scale.double().view(1, -1, 1, 1) + shift.double().view(
            1, -1, 1, 1)
    magnitude = F.conv2d(x.abs(), weight.double().abs(), padding=1) * scale.double().abs().view(1, -1, 1, 1) + (
        shift.double().abs().view(1, -1, 1, 1))
    # Only the fp32 rounding of scale and shift separates the two: |error| <= 2**-24 * sum |terms| per output.
    assert bool(((folded - expected).abs() <= 2**-24 * magnitude + 1e-12).all())


def test_fold_into_weight_rounds_once():
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(2)).half()
    scale = torch.tensor([0.0, 1.0, 316.2277, 1e-3])
    folded = fold_into_weight(weight, scale)
    assert folded.dtype == torch.float16
    expected = (weight.double() * scale.double().view(-1, 1, 1, 1)).half()
    assert torch.equal(folded, expected)
    assert torch.equal(folded[1], weight[1]) and bool((folded[0] == 0).all())


@pytest.mark.parametrize(
    "prepare, message",
    [
        (lambda conv, bn: (conv, bn.half()), r"BatchNorm running_mean is float16; fold from fp32 buffers"),
        (lambda conv, bn: (conv, bn.bfloat16()), r"BatchNorm running_mean is bfloat16"),
        (lambda conv, bn: (conv, bn.train()), r"fold_bn needs an eval-mode BatchNorm"),
        (lambda conv, bn: (conv, nn.BatchNorm2d(8, track_running_stats=False).eval()), r"running statistics"),
        (lambda conv, bn: (conv, nn.BatchNorm2d(5).eval()), r"BatchNorm has 5 channels but the conv has 8 outputs"),
        (lambda conv, bn: (nn.Linear(3, 8), bn), r"fold_bn needs an nn.Conv2d, got Linear"),
        (lambda conv, bn: (conv, nn.LayerNorm(8)), r"fold_bn needs a BatchNorm module, got LayerNorm"),
    ],
    ids=["fp16-buffers", "bf16-buffers", "training", "no-running-stats", "channels", "not-conv", "not-bn"],
)
def test_refuses_what_it_cannot_fold_exactly(prepare, message):
    conv, bn = _conv_bn()
    with pytest.raises(ValueError, match=message):
        fold_bn(*prepare(conv, bn))
