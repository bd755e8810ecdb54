"""Pre-activation ResNets (He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks",
arXiv:1603.05027). torchvision has no twin, so the definition is stated here.

Residual unit, the paper's "full pre-activation" (its Fig. 4(e), eq. 3: x_{l+1} = x_l + F(x_l)):

    BasicBlock:  out = conv2(relu(bn2(conv1(relu(bn1(x))))))                          + shortcut
    Bottleneck:  out = conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))         + shortcut

with no activation after the addition: the identity path stays clean from unit to unit. The shortcut is x,
or, where a unit changes the shape, a 1x1 projection (stride 2 in the first unit of layer2-4) applied to the
*pre-activated* input relu(bn1(x)) ("when preactivation is used, these projection shortcuts are also with
pre-activation", the paper's appendix), without a BN of its own. Following the paper's treatment of the first
and last units, the stem is conv1 -> max pool with no BN-ReLU of its own (layer1.0's bn1-relu is the
"activation right after conv1 and before splitting into two paths"), and an extra BN-ReLU (`bn_final`) follows
the last addition, before the global pool. Same arrangement as timm's `ResNetV2` (PreActBottleneck).

Layer table: the ImageNet architectures of He et al. 2015 ("Deep Residual Learning", arXiv:1512.03385,
Table 1), which the 2016 paper keeps; stride on the 3x3 conv (torchvision's v1.5), 224x224 input:

| stage  | output  | preact_resnet18             | preact_resnet50                       |
|--------|---------|-----------------------------|---------------------------------------|
| conv1  | 112x112 | 7x7, 64, stride 2           | 7x7, 64, stride 2                     |
| pool   | 56x56   | 3x3 max pool, stride 2      | 3x3 max pool, stride 2                |
| layer1 | 56x56   | [3x3, 64; 3x3, 64] x 2      | [1x1, 64; 3x3, 64; 1x1, 256] x 3      |
| layer2 | 28x28   | [3x3, 128; 3x3, 128] x 2    | [1x1, 128; 3x3, 128; 1x1, 512] x 4    |
| layer3 | 14x14   | [3x3, 256; 3x3, 256] x 2    | [1x1, 256; 3x3, 256; 1x1, 1024] x 6   |
| layer4 | 7x7     | [3x3, 512; 3x3, 512] x 2    | [1x1, 512; 3x3, 512; 1x1, 2048] x 3   |
| head   | 1x1     | BN-ReLU, avg pool, 1000-d fc | BN-ReLU, avg pool, 1000-d fc         |

The convolutions (and so the FLOPs: 1.814 / 4.089 GMAC) are those of torchvision's resnet18 / resnet50; only
the BatchNorms move. Module names follow torchvision's ResNet where a counterpart exists (conv1, layer1.0.conv1,
layer1.0.bn1, layer1.0.downsample.0, fc), so checkpoints from other pre-activation code map by renaming."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resbench.models.resnet import conv1x1, conv3x3


class PreActBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        preact = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        preact = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, block: type[PreActBasicBlock | PreActBottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.bn_final = nn.BatchNorm2d(512 * block.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[PreActBasicBlock | PreActBottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu(self.bn_final(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def preact_resnet18() -> PreActResNet:
    return PreActResNet(PreActBasicBlock, [2, 2, 2, 2])


def preact_resnet50() -> PreActResNet:
    return PreActResNet(PreActBottleneck, [3, 4, 6, 3])
