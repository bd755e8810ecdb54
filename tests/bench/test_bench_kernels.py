"""Microbenchmarks of the fused conv + BN (+ residual) + ReLU kernel against cuDNN (eager conv, BN, add,
ReLU) on real ResNet-50 layers at batch 32 in bf16, channels_last. Each layer is one pytest-benchmark
group, so `pytest-benchmark compare` and the summary table show the two side by side.

`kernels` is imported inside the tests: collection works without Triton or before the package lands."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resbench.models.layers import RESNET50_LAYERS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH = 32
DTYPE = torch.bfloat16
# ResNet-50 layers (resbench/models/layers.py), the shape classes the fused kernel benchmarks against cuDNN
LAYERS = [layer for layer in RESNET50_LAYERS if layer.label not in ("stem", "layer4.0.downsample")]


def _problem(channels: int, size: int, out_channels: int, kernel: int, stride: int, padding: int,
             residual: bool) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(0)
    device = "cuda"
    x = torch.randn(BATCH, channels, size, size, device=device, generator=generator, dtype=torch.float32)
    x = x.to(DTYPE).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(out_channels, channels, kernel, kernel, device=device, generator=generator)
              * (2.0 / (channels * kernel * kernel)) ** 0.5).to(DTYPE).contiguous(memory_format=torch.channels_last)
    scale = torch.rand(out_channels, device=device, generator=generator) + 0.5
    shift = torch.randn(out_channels, device=device, generator=generator) * 0.1
    out_size = (size + 2 * padding - kernel) // stride + 1
    skip = None
    if residual:
        skip = torch.randn(BATCH, out_channels, out_size, out_size, device=device, generator=generator)
        skip = skip.to(DTYPE).contiguous(memory_format=torch.channels_last)
    return dict(x=x, weight=weight, scale=scale, shift=shift, stride=stride, padding=padding, residual=skip)


def _cudnn(p: dict):
    scale = p["scale"].to(DTYPE).view(1, -1, 1, 1)
    shift = p["shift"].to(DTYPE).view(1, -1, 1, 1)

    def call(x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, p["weight"], stride=p["stride"], padding=p["padding"]) * scale + shift
        if p["residual"] is not None:
            y = y + p["residual"]
        return torch.relu(y)

    return call


def _fused(p: dict):
    import kernels

    def call(x: torch.Tensor) -> torch.Tensor:
        return kernels.conv_bn_act(x, p["weight"], p["scale"], p["shift"], stride=p["stride"],
                                   padding=p["padding"], residual=p["residual"], relu=True)

    return call


@pytest.mark.parametrize("implementation", ["triton", "cudnn"])
@pytest.mark.parametrize("layer, channels, size, out_channels, kernel, stride, padding, residual", LAYERS,
                         ids=[layer[0] for layer in LAYERS])
def test_conv_bn_act(run_benchmark, implementation, layer, channels, size, out_channels, kernel, stride, padding,
                     residual):
    p = _problem(channels, size, out_channels, kernel, stride, padding, residual)
    fn = _fused(p) if implementation == "triton" else _cudnn(p)
    with torch.inference_mode():
        out = fn(p["x"])
        if implementation == "triton":   # a fast wrong kernel is not a result: check against fp64 first
            import kernels

            reference = kernels.conv_bn_act_ref(p["x"], p["weight"], p["scale"], p["shift"], stride=stride,
                                                padding=padding, residual=p["residual"], relu=True)
            error = (out.double() - reference).norm() / reference.norm()
            assert error < 1e-2, f"{layer}: rel-L2 {float(error):.3g} vs the fp64 reference"
    out_size = out.shape[-1]
    flops = 2 * BATCH * out_channels * out_size * out_size * channels * kernel * kernel
    run_benchmark(fn, p["x"], group=f"conv_bn_act {layer} b{BATCH} bf16", layer=layer, gflop=flops / 1e9,
                  implementation=implementation)
