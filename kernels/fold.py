"""Exact BatchNorm folding: eval-mode BN(conv(x) + bias) == conv(x) * scale + shift, per output channel.

    scale = gamma / sqrt(running_var + eps)
    shift = beta - running_mean * scale + bias * scale

Computed in fp64 from the fp32 (or fp64) BN buffers and rounded once to fp32, so each entry is the fp32
number nearest to the exact value. Folding from fp16/bf16 buffers is refused: `1 + 1e-5 == 1` in fp16 and a
cast model has already lost the statistics (notes/kernels.md §12: fold first, then cast). The conv weight is
returned unchanged (scale stays in the fp32 epilogue, so 16-bit weights stay bit-identical to the checkpoint);
`fold_into_weight` multiplies it in for paths that have no epilogue (convs left to cuDNN, the fused
downsample branch). Same math as torch.nn.utils.fusion.fuse_conv_bn_weights, without its low-precision trap.
`bn_affine` gives the same scale and shift for a BN no conv precedes (the kernel's prologue, or a lone BN);
`conv_affine` the identity epilogue (scale 1, shift = bias) of a conv with no BN after it.
"""

from __future__ import annotations

import torch
from torch import nn

HIGH_PRECISION = (torch.float32, torch.float64)


def _describe(module: nn.Module) -> str:
    return type(module).__name__


def fold_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, scale, shift) such that bn(conv(x)) == conv_nobias(x, weight) * scale + shift in eval mode.

    `weight` is a detached copy of conv.weight (its dtype); `scale` and `shift` are float32 of length
    conv.out_channels. Raises ValueError for a BN without running statistics, a channel mismatch, or
    low-precision BN buffers."""
    _check_conv(conv)
    scale, shift = _bn_affine(bn)
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm has {bn.num_features} channels but the conv has {conv.out_channels} outputs")
    if conv.bias is not None:
        shift = shift + _conv_bias(conv) * scale
    return conv.weight.detach().clone(), scale.to(torch.float32), shift.to(torch.float32)


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), float32 per channel, with bn(x) == x * scale + shift in eval mode: a BatchNorm that no
    conv precedes (a pre-activation prologue, or a lone BN). Same checks as `fold_bn`."""
    scale, shift = _bn_affine(bn)
    return scale.to(torch.float32), shift.to(torch.float32)


def conv_affine(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, scale, shift) of a conv with no BatchNorm after it: scale ones, shift its bias (or zeros),
    float32, so the fused kernel's epilogue computes conv(x) + bias exactly as `fold_bn`'s would."""
    _check_conv(conv)
    shift = _conv_bias(conv) if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    return conv.weight.detach().clone(), torch.ones(conv.out_channels), shift.to(torch.float32)


def _check_conv(conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"fold_bn needs an nn.Conv2d, got {_describe(conv)}")


def _conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias.dtype not in HIGH_PRECISION:
        raise ValueError(f"conv bias is {str(conv.bias.dtype).removeprefix('torch.')}; fold from fp32")
    return conv.bias.detach().to(torch.float64)


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """scale = gamma / sqrt(var + eps), shift = beta - mean * scale, in fp64."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"fold_bn needs a BatchNorm module, got {_describe(bn)}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_bn needs a BatchNorm with running statistics (track_running_stats=True)")
    if bn.training:
        raise ValueError("fold_bn needs an eval-mode BatchNorm (call model.eval()): training BN uses batch statistics")
    for name, buffer in (("running_mean", bn.running_mean), ("running_var", bn.running_var),
                         ("weight", bn.weight), ("bias", bn.bias)):
        if buffer is not None and buffer.dtype not in HIGH_PRECISION:
            raise ValueError(f"BatchNorm {name} is {str(buffer.dtype).removeprefix('torch.')}; fold from fp32 "
                             f"buffers: fuse the fp32 model first, then cast it")
    exact = torch.float64
    var = bn.running_var.detach().to(exact)
    mean = bn.running_mean.detach().to(exact)
    gamma = bn.weight.detach().to(exact) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().to(exact) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma * torch.rsqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_into_weight(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """weight * scale per output channel, computed in fp64 and rounded once to the weight's dtype."""
    if scale.shape != (weight.shape[0],):
        raise ValueError(f"scale must have shape ({weight.shape[0]},), got {tuple(scale.shape)}")
    folded = weight.detach().to(torch.float64) * scale.to(torch.float64).view(-1, *([1] * (weight.dim() - 1)))
    return folded.to(weight.dtype)
