"""fuse_model on the non-ResNet families (Triton interpreter, CPU): DenseNet (BN-ReLU prologue on a
concatenation), pre-activation ResNets (prologue shared by a unit's conv1 and its projection shortcut,
BN-free residual convs), GoogLeNet (four parallel branches), VGG-16-BN (conv-BN-ReLU with conv biases).
Each fused model is judged by the parity contract against eager at a small image, and none keeps a BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels import FusedConvBnAct, fuse_model
from kernels.fuse import ChannelAffine
from resbench.models import ModelSpec, construct
from resbench.models.densenet import DenseNet

IMAGE = 32  # every built-in network's total stride: the smallest image each accepts


def _fused(model: nn.Module) -> dict[str, FusedConvBnAct]:
    return {name: m for name, m in model.named_modules() if isinstance(m, FusedConvBnAct)}


def _kinds(model: nn.Module, kind: type) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, kind)]


def _image(batch: int = 1, size: int = IMAGE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator).contiguous(memory_format=torch.channels_last)


def _model(name: str, calibrate) -> nn.Module:
    return calibrate(construct(ModelSpec(name)), seed=0, size=IMAGE).to(memory_format=torch.channels_last)


# (model, fused convs, convs with a prologue, BNs that become ChannelAffine)
STRUCTURE = [
    ("densenet121", 120, 58 + 3, ["features.norm5"]),   # every dense layer's conv1 and each transition conv
    ("preact_resnet18", 20, 8 + 3, ["bn_final"]),       # each unit's conv1, and the 3 projection shortcuts
    ("preact_resnet50", 53, 16 + 4, ["bn_final"]),
    ("googlenet", 57, 0, []),
    ("vgg16_bn", 13, 0, []),
]


@pytest.mark.parametrize("name, convs, prologues, affine", STRUCTURE, ids=[s[0] for s in STRUCTURE])
def test_structure_no_batchnorm_left_and_original_untouched(name, convs, prologues, affine):
    with torch.device("meta"):  # structure only: no weights needed
        model = construct(ModelSpec(name)).eval()
    before = {k: v.shape for k, v in model.state_dict().items()}
    fused = fuse_model(model)
    modules = _fused(fused)
    assert _kinds(fused, nn.modules.batchnorm._BatchNorm) == [] and _kinds(fused, nn.Conv2d) == []
    assert len(modules) == convs and sum(m.has_prologue for m in modules.values()) == prologues
    assert _kinds(fused, ChannelAffine) == affine
    assert {k: v.shape for k, v in model.state_dict().items()} == before  # the original keeps its modules
    assert len(_kinds(model, nn.BatchNorm2d)) > 0


def test_preact_projection_shares_the_units_prologue():
    with torch.device("meta"):
        fused = fuse_model(construct(ModelSpec("preact_resnet50")).eval())
    modules = _fused(fused)
    conv1, projection, conv3 = (modules[f"layer2.0.{n}"] for n in ("conv1", "downsample.0", "conv3"))
    assert conv1.has_prologue and conv1.prologue_relu and projection.has_prologue and projection.prologue_relu
    assert not conv3.has_prologue and not conv3.relu  # x + F(x): no activation after the addition
    call = next(n for n in fused.graph.nodes if n.target == "layer2.0.conv3")
    assert call.args[1].target == "layer2.0.downsample.0"  # the projection's output is conv3's residual
    # the unit's conv1 and conv2 carry their following BN-ReLU in the epilogue
    assert modules["layer2.0.conv1"].relu and modules["layer2.0.conv2"].relu


def test_densenet_prologue_reads_the_concatenation():
    with torch.device("meta"):
        fused = fuse_model(construct(ModelSpec("densenet121")).eval())
    call = next(n for n in fused.graph.nodes if n.target == "features.denseblock2.denselayer3.conv1")
    assert call.args[0].target is torch.cat  # the raw concatenation: its BN-ReLU is applied while loading
    module = _fused(fused)["features.denseblock2.denselayer3.conv1"]
    assert module.in_channels == 128 + 2 * 32 and module.has_prologue and module.relu  # norm2-relu2 epilogue


@pytest.mark.parametrize("name, dtype, dtype_name", [
    ("densenet121", torch.float32, "fp32"),
    ("preact_resnet18", torch.float16, "fp16"),
    ("preact_resnet50", torch.float32, "fp32"),
    ("googlenet", torch.float16, "fp16"),
    ("vgg16_bn", torch.float32, "fp32"),
])
def test_fused_family_no_worse_than_eager(name, dtype, dtype_name, calibrate, no_worse_than_eager):
    model = _model(name, calibrate)
    no_worse_than_eager(model, fuse_model(model), _image(), dtype, dtype_name)


def test_small_densenet_bf16_and_fp16(calibrate, no_worse_than_eager):
    """A DenseNet-BC small enough for two 16-bit dtypes: prologue, epilogue and concatenations in 16 bits."""
    model = calibrate(DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=10),
                      seed=1, size=IMAGE)
    fused = fuse_model(model)
    for dtype, name in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        no_worse_than_eager(model, fused, _image(batch=2, seed=1), dtype, name)
