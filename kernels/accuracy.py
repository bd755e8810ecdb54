"""What counts as a correct output of the fused convolution: the one bound the autotuner accepts a candidate
configuration by (kernels/autotune.py) and the kernel tests assert (tests/kernels/), so both judge alike.

The kernel accumulates in fp32 and rounds once to the output format (notes/kernels.md §8, §18). Against an fp64
reference computed from the same (already rounded) operands, each output element therefore lies within

    rounding_ulps * ulp(ref)                          one rounding to the output format
  + 4 * 2**-24 * sqrt(K_red) * magnitude              fp32 accumulation (probabilistic bound)
  + 2 * 2**-10 * magnitude                            TF32 dots only: both operands cut to 10 mantissa bits

where `magnitude` is the same computation on absolute values (sum of |terms| per output). On top of the
per-element test a rel-L2 ceiling rejects an output whose error is small per element but systematic.

Why per element: the bound it replaces, 10 * eps * sqrt(K_red) * max|ref|, was 0.6-5.3x the largest bf16
output on every ResNet-50 layer, so an all-zero output, a skipped 3x3 tap and a skipped 64-channel block all
passed (notes/gpu-audit.md, item 2); a kernel that skips work is faster, so the tuner would have picked it.
A skipped trip of the reduction loop (32 channels at one tap) moves each output by ~sqrt(32) terms, far above
half an ulp in every format (tests/kernels/test_acceptance.py feeds such outputs on the real layer shapes).
"""

from __future__ import annotations

import math

import torch

MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23}
MIN_SPACING = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}
FP32_UNIT_ROUNDOFF = 2.0**-24
# TF32 keeps 10 explicit mantissa bits; Triton's tf32 dot truncates (notes/kernels.md §11): each operand's
# relative error is below 2**-10, a product's below ~2 * 2**-10.
TF32_PRODUCT_ERROR = 2 * 2.0**-10
# rel-L2 ceilings near 2**-8 (the figure): a correct bf16 output sits near 1e-3 (half an ulp of
# 2**-8 relative, RMS), fp16 near 1.5e-4, TF32 near 3e-4, exact fp32 near 1e-7.
REL_L2_CEILING = {"float16": 2.0**-8, "bfloat16": 2.0**-8, "tf32": 2.0**-8, "float32": 2.0**-16}


def ulp(reference: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` numbers around each (fp64) reference value."""
    _, exponent = torch.frexp(reference.abs())  # |ref| = m * 2**e, m in [0.5, 1)
    spacing = torch.ldexp(torch.ones_like(reference), exponent - 1 - MANTISSA_BITS[dtype])
    return spacing.clamp_min(MIN_SPACING[dtype])


def one_rounding_bound(reference: torch.Tensor, magnitude: torch.Tensor, reduction: int, dtype: torch.dtype, *,
                       rounding_ulps: float = 1.0, tf32: bool = False) -> torch.Tensor:
    """The per-element error bound above, in the reference's dtype (fp64)."""
    allowance = 4 * FP32_UNIT_ROUNDOFF * math.sqrt(reduction) * magnitude
    if tf32:
        allowance = allowance + TF32_PRODUCT_ERROR * magnitude
    return rounding_ulps * ulp(reference, dtype) + allowance


def mismatch_report(out: torch.Tensor, reference: torch.Tensor, bound: torch.Tensor, label: str) -> str:
    """How many elements miss the bound, the first three with both values, the worst error and ratio."""
    err = (out.double() - reference).abs()
    bad = ~(err <= bound)  # NaN in err counts as bad
    first = [tuple(i.tolist()) for i in bad.nonzero()[:3]]
    lines = [f"{label}: {int(bad.sum())} of {bad.numel()} elements outside the bound"]
    for index in first:
        lines.append(f"  at {index}: got {out[index].item()!r}, reference {reference[index].item()!r}, "
                     f"error {err[index].item():.3g} > bound {bound[index].item():.3g}")
    finite = torch.isfinite(err)
    lines.append(f"  max error {err[finite].max().item() if finite.any() else float('nan'):.3g}, "
                 f"max error/bound {(err[finite] / bound[finite]).max().item() if finite.any() else 0:.3g}, "
                 f"non-finite outputs {int((~torch.isfinite(out.double())).sum())}")
    return "\n".join(lines)


def one_rounding_error(out: torch.Tensor, reference: torch.Tensor, magnitude: torch.Tensor, reduction: int, *,
                       rounding_ulps: float = 1.0, tf32: bool = False, label: str = "output") -> str | None:
    """None when every element of `out` is within the one-rounding bound of the fp64 `reference`; else a
    mismatch report (count, first indices, both values, NaN/Inf)."""
    if out.shape != reference.shape:
        return f"{label}: shape {tuple(out.shape)} != reference {tuple(reference.shape)}"
    bound = one_rounding_bound(reference, magnitude, reduction, out.dtype, rounding_ulps=rounding_ulps, tf32=tf32)
    err = (out.double() - reference).abs()
    if bool((err <= bound).all()):
        return None
    return mismatch_report(out, reference, bound, label)


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64 (the parity contract's rel-L2); 0 for an all-zero match."""
    reference = reference.double()
    err = (out.double() - reference).norm().item()
    norm = reference.norm().item()
    return err / norm if norm > 0 else (0.0 if err == 0 else math.inf)


def format_name(dtype: torch.dtype, tf32: bool) -> str:
    """The key of REL_L2_CEILING: the output dtype's name, or "tf32" for fp32 outputs of TF32 dots."""
    return "tf32" if dtype == torch.float32 and tf32 else str(dtype).removeprefix("torch.")


def acceptance_error(out: torch.Tensor, reference: torch.Tensor, magnitude: torch.Tensor, reduction: int, *,
                     tf32: bool = False, label: str = "output") -> str | None:
    """The autotuner's test of a candidate's output: None when accepted, else why it was rejected.

    One ulp (not half) of the output format: the tuner's fp64 reference is computed by another library,
    whose own rounding of intermediate values is not the kernel's; the fp32 accumulation term covers the rest."""
    why = one_rounding_error(out, reference, magnitude, reduction, rounding_ulps=1.0, tf32=tf32, label=label)
    if why is not None:
        return why.splitlines()[0] + "; " + why.splitlines()[-1].strip()
    ceiling = REL_L2_CEILING[format_name(out.dtype, tf32)]
    rel = relative_error(out, reference)
    return None if rel <= ceiling else f"{label}: rel-L2 error {rel:.3g} > ceiling {ceiling:.3g}"
