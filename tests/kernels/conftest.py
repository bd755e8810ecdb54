"""Test setup for kernels/: run the Triton kernels under the interpreter on CPU, and the tolerances the
kernel tests share (kernels/accuracy.py: the same one-rounding bound the autotuner accepts candidates by),
exposed as fixtures (--import-mode=importlib: test modules cannot import each other).

Triton decides interpreter-or-compiler when `@triton.jit` *decorates* a kernel (triton/runtime/jit.py reads
`knobs.runtime.interpret`, i.e. TRITON_INTERPRET, at import), so setting the variable in a conftest is
fragile: any earlier import of `kernels` in the same pytest process would have fixed the compiled kernels.
`kernels.conv_bn_act` therefore reads TRITON_INTERPRET at each *launch* and runs an interpreted twin of
the kernel for CPU tensors. `triton_interpreter` sets the variable per test (monkeypatch restores it), so
only the tests in this directory see it; tests that need it off (torch.compile on CPU) unset it. The two
interpreter adjustments below are module-scoped for the same reason.

Which modules get the interpreter: GPU-marked tests never (they compile for the GPU: under TRITON_INTERPRET=1
torch.compile would build Inductor's kernels for the interpreter, not sm_90; notes/gpu-audit.md item 4), and a
module that sets `USES_INTERPRETER = False` neither (it needs no kernel launch on CPU).

The interpreter floor: Triton < 3.7 converts one-element arrays to Python ints with `int(array)`
(interpreter.py, `tensor.__index__`), which numpy 2.4 and later refuse ("only 0-dimensional arrays can be
converted to Python scalars"; 3.7.0 added `.squeeze()`). Under that combination (Triton 3.6 + numpy 2.5 on the
H200 image; verified here with 3.6.0 + numpy 2.4.6) the interpreter tests are skipped with that reason.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from kernels.accuracy import one_rounding_error
from kernels.conv_bn_act import conv_bn_act_magnitude

INTERPRETER_FLOOR = (3, 7)


def _interpreter_unusable() -> str | None:
    """Why the Triton interpreter cannot run here (None when it can): probed, not guessed from versions."""
    import numpy as np
    import triton

    version = tuple(int(part) for part in triton.__version__.split(".")[:2])
    if version >= INTERPRETER_FLOOR:
        return None
    try:
        int(np.array([1]))  # what Triton < 3.7's interpreter does with every scalar index
    except TypeError:
        return (f"the Triton {triton.__version__} interpreter fails with numpy {np.__version__} (int() of a "
                f"one-element array); interpreter tests need Triton >= 3.7 or numpy < 2.4")
    return None


INTERPRETER_UNUSABLE = _interpreter_unusable()


def _wants_interpreter(node: pytest.Item | pytest.Module, module) -> bool:
    return node.get_closest_marker("gpu") is None and getattr(module, "USES_INTERPRETER", True)


@pytest.fixture(autouse=True)
def triton_interpreter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _wants_interpreter(request.node, request.module):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        return
    if INTERPRETER_UNUSABLE:
        pytest.skip(INTERPRETER_UNUSABLE)
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module", autouse=True)
def fast_interpreter(request: pytest.FixtureRequest):
    """Triton 3.9's interpreter checks every int32 add/mul for overflow (InterpreterOptions.sanitize_overflow,
    default True; 4-5x slower, measured: 3x3 conv 2x64x8x8, 32x32x32 tiles, 2.3 s -> 0.5 s). Test shapes are
    ~6 orders of magnitude below 2**31, so the check cannot fire; it is switched off for speed, except in
    the one test that requests `overflow_checks`. (Dated 2026-11, Triton 3.9.0.)"""
    if not _wants_interpreter(request.node, request.module):
        yield
        return
    yield from _interpreter_overflow_checks(False)


@pytest.fixture(scope="module", autouse=True)
def interpreter_rounds_bf16_to_nearest_even(request: pytest.FixtureRequest):
    """Triton 3.9's interpreter converts fp32 -> bf16 by truncation (interpreter.py `cast_impl` calls
    `_convert_float(..., rounding_mode=None)`; notes/kernels.md §16), while the GPU code rounds to nearest even
    (`cvt.rn.bf16x2.f32`, asserted in test_sm90_compile.py). Truncation is biased toward zero and builds up
    through a network: a fused bf16 ResNet block measured 3.6x eager's error with it, 0.65x without. For each
    test module here the interpreter's cast is replaced by torch's (round to nearest even), so CPU tests judge
    the numerics the GPU has. (Dated 2026-11, Triton 3.9.0.)"""
    if not _wants_interpreter(request.node, request.module):
        yield
        return
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
# Tolerances (kernels/accuracy.py)


def assert_one_rounding(out: torch.Tensor, reference: torch.Tensor, magnitude: torch.Tensor, reduction: int,
                        label: str, rounding_ulps: float = 1.0, tf32: bool = False) -> None:
    """Elementwise |out - ref| <= rounding_ulps * ulp(ref) + fp32 accumulation allowance (+ TF32 operand
    rounding): kernels.accuracy.one_rounding_error, raised as an AssertionError with its mismatch report.

    The fused kernel accumulates in fp32 and rounds once to the output dtype, so the error is half an ulp of
    the output format plus the fp32 summation error. A kernel that rounded the conv output before the
    epilogue (eager's way) fails this for fp16/bf16."""
    why = one_rounding_error(out, reference, magnitude, reduction, rounding_ulps=rounding_ulps, tf32=tf32,
                             label=label)
    if why is not None:
        raise AssertionError(why)


@pytest.fixture
def one_rounding():
    """`one_rounding(out, reference, magnitude, reduction, label, rounding_ulps, tf32)`: see assert_one_rounding."""
    return assert_one_rounding


@pytest.fixture
def magnitude():
    """`magnitude(x, weight, scale, shift, **geometry)`: sum |terms| per output, fp64
    (kernels.conv_bn_act.conv_bn_act_magnitude)."""
    return conv_bn_act_magnitude


# ---------------------------------------------------------------------------------------------------------
# Models


@torch.no_grad()
def calibrate_(model: nn.Module, seed: int, channels: int = 3, size: int = 16) -> nn.Module:
    """Seeded weights and calibrated, non-trivial BN statistics (as resbench.models.random_init does, at any
    input shape, so small test images calibrate in milliseconds): gamma, beta drawn at random, running stats
    from one train-mode pass. Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / m.weight[0].numel()) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            m.reset_running_stats()
            m.momentum = None
    model.train()(torch.randn(4, channels, size, size, generator=generator))
    return model.eval()


@pytest.fixture(scope="session")
def calibrate():
    """`calibrate(model, seed, channels=3, size=16)`: see calibrate_."""
    return calibrate_


@torch.no_grad()
def assert_no_worse_than_eager(model: nn.Module, fused: nn.Module, x: torch.Tensor, dtype: torch.dtype,
                               dtype_name: str):
    """The parity contract of resbench/parity.py for a fused model: its error against the fp64 model is at
    most k x eager's in the same dtype (or under the dtype's floor). Returns the verdict."""
    from resbench import parity

    reference = copy.deepcopy(model).double()(x.double())
    eager = copy.deepcopy(model).to(dtype)(x.to(dtype))
    out = copy.deepcopy(fused).to(dtype)(x.to(dtype))
    assert out.dtype == dtype and out.shape == reference.shape
    reference, eager, out = (t.flatten(1) for t in (reference, eager, out))  # metrics take [n, features]
    eager_error = parity.error_metrics(eager, reference).rel_l2
    verdict = parity.verdict(parity.error_metrics(out, reference), dtype_name, eager_error, is_eager=False)
    assert verdict.passed, f"{dtype_name}: {verdict.rule} (fused rel-L2 {verdict.rel_l2:.3g}, eager {eager_error:.3g})"
    return verdict


@pytest.fixture(scope="session")
def no_worse_than_eager():
    """`no_worse_than_eager(model, fused, x, dtype, dtype_name)`: see assert_no_worse_than_eager."""
    return assert_no_worse_than_eager


# ---------------------------------------------------------------------------------------------------------
# GPU modules


@pytest.fixture(scope="session")
def precompile_launches():
    """`precompile_launches(launches)`: every kernel the tuner tries for these LaunchShapes, compiled in parallel
    into Triton's cache (kernels.precompile) before a GPU module's first test."""

    def warm(launches: list) -> None:
        from kernels.precompile import precompile, tuning_jobs

        sm_count = torch.cuda.get_device_properties(0).multi_processor_count
        stats = precompile(tuning_jobs(launches, sm_count), workers=max(1, (os.cpu_count() or 2) - 2),
                           progress=lambda _line: None)
        print(f"\nprecompiled {stats}")

    return warm
