"""GPU checks of the prologue and grouped variants (skipped without CUDA): every candidate tile config on real
layer shapes of DenseNet-121, the pre-activation ResNets and ResNeXt-50 32x4d, bf16 at batch 16, per element
with the one-rounding bound (the prologue is one fma in the kernel and in `conv_bn_act_ref`, so the GPU's
result is the reference's up to the final rounding and fp32 accumulation); then DenseNet's first dense block
fused against eager. Never under the interpreter (tests/kernels/conftest.py). Budget: ~30 kernels, compiled
up front in parallel (`kernels.precompile`), then well under a minute of launches."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from kernels import conv_bn_act, conv_bn_act_ref, fuse_model
from kernels.accuracy import REL_L2_CEILING, relative_error
from kernels.configs import ConvProblem, candidate_configs, forced_config
from kernels.conv_bn_act import LaunchShape, conv_bn_act_magnitude
from resbench import parity
from resbench.models import ModelSpec, build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH = 16
DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Layer:
    label: str
    channels: int
    size: int
    out_channels: int
    kernel: int
    stride: int = 1
    prologue: bool = True
    prologue_relu: bool = True
    relu: bool = True
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.kernel // 2

    def problem(self) -> ConvProblem:
        p = (self.size + 2 * self.padding - self.kernel) // self.stride + 1
        return ConvProblem(N=BATCH, C=self.channels, H=self.size, W=self.size, K=self.out_channels, R=self.kernel,
                           S=self.kernel, P=p, Q=p, stride=(self.stride, self.stride),
                           padding=(self.padding, self.padding), dilation=(1, 1), dtype=DTYPE, has_residual=False,
                           relu=self.relu, groups=self.groups, prologue=self.prologue,
                           prologue_relu=self.prologue and self.prologue_relu)


LAYERS = [
    Layer("densenet121 denseblock1.denselayer6.conv1 (1x1, prologue + epilogue)", 224, 56, 128, 1),
    Layer("densenet121 denseblock3 conv2 (3x3, no prologue, no ReLU)", 128, 14, 32, 3, prologue=False, relu=False),
    Layer("preact_resnet18 layer2.0.conv1 (3x3 s2, prologue + epilogue)", 64, 56, 128, 3, stride=2),
    Layer("preact_resnet50 layer2.0.downsample.0 (1x1 s2, prologue, no relu)", 256, 56, 512, 1, stride=2,
          relu=False),
    Layer("resnext50_32x4d layer1.0.conv2 (3x3, 32 groups of 4)", 128, 56, 128, 3, prologue=False, groups=32),
    Layer("resnext50_32x4d layer3.1.conv2 (3x3, 32 groups of 16)", 512, 14, 512, 3, prologue=False, groups=32),
]


def _sm_count() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


@pytest.fixture(scope="module", autouse=True)
def warm_triton_cache(precompile_launches):
    precompile_launches([LaunchShape(layer.problem()) for layer in LAYERS])


def _operands(layer: Layer) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    C, K, R = layer.channels, layer.out_channels, layer.kernel
    per_group = C // layer.groups
    x = torch.randn(BATCH, C, layer.size, layer.size, device="cuda", generator=g).to(DTYPE)
    weight = (torch.randn(K, per_group, R, R, device="cuda", generator=g) * (2 / (per_group * R * R)) ** 0.5)
    operands = dict(x=x.contiguous(memory_format=torch.channels_last), weight=weight.to(DTYPE),
                    scale=torch.rand(K, device="cuda", generator=g) + 0.5,
                    shift=torch.randn(K, device="cuda", generator=g) * 0.1, stride=layer.stride,
                    padding=layer.padding, groups=layer.groups)
    if layer.prologue:
        operands.update(prologue_scale=torch.rand(C, device="cuda", generator=g) + 0.5,
                        prologue_shift=torch.randn(C, device="cuda", generator=g) * 0.5,
                        prologue_relu=layer.prologue_relu)
    return operands


@pytest.mark.parametrize("layer", LAYERS, ids=[layer.label for layer in LAYERS])
def test_every_candidate_config_rounds_once(layer, one_rounding):
    operands = _operands(layer)
    reference = conv_bn_act_ref(**operands, relu=layer.relu)
    magnitude = conv_bn_act_magnitude(**operands)
    problem = layer.problem()
    configs = candidate_configs(problem, _sm_count())
    assert configs
    for config in configs:
        with forced_config(config):
            out = conv_bn_act(**operands, relu=layer.relu)
        torch.cuda.synchronize()
        label = f"{layer.label} b{BATCH} bf16 {config.label()}"
        one_rounding(out, reference, magnitude, problem.reduction, label, rounding_ulps=0.5)
        assert relative_error(out, reference) <= REL_L2_CEILING["bfloat16"], label


def test_densenet_dense_block_fused_no_worse_than_eager():
    """DenseNet-121's first dense block (6 layers: concatenation, prologue, epilogue) in bf16 at batch 16."""
    block = build_model(ModelSpec("densenet121")).features.denseblock1.eval().cuda()
    x = torch.randn(BATCH, 64, 56, 56, device="cuda").to(DTYPE).contiguous(memory_format=torch.channels_last)
    fused = fuse_model(copy.deepcopy(block)).to(DTYPE)
    with torch.no_grad():
        out = fused(x)
        reference = copy.deepcopy(block).double()(x.double())
        eager = copy.deepcopy(block).to(DTYPE)(x)
    flat = [t.flatten(1) for t in (out, reference, eager)]
    verdict = parity.verdict(parity.error_metrics(flat[0], flat[1]), "bf16",
                             parity.error_metrics(flat[2], flat[1]).rel_l2, is_eager=False)
    assert verdict.passed, verdict.rule
