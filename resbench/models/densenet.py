"""DenseNet-BC (Huang et al. 2017, "Densely Connected Convolutional Networks", arXiv:1608.06993) with
torchvision's module names and state_dict keys (pytorch/vision `torchvision/models/densenet.py`), so a
torchvision checkpoint loads unchanged, including the released `densenet*-*.pth` files whose dense-layer keys
still use the pre-0.4 names `norm.1`, `conv.2`... (renamed by `adapt_state_dict`, as torchvision's own loader
does).

Each dense layer is BN -> ReLU -> 1x1 conv (to bn_size * growth_rate channels) -> BN -> ReLU -> 3x3 conv (to
growth_rate channels) on the concatenation of every earlier feature map of its block: the BN-ReLU *precedes*
each conv, so it cannot be folded into the conv's weights (notes/wave2.md). Transitions are BN -> ReLU -> 1x1 conv
-> 2x2 average pool. Inference only: no dropout (torchvision's default drop_rate is 0) and no memory-efficient
checkpointing (a training-time option)."""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchvision `_load_state_dict`: 'features.denseblock1.denselayer1.norm.1.weight' -> '...norm1.weight'
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


class _DenseLayer(nn.Module):
    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        bottleneck = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class _DenseBlock(nn.ModuleDict):
    _version = 2  # torchvision's: the ModuleDict layout (its version 1 was a Sequential)

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate=growth_rate, bn_size=bn_size)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int = 32, block_config: tuple[int, int, int, int] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, num_features, bn_size=bn_size, growth_rate=growth_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)

    @staticmethod
    def adapt_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
        """torchvision's released checkpoints with their legacy dense-layer keys, renamed (a new dict)."""
        renamed = {}
        for key, value in state.items():
            match = _LEGACY_KEY.match(key)
            renamed[match.group(1) + match.group(2) if match else key] = value
        return renamed


def densenet121() -> DenseNet:
    return DenseNet(32, (6, 12, 24, 16), 64)


def densenet161() -> DenseNet:
    return DenseNet(48, (6, 12, 36, 24), 96)


def densenet169() -> DenseNet:
    return DenseNet(32, (6, 12, 32, 32), 64)


def densenet201() -> DenseNet:
    return DenseNet(32, (6, 12, 48, 32), 64)
