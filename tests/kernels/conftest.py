"""Test setup for kernels/: run the Triton kernels under the interpreter on CPU, and the tolerances the
kernel tests share (derived from the formats, notes/kernels.md §18), exposed as fixtures (--import-mode=importlib:
test modules cannot import each other).

Triton decides interpreter-or-compiler when `@triton.jit` *decorates* a kernel (triton/runtime/jit.py reads
`knobs.runtime.interpret`, i.e. TRITON_INTERPRET, at import), so setting the variable in a conftest is
fragile: any earlier import of `kernels` in the same pytest process would have fixed the compiled kernels.
`kernels.conv_bn_act` therefore reads TRITON_INTERPRET at each *launch* and runs an interpreted twin of
the kernel for CPU tensors. `triton_interpreter` sets the variable per test (monkeypatch restores it), so
only the tests in this directory see it; tests that need it off (torch.compile on CPU) unset it. The two
interpreter adjustments below are module-scoped for the same reason.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module", autouse=True)
def fast_interpreter():
    """Triton 3.9's interpreter checks every int32 add/mul for overflow (InterpreterOptions.sanitize_overflow,
    default True; 4-5x slower, measured: 3x3 conv 2x64x8x8, 32x32x32 tiles, 2.3 s -> 0.5 s). Test shapes are
    ~6 orders of magnitude below 2**31, so the check cannot fire; it is switched off for speed, except in
    the one test that requests `overflow_checks`. (Dated 2026-11, Triton 3.9.0.)"""
    yield from _interpreter_overflow_checks(False)


@pytest.fixture(scope="module", autouse=True)
def interpreter_rounds_bf16_to_nearest_even():
    """Triton 3.9's interpreter converts fp32 -> bf16 by truncation (interpreter.py `cast_impl` calls
    `_convert_float(..., rounding_mode=None)`; notes/kernels.md §16), while the GPU code rounds to nearest even
    (`cvt.rn.bf16x2.f32`, asserted in test_sm90_compile.py). Truncation is biased toward zero and builds up
    through a network: a fused bf16 ResNet block measured 3.6x eager's error with it, 0.65x without. For each
    test module here the interpreter's cast is replaced by torch's (round to nearest even), so CPU tests judge
    the numerics the GPU has. (Dated 2026-11, Triton 3.9.0.)"""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder_class = getattr(interpreter, "InterpreterBuilder", None)
    original = getattr(builder_class, "cast_impl", None)
    if original is None:  # another Triton: leave it as is
        yield
        return

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            values = np.asarray(src.data, dtype=np.float32)
            rounded = torch.from_numpy(values.reshape(-1).copy()).to(torch.bfloat16).view(torch.int16)
            bits = rounded.numpy().view(np.uint16).reshape(values.shape)
            return interpreter.TensorHandle(bits, dst_type.scalar)
        return original(self, src, dst_type)

    builder_class.cast_impl = cast_impl
    try:
        yield
    finally:
        builder_class.cast_impl = original


@pytest.fixture
def overflow_checks():
    yield from _interpreter_overflow_checks(True)


def _interpreter_overflow_checks(enabled: bool):
    from triton.runtime import interpreter

    builder = getattr(interpreter, "interpreter_builder", None)
    if builder is None or not hasattr(interpreter, "InterpreterOptions"):  # another Triton: leave it as is
        yield
        return
    saved = builder.options
    builder.options = interpreter.InterpreterOptions(sanitize_overflow=enabled)
    try:
        yield
    finally:
        builder.options = saved


@pytest.fixture
def no_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRITON_INTERPRET unset: on CPU the op runs (and traces) its PyTorch fallback."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


# ---------------------------------------------------------------------------------------------------------
# Tolerances

MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23}
MIN_SPACING = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}
FP32_UNIT_ROUNDOFF = 2.0**-24


def ulp(reference: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` numbers around each (fp64) reference value."""
    _, exponent = torch.frexp(reference.abs())  # |ref| = m * 2**e, m in [0.5, 1)
    spacing = torch.ldexp(torch.ones_like(reference), exponent - 1 - MANTISSA_BITS[dtype])
    return spacing.clamp_min(MIN_SPACING[dtype])


def mismatch_report(out: torch.Tensor, reference: torch.Tensor, bound: torch.Tensor, label: str) -> str:
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


def assert_one_rounding(out: torch.Tensor, reference: torch.Tensor, magnitude: torch.Tensor, reduction: int,
                        label: str, rounding_ulps: float = 1.0) -> None:
    """Elementwise |out - ref| <= rounding_ulps * ulp(ref) + fp32 accumulation allowance.

    The fused kernel accumulates in fp32 and rounds once to the output dtype, so the error is half an ulp of
    the output format (one ulp where the interpreter truncates bf16 casts) plus the fp32 summation error,
    bounded here by 4 * u32 * sqrt(K_red) * sum|terms| (`magnitude`). A kernel that rounded the conv output
    before the epilogue (eager's way) fails this for fp16/bf16."""
    assert out.dtype in MANTISSA_BITS, out.dtype
    allowance = 4 * FP32_UNIT_ROUNDOFF * math.sqrt(reduction) * magnitude
    bound = rounding_ulps * ulp(reference, out.dtype) + allowance
    err = (out.double() - reference).abs()
    if not bool((err <= bound).all()):
        raise AssertionError(mismatch_report(out, reference, bound, label))


def magnitude_of(x, weight, scale, shift, *, stride=1, padding=0, dilation=1, residual=None, x_ds=None,
                 weight_ds=None, stride_ds=1) -> torch.Tensor:
    """sum |terms| of each output in fp64: the scale of its accumulation error."""
    m = F.conv2d(x.double().abs(), weight.double().abs(), stride=stride, padding=padding, dilation=dilation)
    m = m * scale.double().abs().view(1, -1, 1, 1) + shift.double().abs().view(1, -1, 1, 1)
    if x_ds is not None:
        m = m + F.conv2d(x_ds.double().abs(), weight_ds.double().abs(), stride=stride_ds)
    if residual is not None:
        m = m + residual.double().abs()
    return m


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64 (the parity contract's rel-L2)."""
    return ((out.double() - reference).norm() / reference.norm()).item()


@pytest.fixture
def one_rounding():
    """`one_rounding(out, reference, magnitude, reduction, label, rounding_ulps)`: see assert_one_rounding."""
    return assert_one_rounding


@pytest.fixture
def magnitude():
    """`magnitude(x, weight, scale, shift, **geometry)`: sum |terms| per output, fp64."""
    return magnitude_of
