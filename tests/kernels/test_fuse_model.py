"""fuse_model: whole networks on the fused kernel (Triton interpreter, CPU) against eager, judged by the
parity contract of resbench/parity.py (no worse than eager in the same dtype, against fp64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels import FusedConvBnAct, fuse_model
from kernels.fuse import ChannelAffine
from resbench.models import ModelSpec, build_model
from resbench.models.resnet import BasicBlock, Bottleneck, ResNet, conv1x1

IMAGE = 32  # the smallest image a ResNet accepts (total stride 32): keeps the interpreter in budget


def _image(batch=1, size=IMAGE, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=generator).contiguous(memory_format=torch.channels_last)


def _batchnorms(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _fused(model: nn.Module) -> dict[str, FusedConvBnAct]:
    return {name: m for name, m in model.named_modules() if isinstance(m, FusedConvBnAct)}


@pytest.fixture(scope="module")
def resnet18():
    return build_model(ModelSpec("resnet18")).to(memory_format=torch.channels_last)


def test_resnet18_structure_and_original_untouched(resnet18):
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    fused = fuse_model(resnet18)
    assert _batchnorms(fused) == []
    modules = _fused(fused)
    # stem + 2 fused convs per BasicBlock (the downsample rides in conv2 of block 0 of layer2-4)
    assert len(modules) == 1 + 8 * 2
    with_downsample = sorted(name for name, m in modules.items() if m.stride_ds)
    assert with_downsample == ["layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]
    assert modules["conv1"].kernel_size == (7, 7) and modules["conv1"].relu
    assert modules["layer1.0.conv2"].relu  # relu(bn2(conv2) + identity) in one call
    # the original keeps its BatchNorms and weights, bit for bit
    assert len(_batchnorms(resnet18)) == 20 and resnet18.training is False
    after = resnet18.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("dtype, name", [(torch.float32, "fp32"), (torch.float16, "fp16")])
def test_resnet18_no_worse_than_eager(resnet18, dtype, name, no_worse_than_eager):
    verdict = no_worse_than_eager(resnet18, fuse_model(resnet18), _image(), dtype, name)
    assert verdict.top1_agree == 1.0


def test_resnet50_fp16_no_worse_than_eager(no_worse_than_eager):
    model = build_model(ModelSpec("resnet50")).to(memory_format=torch.channels_last)
    fused = fuse_model(model)
    modules = _fused(fused)
    assert _batchnorms(fused) == [] and len(modules) == 1 + 16 * 3
    assert sorted(n for n, m in modules.items() if m.stride_ds) == [f"layer{i}.0.conv3" for i in (1, 2, 3, 4)]
    no_worse_than_eager(model, fused, _image(), torch.float16, "fp16")


class TinyResNet(nn.Module):
    """Stem, one BasicBlock with a strided downsample, one Bottleneck with a 1x1 projection, head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.block = BasicBlock(16, 32, stride=2, downsample=nn.Sequential(conv1x1(16, 32, 2), nn.BatchNorm2d(32)))
        self.bottleneck = Bottleneck(32, 8, downsample=nn.Sequential(conv1x1(32, 32), nn.BatchNorm2d(32)))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.bottleneck(self.block(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def tiny(calibrate):
    return calibrate(TinyResNet(), seed=1, size=12)


@pytest.mark.parametrize("fuse_downsample", [True, False], ids=["downsample-fused", "downsample-own-launch"])
def test_downsample_fused_or_separate(tiny, fuse_downsample, no_worse_than_eager):
    fused = fuse_model(tiny, fuse_downsample=fuse_downsample)
    modules = _fused(fused)
    assert _batchnorms(fused) == []
    if fuse_downsample:
        assert sorted(modules) == ["block.conv1", "block.conv2", "bottleneck.conv1", "bottleneck.conv2",
                                   "bottleneck.conv3", "conv1"]
        assert modules["block.conv2"].stride_ds == 2 and modules["bottleneck.conv3"].stride_ds == 1
    else:
        assert "block.downsample.0" in modules and modules["block.downsample.0"].relu is False
        assert not any(m.stride_ds for m in modules.values())
    no_worse_than_eager(tiny, fused, _image(batch=2, size=12), torch.float32, "fp32")


def test_bf16_through_the_widening_path(tiny, no_worse_than_eager):
    no_worse_than_eager(tiny, fuse_model(tiny), _image(batch=2, size=12), torch.bfloat16, "bf16")


def test_cast_keeps_the_epilogue_in_fp32(tiny):
    fused = fuse_model(tiny).half()
    conv2 = _fused(fused)["block.conv2"]
    assert conv2.weight.dtype == conv2.weight_ds.dtype == torch.float16
    assert conv2.scale.dtype == conv2.shift.dtype == conv2.shift_fused.dtype == torch.float32
    fp32 = _fused(fuse_model(tiny))["block.conv2"]
    assert torch.equal(conv2.scale, fp32.scale) and torch.equal(conv2.shift_fused, fp32.shift_fused)
    assert fused.fc.weight.dtype == torch.float16
    fused.to(memory_format=torch.channels_last)  # what a runner does to a model: packed layouts must survive
    assert conv2.weight.is_contiguous() and conv2.weight.shape == (3, 3, 32, 32)


class GenericCNN(nn.Module):
    """Not a ResNet: functional ReLUs, conv biases, 'same' padding, a grouped conv, a 1x1 + 1x1 residual
    branch point, a broadcasting add, a conv called twice, a ReLU6 that must stay unfused, and a BN after the
    conv called twice (no conv to fuse into)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding="same", bias=True)
        self.stem_bn = nn.BatchNorm2d(16)
        self.conv_a = nn.Conv2d(16, 16, 3, padding=1, bias=True)
        self.bn_a = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)
        self.bn_dw = nn.BatchNorm2d(16)
        self.pointwise = nn.Conv2d(16, 24, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(24)
        self.project = nn.Conv2d(16, 24, 1, bias=False)
        self.bn_proj = nn.BatchNorm2d(24)
        self.shared = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.bn_shared = nn.BatchNorm2d(24)
        self.conv_gate = nn.Conv2d(24, 24, 3, stride=2, padding=1, bias=False)
        self.bn_gate = nn.BatchNorm2d(24)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = torch.relu(self.bn_a(self.conv_a(x)))
        y = F.relu6(self.bn_dw(self.depthwise(y)))
        z = torch.add(self.bn_pw(self.pointwise(y)), self.bn_proj(self.project(x))).relu_()
        w = self.bn_shared(self.shared(self.shared(z)))
        g = self.bn_gate(self.conv_gate(w)) + w.mean((2, 3), keepdim=True)  # broadcasting add
        return F.relu(g).flatten(1)


def test_generic_fx_traceable_cnn(calibrate, no_worse_than_eager):
    model = calibrate(GenericCNN(), seed=2, size=9)
    fused = fuse_model(model)
    assert isinstance(fused, torch.fx.GraphModule)
    modules = _fused(fused)
    assert sorted(modules) == ["conv_a", "conv_gate", "depthwise", "pointwise", "stem"]
    assert modules["stem"].padding == (1, 1) and modules["stem"].relu and modules["conv_a"].relu
    assert modules["pointwise"].stride_ds == 1 and modules["pointwise"].relu  # project rides along (branch point)
    # its add broadcasts ([N, C, 1, 1] residual): matched, then computed in eager order at run time
    assert modules["conv_gate"].relu and not any(n.target is torch.add and len(n.users) == 0 for n in fused.graph.nodes)
    # grouped conv on the kernel, its BN in the epilogue, the ReLU6 kept
    assert modules["depthwise"].groups == 4 and not modules["depthwise"].relu
    assert any(n.target is F.relu6 for n in fused.graph.nodes)
    # the conv called twice is left alone; its BN (no conv to fuse into) becomes a per-channel affine
    assert isinstance(fused.shared, nn.Conv2d) and _batchnorms(fused) == []
    assert isinstance(fused.bn_shared, ChannelAffine) and not fused.bn_shared.relu
    no_worse_than_eager(model, fused, _image(batch=2, size=9), torch.float32, "fp32")
    no_worse_than_eager(model, fused, _image(batch=2, size=9), torch.float16, "fp16")


class ShapeMismatch(nn.Module):
    """A 1x1 'downsample' whose output broadcasts against the main branch (3x3 valid conv -> 1x1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 8, 1, bias=False)
        self.side_bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + self.side_bn(self.side(x)))


def test_downsample_falls_back_to_a_separate_launch_when_shapes_differ(calibrate, no_worse_than_eager):
    model = calibrate(ShapeMismatch(), seed=3, channels=8, size=3)
    fused = fuse_model(model)
    assert _fused(fused)["conv"].stride_ds == 1  # matched as option B; shapes only known at run time
    x = _image(batch=2, size=3, channels=8)
    with torch.no_grad():
        assert fused(x).shape == model(x).shape == (2, 8, 3, 3)
    no_worse_than_eager(model, fused, x, torch.float32, "fp32")


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = BasicBlock(8, 8)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: symbolic_trace raises
            return self.block(x)
        return self.block(-x)


def test_untraceable_model_is_fused_child_by_child(calibrate, no_worse_than_eager):
    model = calibrate(Untraceable(), seed=4, channels=8, size=6)
    fused = fuse_model(model)
    assert type(fused) is Untraceable and isinstance(fused.block, torch.fx.GraphModule)
    assert sorted(_fused(fused)) == ["block.conv1", "block.conv2"] and _batchnorms(fused) == []
    no_worse_than_eager(model, fused, _image(batch=1, size=6, channels=8), torch.float32, "fp32")


def test_resnext_grouped_convs_run_on_the_kernel(calibrate, no_worse_than_eager):
    model = calibrate(ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4), seed=5, size=IMAGE)
    fused = fuse_model(model)
    assert _batchnorms(fused) == [] and not any(isinstance(m, nn.Conv2d) for m in fused.modules())
    modules = _fused(fused)
    assert len(modules) == 1 + 4 * 3  # stem, conv1..conv3 of each block (the downsample rides in conv3)
    assert sorted(n for n, m in modules.items() if m.groups > 1) == [f"layer{i}.0.conv2" for i in (1, 2, 3, 4)]
    # packed block-diagonal: 16 output channels (one 128-block) read all 16 input channels, 4 per group
    assert modules["layer1.0.conv2"].groups == 4 and modules["layer1.0.conv2"].weight.shape == (3, 3, 16, 16)
    no_worse_than_eager(model, fused, _image(), torch.float32, "fp32")


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda: BasicBlock(8, 8).train(), {}, r"fuse_model needs an eval-mode model"),
        (lambda: BasicBlock(8, 8).eval().half(), {}, r"BatchNorm running_mean is float16; fold from fp32 buffers"),
        (lambda: BasicBlock(8, 8).eval(), {"input_precision": "bf16x3"}, r"input_precision 'bf16x3' is not allowed"),
        (lambda: "resnet18", {}, r"fuse_model needs an nn.Module, got str"),
    ],
    ids=["training", "fp16-model", "precision", "not-a-module"],
)
def test_fuse_model_errors(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fuse_model(make(), **kwargs)
