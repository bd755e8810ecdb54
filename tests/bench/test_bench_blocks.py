"""Microbenchmarks of one ResNet-50 Bottleneck (layer3.1: 1024 -> 256 -> 1024 channels at 14x14, batch 32,
bf16, channels_last) per backend, through the same `Backend.prepare` the runner uses. One pytest-benchmark
group, so `pytest-benchmark compare` ranks the backends; a backend unavailable here, or one that does not
support the case (`Backend.supports`, as the runner asks: bf16 ONNX Runtime), is skipped with its reason.
The `triton` entry is kernels.fuse_model (the fused kernels) when no backend of that name is registered."""

from __future__ import annotations

import copy

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH, CHANNELS, SIZE, PLANES = 32, 1024, 14, 256
BACKENDS = ["eager", "compile", "triton", "aot-inductor", "onnxruntime", "tensorrt"]


def _block() -> torch.nn.Module:
    """layer3.1 of the seeded resnet50 the runner measures (BN statistics calibrated, so BN is not a no-op)."""
    from resbench.models import ModelSpec, build_model

    block = build_model(ModelSpec("resnet50")).layer3[1]
    assert block.conv1.in_channels == CHANNELS and block.conv2.out_channels == PLANES
    return block.eval()


def _case(backend: str):
    from resbench.models import ModelSpec
    from resbench.suite import Case, ParityConfig, TimingConfig

    return Case(model=ModelSpec("resnet50"), backend=backend, options={}, batch_size=BATCH, dtype="bf16",
                image_size=SIZE, memory_format="channels_last", device="cuda", timing=TimingConfig(),
                parity=ParityConfig())


def _prepare(name: str, block: torch.nn.Module, x: torch.Tensor):
    from resbench.backends import backend_names, get_backend

    if name == "triton" and name not in backend_names():
        import kernels

        return kernels.fuse_model(block).to(torch.bfloat16)
    backend = get_backend(name)
    available, reason = backend.available(x.device)
    if not available:
        pytest.skip(f"{name}: {reason}")
    case = _case(name)
    supported, reason = backend.supports(case)  # what the runner asks too: bf16 ONNX Runtime is a skip, not an error
    if not supported:
        pytest.skip(f"{name}: {reason}")
    with torch.inference_mode():
        return backend.prepare(copy.deepcopy(block), x, case)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bottleneck_block(run_benchmark, backend):
    block = _block().to("cuda", memory_format=torch.channels_last)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, device="cuda").to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    fn = _prepare(backend, block, x)
    with torch.inference_mode():
        reference = block.double()(x.double())
        out = fn(x)
    error = (out.double() - reference).norm() / reference.norm()
    assert error < 3e-2, f"{backend}: rel-L2 {float(error):.3g} vs the fp64 block"
    run_benchmark(fn, x, group=f"bottleneck layer3.1 b{BATCH} bf16", backend=backend)
