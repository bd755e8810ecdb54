"""GPU checks of the fused kernels (skipped without CUDA). They cover what only a GPU shows (notes/kernels.md
§18): every candidate tile config's output on the real ResNet-50 layer shapes (the num_warps=8 miscompile
class), native bf16 and TF32, split-K at batch 1, the cached eager launch path, CUDA-graph capture and
torch.compile of the op. Never under the interpreter: tests/kernels/conftest.py leaves TRITON_INTERPRET unset
for gpu-marked tests (notes/gpu-audit.md, item 4).

Tolerance: the one-rounding bound of kernels/accuracy.py with half an ulp (the GPU rounds to nearest once),
per element, plus the rel-L2 ceiling: the bound the autotuner accepts candidates by (notes/gpu-audit.md, 11).

Budget (scripts/gpu-check.sh, step a): one batch (32) for the layer table in fp16, bf16 and tf32, split-K on
two small-M layers at batch 1 in bf16, one Bottleneck block. Its ~100 kernels are compiled up front in parallel
(`kernels.precompile`, ~15 s on 16 cores instead of ~100 s one after another)."""

from __future__ import annotations

import copy

import pytest
import torch

from kernels import autotuning, conv_bn_act, conv_bn_act_ref, fuse_model
from kernels.accuracy import REL_L2_CEILING, format_name, relative_error, ulp
from kernels.configs import ConvProblem, candidate_configs, forced_config
from kernels.conv_bn_act import LaunchShape, conv_bn_act_magnitude
from kernels.layer_bench import table_launch
from resbench import parity
from resbench.models import ModelSpec, build_model
from resbench.models.layers import RESNET50_LAYERS, ConvLayer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH = 32
LAYERS = [*RESNET50_LAYERS, ConvLayer("odd: 3x3 s2 C=40 K=24 on 15x15 +res", 40, 15, 24, 3, 2, 1, True)]
SMALL_M_LAYERS = [layer for layer in RESNET50_LAYERS if layer.label in ("layer3.1.conv2", "layer4.2.conv3")]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}


def _problem(layer: ConvLayer, batch: int, dtype: torch.dtype) -> ConvProblem:
    return table_launch(layer, batch, dtype).problem


def _sm_count() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


@pytest.fixture(scope="module", autouse=True)
def warm_triton_cache(precompile_launches):
    """Every kernel this module launches, compiled in parallel before the first test (kernels.precompile)."""
    launches = [LaunchShape(_problem(layer, BATCH, dtype)) for layer in LAYERS for dtype in DTYPES.values()]
    launches += [LaunchShape(_problem(layer, 1, torch.bfloat16)) for layer in SMALL_M_LAYERS]
    precompile_launches(launches)


def _operands(layer: ConvLayer, batch: int, dtype: torch.dtype) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    C, K, R = layer.channels, layer.out_channels, layer.kernel
    x = torch.randn(batch, C, layer.size, layer.size, device="cuda", generator=g).to(dtype)
    weight = (torch.randn(K, C, R, R, device="cuda", generator=g) * (2 / (C * R * R)) ** 0.5).to(dtype)
    scale = torch.rand(K, device="cuda", generator=g) + 0.5
    shift = torch.randn(K, device="cuda", generator=g) * 0.1
    P = (layer.size + 2 * layer.padding - R) // layer.stride + 1
    residual = torch.randn(batch, K, P, P, device="cuda", generator=g).to(dtype) if layer.residual else None
    return dict(x=x.contiguous(memory_format=torch.channels_last), weight=weight, scale=scale, shift=shift,
                stride=layer.stride, padding=layer.padding, residual=residual)


def _check_every_candidate(layer: ConvLayer, batch: int, dtype: torch.dtype, one_rounding) -> int:
    operands = _operands(layer, batch, dtype)
    reference = conv_bn_act_ref(**operands)
    magnitude = conv_bn_act_magnitude(**operands)
    tf32 = dtype == torch.float32
    problem = _problem(layer, batch, dtype)
    configs = candidate_configs(problem, _sm_count())
    for config in configs:
        with forced_config(config):
            out = conv_bn_act(**operands)
        torch.cuda.synchronize()
        label = f"{layer.label} b{batch} {format_name(dtype, tf32)} {config.label()}"
        one_rounding(out, reference, magnitude, problem.reduction, label, rounding_ulps=0.5, tf32=tf32)
        ceiling = REL_L2_CEILING[format_name(dtype, tf32)]
        assert relative_error(out, reference) <= ceiling, f"{label}: rel-L2 {relative_error(out, reference):.3g}"
    return len(configs)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("layer", LAYERS, ids=[layer.label for layer in LAYERS])
def test_every_candidate_config_rounds_once(layer, dtype, one_rounding):
    assert _check_every_candidate(layer, BATCH, dtype, one_rounding) >= 1


@pytest.mark.parametrize("layer", SMALL_M_LAYERS, ids=[layer.label for layer in SMALL_M_LAYERS])
def test_split_k_candidates_at_batch_1_round_once(layer, one_rounding):
    problem = _problem(layer, 1, torch.bfloat16)
    assert any(config.split_k > 1 for config in candidate_configs(problem, _sm_count()))
    _check_every_candidate(layer, 1, torch.bfloat16, one_rounding)


def test_bottleneck_block_tuned_cached_captured_and_compiled():
    """layer2.0 of ResNet-50 (1x1, 3x3 stride 2, 1x1 + fused strided downsample) at batch 32 in bf16: autotuned
    (every candidate checked by the tuner), then the cached eager launch path, a CUDA-graph replay and
    torch.compile all give the tuned op's output."""
    from resbench.backends.cuda_graphs import capture

    block = build_model(ModelSpec("resnet50")).layer2[0].eval().cuda()
    x = torch.randn(BATCH, 256, 56, 56, device="cuda").to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    fused = fuse_model(copy.deepcopy(block)).to(torch.bfloat16)
    with torch.no_grad():
        with autotuning() as log:
            tuned = fused(x)  # the op path: tunes each of the block's three problems
        assert len(log.winners) == 3, log.winners
        cached = fused(x)  # the cached launch path (kernels.conv_bn_act.run_cached), same configs
        torch.testing.assert_close(cached, tuned, rtol=0, atol=0)
        reference = copy.deepcopy(block).double()(x.double())
        eager = copy.deepcopy(block).to(torch.bfloat16)(x)
        verdict = parity.verdict(parity.error_metrics(tuned, reference), "bf16",
                                 parity.error_metrics(eager, reference).rel_l2, is_eager=False)
        assert verdict.passed, verdict.rule
        replay = capture(lambda t: fused(t), x.clone())
        torch.testing.assert_close(replay(x), tuned, rtol=0, atol=0)
        compiled = torch.compile(fused)(x)
    # Inductor compiles the same kernel with its own options: at most one bf16 ulp apart
    assert bool(((compiled.double() - tuned.double()).abs() <= ulp(tuned.double(), torch.bfloat16)).all())


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_backend_runs_every_resnet_depth(model_name):
    from resbench.backends import get_backend
    from resbench.suite import Case, ParityConfig, TimingConfig

    case = Case(model=ModelSpec(model_name), backend="triton", options={"cuda_graphs": True}, batch_size=2,
                dtype="bf16", image_size=224, memory_format="channels_last", device="cuda",
                timing=TimingConfig(), parity=ParityConfig())
    model = build_model(ModelSpec(model_name)).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 224, 224, device="cuda").to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    backend = get_backend("triton")
    assert backend.available(torch.device("cuda")) == (True, "")
    with torch.no_grad():
        forward = backend.prepare(copy.deepcopy(model), x, case)
        out = forward(x).float()
        reference = model.double()(x.double())
        eager = model.to(torch.bfloat16)(x)
    assert backend.artifacts()["batchnorms_left"] == 0 and backend.artifacts()["cuda_graph"] is True
    verdict = parity.verdict(parity.error_metrics(out, reference), "bf16",
                             parity.error_metrics(eager, reference).rel_l2, is_eager=False)
    assert verdict.passed, verdict.rule
