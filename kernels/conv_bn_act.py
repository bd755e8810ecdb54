"""Fused convolution + folded BatchNorm (+ downsample branch) (+ residual add) (+ ReLU) for inference.

What it computes, for an input x (N x C x H x W) and a weight (K x C/groups x R x S):

    x' = relu( x * prologue_scale + prologue_shift )                       [optional prologue, per input channel]
    y  = relu( conv(x', weight, groups) * scale + shift  [+ conv1x1_strided(x_ds, weight_ds)]  [+ residual] )

with `scale`, `shift` per output channel in fp32 (a folded BatchNorm, or ones and a conv bias), one fp32
accumulator, and one rounding to the input dtype at the store. The prologue is a BatchNorm (and its ReLU) that
*precedes* the conv, as in pre-activation ResNets and DenseNet, where a ReLU between BN and conv rules out
folding into the weights: it is applied to each activation tile as it is loaded, as one fp32 fma per element
(+ ReLU) rounded to x's dtype (as eager's BN output is), and the zero padding and every other masked lane are
applied *after* it: padding belongs to the post-ReLU tensor, and relu(0 * s + t) = relu(t) is not zero
(notes/wave2.md). The ReLU of the prologue is optional (a bare BN before a conv).

Grouped convolutions (GROUPED, ResNeXt's 32x4d): each output tile reads only the input channels of the groups
its BLOCK_N output channels belong to, against a block-diagonal weight tile. The weight is packed once as
[R, S, C_WINDOW, K]: for every block of GROUP_PACK_N = 128 output channels, the input channels its groups read
(C_WINDOW of them), zero where an input channel is outside a column's group. Every BLOCK_N divides 128, so a
tile's weight rows are contiguous, as in the dense path (cp.async-pipelined on sm_90; gathering a compact
[R, S, C/groups, K] weight per column instead compiled to no async copies and 254 registers). Costs: the tensor
cores do BLOCK_N / (K / groups) times the grouped conv's multiply-adds (16x for ResNeXt-50's layer1 at
BLOCK_N = 64, 2x for layer4), and the packed weight holds 128 / (K / groups) times the compact one's elements
(capped at the dense size): ResNeXt-50's 16 grouped convs go from 2.8 MB to 17.4 MB in bf16. Depthwise
convolutions waste most.

Layout: activations NHWC (`torch.channels_last` with the logical NCHW shape); the weight packed once as
[R, S, C, K] (K contiguous) so a B tile [BLOCK_K, BLOCK_N] is a set of contiguous rows; output NHWC.

Algorithm: implicit GEMM, M = N*P*Q output pixels, N_gemm = K output channels, K_red = R*S*C. One flattened
reduction loop over (r, s, channel block) so the compiler pipelines a single loop (notes/kernels.md §6); a flat
element-wise (r, s, c) gather when C is much smaller than BLOCK_K (the 3-channel stem); a plain-GEMM row
mapping for 1x1 convolutions (strided ones are the downsample). GROUP_M swizzle of the 1-D tile grid.
The optional downsample branch (1x1, stride STRIDE_DS, weights pre-multiplied by its BN scale, its BN shift
already added into `shift`) continues into the same accumulator after the main loop: a BasicBlock or
Bottleneck's block 0 finishes in one kernel (notes/kernels.md §9, option B). Split-K (SPLIT_K > 1) writes fp32
partial sums to a [SPLIT_K, M, K] workspace; `_split_k_epilogue_kernel` adds them in a fixed order (so results
are deterministic) and applies the epilogue: small-M layers (batch 1, layer3/4) fill the GPU that way.

Precision: fp16 and bf16 operands with fp32 accumulation; fp32 operands through TF32 (`input_precision="tf32"`,
cuDNN's default for convolutions) or exact fp32 (`"ieee"`). Under the Triton interpreter bf16 `tl.dot` is wrong
(notes/kernels.md §16), so there the launcher widens bf16 tiles to fp32 before the dot (WIDEN_DOT), which is exact.
ReLU propagates NaN like eager's `relu`.

Hard limits: zero padding only; the downsample branch and the flat (r, s, c) gather are for groups = 1; int32
offsets unless a tensor reaches 2**31 elements (then USE_INT64); inference only (no autograd). A NaN or Inf
input of one group reaches the other groups of its tile (0 * Inf in the block-diagonal dot).

Naming: conv letters for sizes (N, C, H, W, K, R, S, P, Q); the weight pointer is WEIGHT because W is the input
width.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton

from kernels.autotune import tune, tuning_active
from kernels.configs import (
    ConvProblem,
    TileConfig,
    aligned_windows,
    channel_windows,
    current_forced_config,
    even_channels,
    reduction_iterations,
    resolve_flat_rsc,
    select_config,
    tuned_config,
    tuned_generation,
)

INPUT_PRECISIONS = ("tf32", "ieee")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INT32_LIMIT = 2**31


# ---------------------------------------------------------------------------------------------------------
# Reference (pure PyTorch; tests import it)


def conv_bn_act_ref(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                    stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                    dilation: int | Sequence[int] = 1, residual: torch.Tensor | None = None,
                    relu: bool = True, x_ds: torch.Tensor | None = None,
                    weight_ds: torch.Tensor | None = None, stride_ds: int = 1,
                    prologue_scale: torch.Tensor | None = None, prologue_shift: torch.Tensor | None = None,
                    prologue_relu: bool = False, groups: int = 1,
                    compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The fused op's math in `compute_dtype` (fp64 for tests), from the same (possibly 16-bit) tensors.

    `weight` is K x C/groups x R x S; `weight_ds` (K x C_ds x 1 x 1) is the downsample weight already
    multiplied by its BN scale, whose shift is already inside `shift`. The prologue is computed as the kernel
    computes it (`prologue_ref`), so only the conv and the epilogue run in `compute_dtype`. Returns NCHW in
    `compute_dtype`."""
    c = compute_dtype
    if prologue_scale is not None:
        x = prologue_ref(x, prologue_scale, prologue_shift, prologue_relu)
    y = F.conv2d(x.to(c), weight.to(c), stride=_pair(stride, "stride"), padding=_pair(padding, "padding"),
                 dilation=_pair(dilation, "dilation"), groups=groups)
    y = y * scale.to(c).view(1, -1, 1, 1) + shift.to(c).view(1, -1, 1, 1)
    if x_ds is not None:
        y = y + F.conv2d(x_ds.to(c), weight_ds.to(c), stride=stride_ds)
    if residual is not None:
        y = y + residual.to(c)
    return torch.relu(y) if relu else y


def conv_bn_act_magnitude(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                          stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                          dilation: int | Sequence[int] = 1, residual: torch.Tensor | None = None,
                          x_ds: torch.Tensor | None = None, weight_ds: torch.Tensor | None = None,
                          stride_ds: int = 1, prologue_scale: torch.Tensor | None = None,
                          prologue_shift: torch.Tensor | None = None, prologue_relu: bool = False,
                          groups: int = 1) -> torch.Tensor:
    """sum |terms| of each output in fp64 (the reference on absolute values, no ReLU): the scale of its
    accumulation error in the one-rounding bound (kernels/accuracy.py). A prologue's output is the conv's
    input: its absolute value is what the terms multiply."""

    def absolute(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.double().abs()

    if prologue_scale is not None:
        x = prologue_ref(x, prologue_scale, prologue_shift, prologue_relu)
    return conv_bn_act_ref(absolute(x), absolute(weight), absolute(scale), absolute(shift), stride=stride,
                           padding=padding, dilation=dilation, residual=absolute(residual), relu=False,
                           x_ds=absolute(x_ds), weight_ds=absolute(weight_ds), stride_ds=stride_ds, groups=groups)


def prologue_ref(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, relu: bool) -> torch.Tensor:
    """The prologue as the kernel computes it: fma(x, scale, shift) per input channel rounded once to fp32
    (exact product and sum in fp64, then one rounding), ReLU, rounded to x's dtype (fp64 input: no rounding)."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    y = x.double() * scale.double().view(view) + shift.double().view(view)
    if x.dtype != torch.float64:
        y = y.float()
    y = torch.relu(y) if relu else y
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _conv_bn_act_kernel(
    X,  # input, NHWC [N, H, W, C]
    WEIGHT,  # packed weight [R, S, C, K], K contiguous; GROUPED: [R, S, C_WINDOW, K] (pack_weight)
    SCALE,  # fp32 [K]: per-output-channel multiplier (BN gamma / sqrt(var + eps))
    SHIFT,  # fp32 [K]: per-output-channel offset (BN shift, + downsample BN shift with HAS_DOWNSAMPLE)
    PROLOGUE_SCALE,  # fp32 [C]: per-input-channel multiplier of the prologue (unused unless HAS_PROLOGUE)
    PROLOGUE_SHIFT,  # fp32 [C]: per-input-channel offset of the prologue (unused unless HAS_PROLOGUE)
    RESIDUAL,  # NHWC [N, P, Q, K] added before ReLU (unused, may alias Y, unless HAS_RESIDUAL)
    X_DS,  # downsample input NHWC [N, H_DS, W_DS, C_DS] (unused unless HAS_DOWNSAMPLE)
    WEIGHT_DS,  # downsample weight [C_DS, K], pre-multiplied by its BN scale (unused unless HAS_DOWNSAMPLE)
    Y,  # output NHWC [N, P, Q, K]; with SPLIT_K > 1 an fp32 workspace [SPLIT_K, N*P*Q, K]
    N, H, W, C,  # input sizes
    P, Q, K,  # output height, width, channels
    H_DS, W_DS, C_DS,  # downsample input sizes
    C_PER_GROUP, K_PER_GROUP,  # input and output channels of one group (C and K unless GROUPED)
    C_WINDOW,  # GROUPED: input-channel rows per tap of the packed weight (one 128-output-channel block's groups)
    R: tl.constexpr, S: tl.constexpr,  # filter height, width
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr,
    DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    STRIDE_DS: tl.constexpr,  # downsample stride (both axes)
    HAS_RESIDUAL: tl.constexpr, HAS_DOWNSAMPLE: tl.constexpr, APPLY_RELU: tl.constexpr,
    HAS_PROLOGUE: tl.constexpr, PROLOGUE_RELU: tl.constexpr,  # x' = relu?(x * PROLOGUE_SCALE + PROLOGUE_SHIFT)
    GROUPED: tl.constexpr,  # groups > 1: each tile reduces over its groups' channel window only
    GROUP_PACK_N: tl.constexpr,  # output channels per block of the packed grouped weight (a multiple of BLOCK_N)
    ALIGNED_WINDOWS: tl.constexpr,  # GROUPED: every tile's first input channel is a multiple of 16
    FLAT_RSC: tl.constexpr,  # reduce over (r, s, c) flattened element-wise (C < BLOCK_K / 2, the stem)
    EVEN_C: tl.constexpr,  # C % BLOCK_K == 0: no channel mask
    EVEN_C_DS: tl.constexpr,  # C_DS % BLOCK_K == 0
    INPUT_PRECISION: tl.constexpr,  # "tf32" or "ieee" for fp32 operands (ignored for 16-bit)
    WIDEN_DOT: tl.constexpr,  # upcast tiles to fp32 before tl.dot (bf16 under the interpreter only)
    USE_INT64: tl.constexpr,  # 64-bit offsets (a tensor of >= 2**31 elements)
    SPLIT_K: tl.constexpr,  # reduction splits (program_id(1)); > 1 writes fp32 partials to Y
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # M tiles per L2 super-row of the swizzled grid
):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    M = N * P * Q
    num_pid_m = (M + BLOCK_M - 1) // BLOCK_M
    num_pid_n = (K + BLOCK_N - 1) // BLOCK_N
    num_in_group = GROUP_M * num_pid_n
    group_id = pid // num_in_group
    first_m = group_id * GROUP_M
    group_size = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % num_in_group) % group_size
    pid_n = (pid % num_in_group) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    m_ok = offs_m < M
    n_ok = offs_n < K
    # Decode output pixel m -> (n, p, q) once per tile; all terms are non-negative.
    n_idx = offs_m // (P * Q)
    pq = offs_m - n_idx * (P * Q)
    p = pq // Q
    q = pq - p * Q

    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    if GROUPED:
        # Input channels [c_lo, c_hi) of the groups this tile's output channels belong to; the packed weight
        # holds rows from pack_lo on (the first channel of this tile's 128-output-channel block).
        n_first = pid_n * BLOCK_N
        n_last = min(n_first + BLOCK_N, K) - 1
        c_lo = (n_first // K_PER_GROUP) * C_PER_GROUP
        if ALIGNED_WINDOWS:  # 16-byte-aligned A rows: the A tile is copied asynchronously (cp.async) too
            c_lo = tl.multiple_of(c_lo, 16)
        c_hi = (n_last // K_PER_GROUP + 1) * C_PER_GROUP
        pack_lo = ((n_first // GROUP_PACK_N) * GROUP_PACK_N // K_PER_GROUP) * C_PER_GROUP
    else:
        c_lo = 0
        c_hi = C
    if FLAT_RSC:
        RSC = R * S * C
        num_iters = (RSC + BLOCK_K - 1) // BLOCK_K
    else:
        KC = (c_hi - c_lo + BLOCK_K - 1) // BLOCK_K
        num_iters = R * S * KC
    per_split = (num_iters + SPLIT_K - 1) // SPLIT_K
    it_begin = pid_k * per_split
    it_end = min(it_begin + per_split, num_iters)
    for it in range(it_begin, it_end):
        if FLAT_RSC:
            # im2col gather: column kk of the [M, R*S*C] matrix is (r, s, c).
            kk = it * BLOCK_K + offs_k
            r = kk // (S * C)
            rem = kk - r * (S * C)
            s = rem // C
            c = rem - s * C
            h = p[:, None] * STRIDE_H - PAD_H + r[None, :] * DIL_H
            w = q[:, None] * STRIDE_W - PAD_W + s[None, :] * DIL_W
            k_ok = kk < RSC
            a_mask = m_ok[:, None] & k_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            a = tl.load(X + ((n_idx[:, None] * H + h) * W + w) * C + c[None, :], mask=a_mask, other=0.0)
            channel, channel_ok = c, k_ok  # the input channel of each A column, for the prologue
            b = tl.load(WEIGHT + kk[:, None] * K + offs_n[None, :], mask=k_ok[:, None] & n_ok[None, :],
                        other=0.0)
        else:
            rs = it // KC
            c0 = c_lo + (it - rs * KC) * BLOCK_K
            r = rs // S
            s = rs - r * S
            if R == 1 and S == 1 and PAD_H == 0 and PAD_W == 0:
                if STRIDE_H == 1 and STRIDE_W == 1:
                    row = offs_m * C  # 1x1 stride 1: A is the plain [M, C] matrix
                else:
                    row = ((n_idx * H + p * STRIDE_H) * W + q * STRIDE_W) * C  # strided 1x1 (downsample)
                row_ok = m_ok
            else:
                h = p * STRIDE_H - PAD_H + r * DIL_H
                w = q * STRIDE_W - PAD_W + s * DIL_W
                row_ok = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                row = ((n_idx * H + h) * W + w) * C
            cc = c0 + offs_k
            c_ok = cc < c_hi
            if EVEN_C:
                a_mask = row_ok[:, None]
                b_mask = n_ok[None, :]
            else:
                a_mask = row_ok[:, None] & c_ok[None, :]
                b_mask = c_ok[:, None] & n_ok[None, :]
            a = tl.load(X + row[:, None] + cc[None, :], mask=a_mask, other=0.0)
            channel, channel_ok = cc, c_ok
            if GROUPED:
                # block-diagonal B, stored with its zeros: column n is non-zero on its group's channels only
                b = tl.load(WEIGHT + ((r * S + s) * C_WINDOW + cc - pack_lo)[:, None] * K + offs_n[None, :],
                            mask=b_mask, other=0.0)
            else:
                b = tl.load(WEIGHT + ((r * S + s) * C + cc)[:, None] * K + offs_n[None, :], mask=b_mask,
                            other=0.0)
        if HAS_PROLOGUE:
            pro_scale = tl.load(PROLOGUE_SCALE + channel, mask=channel_ok, other=0.0)
            pro_shift = tl.load(PROLOGUE_SHIFT + channel, mask=channel_ok, other=0.0)
            a_pro = tl.fma(a.to(tl.float32), pro_scale[None, :], pro_shift[None, :])
            if PROLOGUE_RELU:
                a_pro = tl.maximum(a_pro, 0.0, propagate_nan=tl.PropagateNan.ALL)
            # the mask after the transform: padding (and every masked lane) is zero in the transformed tensor
            a = tl.where(a_mask, a_pro, 0.0).to(X.dtype.element_ty)
        if WIDEN_DOT:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    acc = acc * tl.load(SCALE + offs_n, mask=n_ok, other=0.0)[None, :]

    if HAS_DOWNSAMPLE:
        # 1x1 conv of the block input with stride STRIDE_DS, into the same accumulator (option B).
        row_ds = ((n_idx * H_DS + p * STRIDE_DS) * W_DS + q * STRIDE_DS) * C_DS
        num_iters_ds = (C_DS + BLOCK_K - 1) // BLOCK_K
        per_split_ds = (num_iters_ds + SPLIT_K - 1) // SPLIT_K
        it_ds_begin = pid_k * per_split_ds
        it_ds_end = min(it_ds_begin + per_split_ds, num_iters_ds)
        for it in range(it_ds_begin, it_ds_end):
            cc = it * BLOCK_K + offs_k
            if EVEN_C_DS:
                a_mask = m_ok[:, None]
                b_mask = n_ok[None, :]
            else:
                a_mask = m_ok[:, None] & (cc[None, :] < C_DS)
                b_mask = (cc[:, None] < C_DS) & n_ok[None, :]
            a = tl.load(X_DS + row_ds[:, None] + cc[None, :], mask=a_mask, other=0.0)
            b = tl.load(WEIGHT_DS + cc[:, None] * K + offs_n[None, :], mask=b_mask, other=0.0)
            if WIDEN_DOT:
                acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    y_offs = offs_m[:, None] * K + offs_n[None, :]
    y_mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        acc += tl.load(SHIFT + offs_n, mask=n_ok, other=0.0)[None, :]
        if HAS_RESIDUAL:
            acc += tl.load(RESIDUAL + y_offs, mask=y_mask, other=0.0).to(tl.float32)
        if APPLY_RELU:
            acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
        tl.store(Y + y_offs, acc.to(Y.dtype.element_ty), mask=y_mask)
    else:
        split_base = pid_k.to(tl.int64) * M * K if USE_INT64 else pid_k * M * K
        tl.store(Y + split_base + y_offs, acc, mask=y_mask)


@triton.jit
def _split_k_epilogue_kernel(
    WORKSPACE,  # fp32 [SPLIT_K, M, K] partial sums (already multiplied by SCALE)
    SHIFT,  # fp32 [K]
    RESIDUAL,  # [M, K] in the output dtype (unused unless HAS_RESIDUAL)
    Y,  # output [M, K] (NHWC rows)
    M, K,  # GEMM letters: output pixels, output channels
    SPLIT_K: tl.constexpr, HAS_RESIDUAL: tl.constexpr, APPLY_RELU: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    m_ok = offs_m < M
    n_ok = offs_n < K
    offs = offs_m[:, None] * K + offs_n[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if USE_INT64:  # split * M * K reaches 2**31 before M * K does: widen the stride, not only the row offsets
        split_stride = tl.cast(M, tl.int64) * K
    else:
        split_stride = M * K
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for split in range(SPLIT_K):  # fixed order: deterministic
        acc += tl.load(WORKSPACE + split * split_stride + offs, mask=mask, other=0.0)
    acc += tl.load(SHIFT + offs_n, mask=n_ok, other=0.0)[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(RESIDUAL + offs, mask=mask, other=0.0).to(tl.float32)
    if APPLY_RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(Y + offs, acc.to(Y.dtype.element_ty), mask=mask)


# Interpreted twins of the kernels, built on first use: the launcher picks the interpreter at call time for
# CPU tensors when TRITON_INTERPRET=1 is set, whatever the variable was when this module was imported. The
# kernels therefore call no @triton.jit library function (tl.cdiv, tl.zeros...): one decorated while the interpreter
# was off cannot be called from an interpreted kernel. Integer ceil-divisions are written out.
@functools.cache
def _interpreted(kernel):
    from triton.runtime.interpreter import InterpretedFunction

    return kernel if isinstance(kernel, InterpretedFunction) else InterpretedFunction(kernel.fn)


def interpreter_enabled() -> bool:
    """TRITON_INTERPRET=1 now (read at each launch, not at import)."""
    try:
        from triton import knobs  # Triton >= 3.4: the same parsing Triton applies
    except ImportError:
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
    return bool(knobs.runtime.interpret)


# ---------------------------------------------------------------------------------------------------------
# Launcher: checks, packing, grid


@dataclass(frozen=True)
class LaunchShape:
    """What fixes a launch's compiled kernels besides the tile config: the problem and the downsample input."""

    problem: ConvProblem
    stride_ds: int = 1
    h_ds: int = 1
    w_ds: int = 1


_RECORDED: contextvars.ContextVar[list[LaunchShape] | None] = contextvars.ContextVar("kernels_recorded",
                                                                                     default=None)


@contextlib.contextmanager
def recording_launches() -> Iterator[list[LaunchShape]]:
    """Every call of the op inside the block appends its LaunchShape (also on CPU, where the PyTorch fallback
    computes the result): a CPU forward lists a model's launches for `kernels.precompile`."""
    recorded: list[LaunchShape] = []
    token = _RECORDED.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDED.reset(token)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


GROUP_PACK_N = 128  # output channels per block of a packed grouped weight: every tile's BLOCK_N divides it


def _group_blocks(in_channels: int, out_channels: int, groups: int) -> tuple[list[int], int]:
    """For a grouped weight: the first input channel of each 128-output-channel block's groups, and C_WINDOW,
    the most input channels one block reads (the packed weight's rows per tap)."""
    windows = channel_windows(in_channels, out_channels, groups, GROUP_PACK_N)
    return [lo for lo, _ in windows], max(hi - lo for lo, hi in windows)


def _grouped_rows(in_channels: int, out_channels: int, groups: int) -> tuple[torch.Tensor, int]:
    """[K, C/groups] row of the packed weight holding weight[n, j], and C_WINDOW."""
    starts, window = _group_blocks(in_channels, out_channels, groups)
    c_per_group, k_per_group = in_channels // groups, out_channels // groups
    n = torch.arange(out_channels)
    offset = (n // k_per_group) * c_per_group - torch.tensor(starts)[n // GROUP_PACK_N]
    return offset[:, None] + torch.arange(c_per_group)[None, :], window


def pack_weight(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """K x C/groups x R x S (any memory format) -> the contiguous layout the kernel reads: [R, S, C, K]; for
    groups > 1, [R, S, C_WINDOW, K], per 128-output-channel block its groups' input channels, zero outside a
    column's own group (block-diagonal)."""
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (K x C x R x S), got shape {tuple(weight.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    if groups == 1:
        return weight.permute(2, 3, 1, 0).contiguous()
    out_channels, c_per_group, r, s = weight.shape
    if out_channels % groups:
        raise ValueError(f"groups={groups} must divide the {out_channels} output channels")
    rows, window = _grouped_rows(c_per_group * groups, out_channels, groups)
    packed = weight.new_zeros((r, s, window, out_channels))
    columns = torch.arange(out_channels)[:, None].expand_as(rows)
    packed[:, :, rows, columns] = weight.permute(2, 3, 0, 1)
    return packed


def unpack_weight(packed: torch.Tensor, in_channels: int, groups: int = 1) -> torch.Tensor:
    """The inverse of `pack_weight`: K x C/groups x R x S (the PyTorch fallback and the tuner's reference)."""
    if groups == 1:
        return packed.permute(3, 2, 0, 1)
    rows, _ = _grouped_rows(in_channels, packed.shape[3], groups)
    columns = torch.arange(packed.shape[3])[:, None].expand_as(rows)
    return packed[:, :, rows.to(packed.device), columns.to(packed.device)].permute(2, 3, 0, 1)


def pack_downsample_weight(weight: torch.Tensor) -> torch.Tensor:
    """K x C_ds x 1 x 1 -> contiguous [C_ds, K]."""
    if weight.dim() != 4 or weight.shape[2:] != (1, 1):
        raise ValueError(f"downsample weight must be K x C x 1 x 1, got shape {tuple(weight.shape)}")
    return weight[:, :, 0, 0].t().contiguous()


def unpack_downsample_weight(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_downsample_weight`: K x C_ds x 1 x 1 (a view)."""
    return packed.t()[:, :, None, None]


def _check_problem(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                   residual: torch.Tensor | None, x_ds: torch.Tensor | None, weight_ds: torch.Tensor | None,
                   stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                   stride_ds: int, relu: bool, input_precision: str,
                   prologue_scale: torch.Tensor | None = None, prologue_shift: torch.Tensor | None = None,
                   prologue_relu: bool = False, groups: int = 1) -> ConvProblem:
    """Validate a launch on packed weights; every message names the bad value and what is allowed."""
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N x C x H x W), got shape {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x has dtype {_dtype_name(x.dtype)}; allowed: float16, bfloat16, float32")
    if x.device.type not in ("cuda", "cpu", "meta"):
        raise ValueError(f"x is on {x.device}; allowed: cuda (cpu runs the Triton interpreter under "
                         f"TRITON_INTERPRET=1, else a PyTorch fallback)")
    N, C, H, W = x.shape
    if weight.dim() != 4:
        raise ValueError(f"packed weight must be 4-D [R, S, C, K], got shape {tuple(weight.shape)}")
    R, S, C_w, K = weight.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    if groups == 1 and C_w != C:
        raise ValueError(f"weight has {C_w} input channels but x has {C}")
    if groups > 1:
        if C % groups or K % groups:
            raise ValueError(f"groups={groups} must divide the {C} input and {K} output channels")
        window = _group_blocks(C, K, groups)[1]
        if C_w != window:
            raise ValueError(f"packed grouped weight must be [{R}, {S}, {window}, {K}] for {C} input channels in "
                             f"{groups} groups (kernels.conv_bn_act.pack_weight), got {tuple(weight.shape)}")
    if weight.dtype != x.dtype:
        raise ValueError(f"weight dtype {_dtype_name(weight.dtype)} differs from x dtype "
                         f"{_dtype_name(x.dtype)}; cast both to one of float16, bfloat16, float32")
    for name, vec in (("scale", scale), ("shift", shift)):
        if vec.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 (BN folded in fp32), got {_dtype_name(vec.dtype)}")
        if vec.shape != (K,):
            raise ValueError(f"{name} must have shape ({K},) (one per output channel), got {tuple(vec.shape)}")
    if (prologue_scale is None) != (prologue_shift is None):
        raise ValueError("prologue_scale and prologue_shift must be given together (the BN before the conv)")
    for name, vec in (("prologue_scale", prologue_scale), ("prologue_shift", prologue_shift)):
        if vec is None:
            continue
        if vec.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 (BN folded in fp32), got {_dtype_name(vec.dtype)}")
        if vec.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) (one per input channel), got {tuple(vec.shape)}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or stride_ds < 1:
        raise ValueError(f"stride {stride} and dilation {dilation} must be >= 1, padding {padding} >= 0, "
                         f"downsample stride {stride_ds} >= 1")
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision {input_precision!r} is not allowed; one of: tf32, ieee")
    P = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + 2 * padding[1] - dilation[1] * (S - 1) - 1) // stride[1] + 1
    if P < 1 or Q < 1:
        raise ValueError(f"a {R}x{S} filter (dilation {dilation}, padding {padding}) does not fit a {H}x{W} input")
    tensors = [("weight", weight), ("scale", scale), ("shift", shift)]
    if residual is not None:
        if tuple(residual.shape) != (N, K, P, Q):
            raise ValueError(f"residual must have the output shape {(N, K, P, Q)}, got {tuple(residual.shape)}")
        if residual.dtype != x.dtype:
            raise ValueError(f"residual dtype {_dtype_name(residual.dtype)} differs from x dtype "
                             f"{_dtype_name(x.dtype)}")
        tensors.append(("residual", residual))
    c_ds = 0
    if (x_ds is None) != (weight_ds is None):
        raise ValueError("x_ds and weight_ds must be given together (the fused downsample branch)")
    if x_ds is not None:
        if x_ds.dim() != 4 or x_ds.shape[0] != N:
            raise ValueError(f"x_ds must be N x C_ds x H_ds x W_ds with N = {N}, got {tuple(x_ds.shape)}")
        c_ds, h_ds, w_ds = x_ds.shape[1:]
        if weight_ds.shape != (c_ds, K):
            raise ValueError(f"packed downsample weight must be [{c_ds}, {K}], got {tuple(weight_ds.shape)}")
        if ((h_ds - 1) // stride_ds + 1, (w_ds - 1) // stride_ds + 1) != (P, Q):
            raise ValueError(f"downsample of a {h_ds}x{w_ds} input with stride {stride_ds} does not give the "
                             f"{P}x{Q} output")
        for name, t in (("x_ds", x_ds), ("weight_ds", weight_ds)):
            if t.dtype != x.dtype:
                raise ValueError(f"{name} dtype {_dtype_name(t.dtype)} differs from x dtype {_dtype_name(x.dtype)}")
        tensors += [("x_ds", x_ds), ("weight_ds", weight_ds)]
    if prologue_scale is not None:
        tensors += [("prologue_scale", prologue_scale), ("prologue_shift", prologue_shift)]
    for name, t in tensors:
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; all tensors must share a device")
    return ConvProblem(N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=P, Q=Q, stride=stride, padding=padding,
                       dilation=dilation, dtype=x.dtype, has_residual=residual is not None, relu=relu,
                       c_ds=c_ds, input_precision=input_precision, groups=groups,
                       prologue=prologue_scale is not None, prologue_relu=prologue_scale is not None and prologue_relu)


def _fallback(x, weight, scale, shift, residual, x_ds, weight_ds, stride, padding, dilation, stride_ds, relu,
              prologue_scale=None, prologue_shift=None, prologue_relu=False, groups=1):
    """The same math with PyTorch ops (fp32 accumulation and epilogue, one rounding): CPU without the
    interpreter, and tracing on CPU (torch.compile / torch.export), where the interpreter cannot run."""
    weight_kcrs, geometry = _reference_operands(x, weight, residual, x_ds, weight_ds, stride, padding, dilation,
                                                stride_ds, prologue_scale, prologue_shift, prologue_relu, groups)
    y = conv_bn_act_ref(x, weight_kcrs, scale, shift, relu=relu, compute_dtype=torch.float32, **geometry)
    return y.to(x.dtype).contiguous(memory_format=torch.channels_last)


def _reference_operands(x, weight, residual, x_ds, weight_ds, stride, padding, dilation, stride_ds, prologue_scale,
                        prologue_shift, prologue_relu, groups) -> tuple[torch.Tensor, dict]:
    """The packed operands as `conv_bn_act_ref` takes them: the K x C/groups x R x S weight, and its keywords."""
    geometry = dict(stride=stride, padding=padding, dilation=dilation, residual=residual, x_ds=x_ds,
                    weight_ds=None if weight_ds is None else unpack_downsample_weight(weight_ds), stride_ds=stride_ds,
                    prologue_scale=prologue_scale, prologue_shift=prologue_shift, prologue_relu=prologue_relu,
                    groups=groups)
    return unpack_weight(weight, x.shape[1], groups), geometry


def _use_interpreter(x: torch.Tensor) -> bool:
    return interpreter_enabled() and not is_fake(x)


@triton_op("resbench::conv_bn_act", mutates_args=())
def conv_bn_act_packed(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       residual: torch.Tensor | None, x_ds: torch.Tensor | None, weight_ds: torch.Tensor | None,
                       stride: list[int], padding: list[int], dilation: list[int], stride_ds: int,
                       relu: bool, input_precision: str, prologue_scale: torch.Tensor | None = None,
                       prologue_shift: torch.Tensor | None = None, prologue_relu: bool = False,
                       groups: int = 1) -> torch.Tensor:
    """The custom op on pre-packed weights ([R, S, C / groups, K]; downsample [C_ds, K]): what fused modules
    call. `prologue_scale`/`prologue_shift` (fp32, one per input channel; `prologue_relu`): the BN (-ReLU)
    applied to x as it is loaded.

    Runs the Triton kernel on CUDA (and on meta/fake tensors while tracing); on CPU it runs the Triton
    interpreter when TRITON_INTERPRET=1 is set, and the PyTorch fallback otherwise."""
    stride_hw, padding_hw, dilation_hw = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    problem = _check_problem(x, weight, scale, shift, residual, x_ds, weight_ds, stride_hw, padding_hw,
                             dilation_hw, stride_ds, relu, input_precision, prologue_scale, prologue_shift,
                             prologue_relu, groups)
    prologue = (prologue_scale, prologue_shift) if problem.prologue else None
    h_ds, w_ds = (x_ds.shape[2], x_ds.shape[3]) if x_ds is not None else (1, 1)
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded.append(LaunchShape(problem, stride_ds, h_ds, w_ds))
    interpreting = x.device.type == "cpu" and _use_interpreter(x)
    if x.device.type == "cpu" and not interpreting:
        return _fallback(x, weight, scale, shift, residual, x_ds, weight_ds, stride_hw, padding_hw,
                         dilation_hw, stride_ds, relu, prologue_scale, prologue_shift, problem.prologue_relu, groups)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous()
    if residual is not None:
        residual = residual.contiguous(memory_format=torch.channels_last)
    if x_ds is not None:
        x_ds = x_ds.contiguous(memory_format=torch.channels_last)
        weight_ds = weight_ds.contiguous()
    config = select_config(problem, x.device, interpreting)
    y = torch.empty((problem.N, problem.K, problem.P, problem.Q), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last)
    if _should_tune(problem, x):
        reference, magnitude = _tuning_reference(x, weight, scale, shift, residual, x_ds, weight_ds, stride_hw,
                                                 padding_hw, dilation_hw, stride_ds, relu, prologue_scale,
                                                 prologue_shift, problem.prologue_relu, groups)
        plans: dict[TileConfig, LaunchPlan] = {}  # one plan per candidate: do_bench times launches, not setup

        def launch(candidate: TileConfig, out: torch.Tensor) -> None:
            if candidate not in plans:
                plans[candidate] = LaunchPlan(problem, candidate, stride_ds, h_ds, w_ds, False)
            plans[candidate].run(x, weight, scale, shift, residual, x_ds, weight_ds, out, prologue)

        config = tune(problem, x.device, launch, reference, magnitude, y)
    LaunchPlan(problem, config, stride_ds, h_ds, w_ds, interpreting).run(x, weight, scale, shift, residual, x_ds,
                                                                         weight_ds, y, prologue)
    return y


def _tuning_reference(x, weight, scale, shift, residual, x_ds, weight_ds, stride, padding, dilation, stride_ds,
                      relu, prologue_scale=None, prologue_shift=None, prologue_relu=False,
                      groups=1) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp64 reference and magnitude the tuner checks candidates against, from the packed operands
    (fp64 on the GPU: about 2 x 4 GFLOP per ResNet-50 image, a fraction of a second at batch 256)."""
    weight_kcrs, geometry = _reference_operands(x, weight, residual, x_ds, weight_ds, stride, padding, dilation,
                                                stride_ds, prologue_scale, prologue_shift, prologue_relu, groups)
    reference = conv_bn_act_ref(x, weight_kcrs, scale, shift, relu=relu, **geometry)
    return reference, conv_bn_act_magnitude(x, weight_kcrs, scale, shift, **geometry)


def _pinned_options(kernel) -> dict[str, bool]:
    """FMA contraction pinned on (Triton 3.9 warns its default flips in 3.10; notes/kernels.md §8) for direct
    launches. A traced launch (torch.compile) is compiled by Inductor with Triton's default, which takes
    only documented config names."""
    from torch._higher_order_ops.triton_kernel_wrap import TraceableTritonKernelWrapper

    return {} if isinstance(kernel, TraceableTritonKernelWrapper) else {"enable_fp_fusion": True}


def _should_tune(problem: ConvProblem, x: torch.Tensor) -> bool:
    """Tune inside `kernels.autotuning()` only: real CUDA tensors, not capturing, no forced or tuned config."""
    if x.device.type != "cuda" or not tuning_active() or is_fake(x) or current_forced_config() is not None:
        return False
    return not torch.cuda.is_current_stream_capturing() and tuned_config(problem, x.device) is None


class PlanCache(dict):
    """A layer's launch plans by input shape (`run_cached`): not copied with the module (a deep copy or a
    pickle starts empty), rebuilt lazily."""

    def __deepcopy__(self, memo: dict) -> PlanCache:
        return type(self)()

    def __reduce__(self):
        return type(self), ()


class LaunchPlan:
    """Everything about a launch that depends only on the problem and the config (kernels, grid, int64 and
    split-K decisions, constexprs, options), computed once: `run` then passes only the tensors.

    Built per call by the custom op; cached per layer and input shape by `run_cached` (the triton backend's
    forward), so that a forward's host work is the two launch calls and nothing else."""

    def __init__(self, problem: ConvProblem, config: TileConfig, stride_ds: int, h_ds: int, w_ds: int,
                 interpreting: bool, traceable: bool = True):
        """`traceable`: launch through `wrap_triton` (inside the custom op, which torch.compile traces);
        False launches the JIT kernels directly (`run_cached`, eager only)."""
        if interpreting:
            self.main_kernel = _interpreted(_conv_bn_act_kernel)
            self.epilogue_kernel = _interpreted(_split_k_epilogue_kernel)
        elif traceable:
            self.main_kernel = wrap_triton(_conv_bn_act_kernel)
            self.epilogue_kernel = wrap_triton(_split_k_epilogue_kernel)
        else:
            self.main_kernel, self.epilogue_kernel = _conv_bn_act_kernel, _split_k_epilogue_kernel
        self.problem, self.config = problem, config
        if problem.groups > 1 and GROUP_PACK_N % config.block_n:
            raise ValueError(f"a grouped convolution needs BLOCK_N dividing {GROUP_PACK_N}, got {config.label()}")
        M, K = problem.M, problem.K
        self.split_k = split_k = max(1, min(config.split_k, reduction_iterations(problem, config)))
        has_ds = problem.c_ds > 0
        largest = max(problem.N * problem.C * problem.H * problem.W, M * K * split_k,
                      problem.N * problem.c_ds * h_ds * w_ds)
        use_int64 = largest >= INT32_LIMIT
        self.grid = (triton.cdiv(M, config.block_m) * triton.cdiv(K, config.block_n), split_k)
        self.sizes = (problem.N, problem.H, problem.W, problem.C, problem.P, problem.Q, K, h_ds, w_ds,
                      problem.c_ds if has_ds else 1, problem.C // problem.groups, K // problem.groups,
                      _group_blocks(problem.C, K, problem.groups)[1] if problem.groups > 1 else problem.C)
        self.main_constexprs = dict(
            R=problem.R, S=problem.S,
            STRIDE_H=problem.stride[0], STRIDE_W=problem.stride[1],
            PAD_H=problem.padding[0], PAD_W=problem.padding[1],
            DIL_H=problem.dilation[0], DIL_W=problem.dilation[1],
            STRIDE_DS=stride_ds,
            # with split-K the epilogue kernel adds the residual and applies the ReLU
            HAS_RESIDUAL=problem.has_residual and split_k == 1, HAS_DOWNSAMPLE=has_ds,
            APPLY_RELU=problem.relu and split_k == 1,
            HAS_PROLOGUE=problem.prologue, PROLOGUE_RELU=problem.prologue_relu, GROUPED=problem.groups > 1,
            GROUP_PACK_N=GROUP_PACK_N, ALIGNED_WINDOWS=aligned_windows(problem, config),
            FLAT_RSC=resolve_flat_rsc(problem, config),
            EVEN_C=even_channels(problem, config),
            EVEN_C_DS=problem.c_ds % config.block_k == 0,
            INPUT_PRECISION=problem.input_precision,
            WIDEN_DOT=interpreting and problem.dtype == torch.bfloat16,
            USE_INT64=use_int64,
            SPLIT_K=split_k,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
            num_warps=config.num_warps, num_stages=config.num_stages, **_pinned_options(self.main_kernel),
        )
        epilogue_block = 64
        self.epilogue_grid = (triton.cdiv(M, epilogue_block), triton.cdiv(K, epilogue_block))
        self.epilogue_constexprs = dict(
            SPLIT_K=split_k, HAS_RESIDUAL=problem.has_residual, APPLY_RELU=problem.relu, USE_INT64=use_int64,
            BLOCK_M=epilogue_block, BLOCK_N=epilogue_block, num_warps=4, **_pinned_options(self.epilogue_kernel))
        self.workspace_shape = (split_k, M, K)

    def run(self, x, weight, scale, shift, residual, x_ds, weight_ds, y,
            prologue: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Launch on contiguous operands (x, residual, x_ds channels_last; packed weights) into `y`;
        `prologue`: (scale, shift) per input channel when the problem has one."""
        split_k = self.split_k
        out = y if split_k == 1 else torch.empty(self.workspace_shape, dtype=torch.float32, device=y.device)
        has_ds = x_ds is not None
        self.main_kernel[self.grid](
            x, weight, scale, shift,
            *(prologue if prologue is not None else (scale, shift)),
            residual if residual is not None else y,
            x_ds if has_ds else x,
            weight_ds if has_ds else weight,
            out, *self.sizes, **self.main_constexprs)
        if split_k > 1:
            self.epilogue_kernel[self.epilogue_grid](
                out, shift, residual if residual is not None else y, y, self.problem.M, self.problem.K,
                **self.epilogue_constexprs)


def run_cached(plans: PlanCache, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
               residual: torch.Tensor | None, x_ds: torch.Tensor | None, weight_ds: torch.Tensor | None,
               stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], stride_ds: int,
               relu: bool, input_precision: str, prologue_scale: torch.Tensor | None = None,
               prologue_shift: torch.Tensor | None = None, prologue_relu: bool = False,
               groups: int = 1) -> torch.Tensor | None:
    """The fused op for eager CUDA calls of one layer, without the custom-op dispatch, the checks and the
    config lookup after the first call of each input shape: those built a `LaunchPlan`, kept in `plans` (the
    layer's own dict). None where the op must run instead: CPU, tracing or compiling, tuning active, a forced
    config, or an operand that is not already in the kernel's layout.

    Why (notes/gpu-audit.md, item 6): the op path spends ~27 us of host time per call before the launch, x 53
    convs per ResNet-50 forward ~ 1.4 ms, more than the whole batch-32 forward's GPU time is worth skipping."""
    if (not x.is_cuda or _tracing(x) or tuning_active() or current_forced_config() is not None
            or not x.is_contiguous(memory_format=torch.channels_last)
            or (residual is not None and not residual.is_contiguous(memory_format=torch.channels_last))
            or (x_ds is not None and not x_ds.is_contiguous(memory_format=torch.channels_last))):
        return None
    key = (x.shape, x.dtype, x.device, None if residual is None else residual.dtype,
           None if x_ds is None else x_ds.shape, relu)
    cached = plans.get(key)
    if cached is None or cached[0] != tuned_generation():
        problem = _check_problem(x, weight, scale, shift, residual, x_ds, weight_ds, stride, padding, dilation,
                                 stride_ds, relu, input_precision, prologue_scale, prologue_shift, prologue_relu,
                                 groups)
        h_ds, w_ds = (x_ds.shape[2], x_ds.shape[3]) if x_ds is not None else (1, 1)
        config = select_config(problem, x.device, interpreting=False)
        cached = plans[key] = (tuned_generation(), LaunchPlan(problem, config, stride_ds, h_ds, w_ds, False,
                                                                traceable=False))
    plan = cached[1]
    problem = plan.problem
    y = torch.empty((problem.N, problem.K, problem.P, problem.Q), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last)
    plan.run(x, weight, scale, shift, residual, x_ds, weight_ds, y,
             (prologue_scale, prologue_shift) if plan.problem.prologue else None)
    return y


def _tracing(x: torch.Tensor) -> bool:
    return torch.compiler.is_compiling() or is_fake(x)


# ---------------------------------------------------------------------------------------------------------
# Public entry point


def conv_bn_act(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                dilation: int | Sequence[int] = 1, residual: torch.Tensor | None = None, relu: bool = True,
                input_precision: str = "tf32", prologue_scale: torch.Tensor | None = None,
                prologue_shift: torch.Tensor | None = None, prologue_relu: bool = False,
                groups: int = 1) -> torch.Tensor:
    """relu(conv2d(x', weight, groups) * scale + shift + residual), x' = relu?(x * prologue_scale +
    prologue_shift) when a prologue is given, fused in one kernel.

    x: N x C x H x W (channels_last or contiguous) in float16, bfloat16 or float32; weight: K x C/groups x R x S
    in x's dtype; scale, shift: float32 of length K; prologue_scale, prologue_shift: float32 of length C;
    residual: shaped like the output, in x's dtype. Returns N x K x P x Q in channels_last, in x's dtype.
    `input_precision` ("tf32" or "ieee") applies to float32 inputs. Packs the weight on every call: modules
    built by `kernels.fuse_model` pack once."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 4-D tensor (K x C x R x S), got {shape}")
    per_group = weight.shape[1]
    valid_groups = isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1
    if valid_groups and isinstance(x, torch.Tensor) and x.dim() == 4 and per_group * groups != x.shape[1]:
        raise ValueError(f"weight has {per_group} input channels per group; with groups={groups} x must have "
                         f"{per_group * groups} channels, got {x.shape[1]}")
    return torch.ops.resbench.conv_bn_act(
        x, pack_weight(weight, groups), scale, shift, residual, None, None,
        list(_pair(stride, "stride")), list(_pair(padding, "padding")), list(_pair(dilation, "dilation")),
        1, bool(relu), input_precision, prologue_scale, prologue_shift, bool(prologue_relu), groups)
