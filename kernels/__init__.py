"""resbench's fused Triton kernels: conv + folded BatchNorm + residual add + ReLU in one launch.

Public API (stable): `conv_bn_act` (the fused op: optional BN-ReLU prologue, grouped convs), `fold_bn` (exact
fp32 BatchNorm folding), `fuse_model` (an inference copy of a CNN whose convs, with the BN, ReLU and residual
add around them, run on the fused op). `conv_bn_act_ref` is the
pure-PyTorch reference the tests compare against; `autotuning` tunes launch configs on a GPU.
See docs/kernels.md."""

from kernels.autotune import autotuning
from kernels.conv_bn_act import conv_bn_act, conv_bn_act_ref
from kernels.fold import fold_bn
from kernels.fuse import FusedConvBnAct, fuse_model

__all__ = ["FusedConvBnAct", "autotuning", "conv_bn_act", "conv_bn_act_ref", "fold_bn", "fuse_model"]
