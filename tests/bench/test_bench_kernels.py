"""Microbenchmarks of the fused conv + BN (+ residual) + ReLU kernel against cuDNN conv + one fused epilogue on
real ResNet-50 layers (resbench/models/layers.py) at batch 32 in bf16, channels_last. Each layer is one
pytest-benchmark group, so `pytest-benchmark compare` and the summary table show the two side by side.

Both sides are built by kernels/layer_bench.py, which keeps the comparison fair (notes/gpu-audit.md, item 6):
weights packed once outside the timed call (the fused module's cached launch, what the triton backend runs),
the fused kernel autotuned and cuDNN's algorithm picked (`cudnn.benchmark`) before timing, and the baseline's
BatchNorm applied in fp32 by ONE epilogue kernel with the residual and the ReLU (not eager's 3-4 bf16 passes).
`python -m kernels.layer_bench` times every distinct 1x1/3x3 layer of the model by CUDA-graph replay instead.

`kernels` is imported inside the tests: collection works without Triton."""

from __future__ import annotations

import pytest
import torch

from resbench.models.layers import RESNET50_LAYERS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH = 32
DTYPE = torch.bfloat16
# the 1x1 and 3x3 rows of the table (the 3-channel stem is not a GEMM-shaped layer)
LAYERS = [layer for layer in RESNET50_LAYERS if layer.kernel in (1, 3)]


@pytest.fixture(scope="module")
def built() -> dict:
    """Every layer's two implementations, the fused one tuned and both checked once (module-scoped: the
    tuning and cuDNN's algorithm search happen before any timing)."""
    from kernels.layer_bench import build_layer, measure_setup, table_launch

    layers = {}
    for index, layer in enumerate(LAYERS):
        bench = build_layer(table_launch(layer, BATCH, DTYPE), 1, torch.device("cuda"), seed=index)
        problem = measure_setup(bench)  # tunes, then checks the fused output against fp64 (one rounding)
        assert problem is None, f"{layer.label}: {problem}"
        layers[layer.label] = bench
    return layers


@pytest.mark.parametrize("implementation", ["triton", "cudnn"])
@pytest.mark.parametrize("layer", LAYERS, ids=[layer.label for layer in LAYERS])
def test_conv_bn_act(run_benchmark, built, implementation, layer):
    bench = built[layer.label]
    fn = bench.fused if implementation == "triton" else bench.baseline
    run_benchmark(lambda _x: fn(), None, group=f"conv_bn_act {layer.label} b{BATCH} bf16", layer=layer.label,
                  gflop=bench.gflop, implementation=implementation)
