"""GPU checks of the fused kernels (skipped without CUDA). They were written on a CPU-only machine and have not
been run yet: the CPU suite covers the math under the Triton interpreter, these cover what only a GPU shows
(notes/kernels.md §18): every autotune config's output on real ResNet layer shapes (the num_warps=8 miscompile class),
native bf16 and TF32, torch.compile and CUDA-graph capture of the op, and whole ResNets through the backend."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kernels import autotuning, conv_bn_act, conv_bn_act_ref, fuse_model
from kernels.configs import ConvProblem, candidate_configs, forced_config
from resbench import parity
from resbench.models import ModelSpec, build_model
from resbench.models.layers import RESNET50_LAYERS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# ResNet-50's shape classes (resbench/models/layers.py) plus one deliberately odd layer
LAYERS = [
    *RESNET50_LAYERS,
    ("odd: 3x3 s2 C=40 K=24 on 15x15", 40, 15, 24, 3, 2, 1, True),
]
EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-10}  # fp32 runs TF32


def _rtol(reduction: int) -> float:  # notes/kernels.md §18
    return 6e-3 if reduction < 1024 else 8e-3 if reduction < 4096 else 1.2e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "tf32"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_every_candidate_config_matches_the_reference(layer, batch, dtype):
    label, C, size, K, R, stride, padding, has_residual = layer
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, C, size, size, device="cuda", generator=g).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(K, C, R, R, device="cuda", generator=g) * (2 / (C * R * R)) ** 0.5).to(dtype)
    scale = torch.rand(K, device="cuda", generator=g) + 0.5
    shift = torch.randn(K, device="cuda", generator=g) * 0.1
    P = (size + 2 * padding - R) // stride + 1
    residual = torch.randn(batch, K, P, P, device="cuda", generator=g).to(dtype) if has_residual else None
    reference = conv_bn_act_ref(x, weight, scale, shift, stride=stride, padding=padding, residual=residual)
    problem = ConvProblem(N=batch, C=C, H=size, W=size, K=K, R=R, S=R, P=P, Q=P, stride=(stride, stride),
                          padding=(padding, padding), dilation=(1, 1), dtype=dtype, has_residual=has_residual,
                          relu=True)
    reduction = C * R * R
    atol = 2 * EPS[dtype] * math.sqrt(reduction)  # the tight form of notes/kernels.md §18 (outputs are O(1))
    for config in candidate_configs(problem):
        with forced_config(config):
            out = conv_bn_act(x, weight, scale, shift, stride=stride, padding=padding, residual=residual)
        torch.cuda.synchronize()
        torch.testing.assert_close(out.double(), reference, rtol=_rtol(reduction), atol=atol,
                                   msg=lambda m, c=config: f"{label} {c.label()}: {m}")


@pytest.mark.parametrize("dtype, name", [(torch.float16, "fp16"), (torch.bfloat16, "bf16")])
def test_resnet50_autotuned_graph_captured_and_compiled(dtype, name):
    from resbench.backends.cuda_graphs import capture

    model = build_model(ModelSpec("resnet50")).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    fused = fuse_model(model).to(dtype)
    with torch.no_grad():
        with autotuning() as log:
            out = fused(x.to(dtype))
        assert log.winners, "nothing was tuned"
        reference = copy.deepcopy(model).double()(x.double())
        eager = copy.deepcopy(model).to(dtype)(x.to(dtype))
        verdict = parity.verdict(parity.error_metrics(out, reference), name,
                                 parity.error_metrics(eager, reference).rel_l2, is_eager=False)
        assert verdict.passed, verdict.rule
        replay = capture(lambda t: fused(t), x.to(dtype).clone())
        torch.testing.assert_close(replay(x.to(dtype)), out, rtol=0, atol=0)
        compiled = torch.compile(fused)
        torch.testing.assert_close(compiled(x.to(dtype)), out, rtol=1e-2, atol=1e-2)


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
