"""VGG with BatchNorm (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv:1409.1556; BN after every conv as in torchvision) with torchvision's module names and
state_dict keys (pytorch/vision `torchvision/models/vgg.py`): `features.<i>` numbered over a flat
[conv, bn, relu, ..., maxpool] list, `classifier.{0,3,6}` the three fully connected layers.

Every conv is 3x3, padding 1, with a bias, followed by BN and ReLU: the plain conv-BN-ReLU chain the fused
kernel's epilogue takes. 90% of the parameters (123.6 of 138.4 M) sit in the classifier, nearly all the FLOPs in
the convs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Configuration "D" of the paper's Table 1 (16 weight layers): output channels, "M" = 2x2 max pool.
VGG16_LAYERS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                       512, 512, 512, "M")


def make_layers(config: tuple[int | str, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for entry in config:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(entry), kernel_size=3, padding=1), nn.BatchNorm2d(int(entry)),
                       nn.ReLU(inplace=True)]
            in_channels = int(entry)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16_bn() -> VGG:
    return VGG(make_layers(VGG16_LAYERS))
