"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions", arXiv:1409.4842) with
torchvision's module names and state_dict keys (pytorch/vision `torchvision/models/googlenet.py`, including its
BN after every conv and its 3x3 "5x5" branch, pytorch/vision#906).

Inference-only choices, each what torchvision's pretrained model does at inference:
- No auxiliary heads: `aux1`/`aux2` only run in training mode, and torchvision drops them after loading its
  checkpoint (`aux_logits=False`). A checkpoint that carries `aux1.*`/`aux2.*` keys still loads here:
  `adapt_state_dict` drops them (6,624,904 parameters, torchvision's published `num_params`).
- `transform_input=False`, the `GoogLeNet` class default and what `torchvision.models.googlenet()` builds
  without weights. torchvision switches it on only when loading its IMAGENET1K_V1 weights (ported from the
  original Caffe model, which expects inputs scaled to [-1, 1] rather than ImageNet mean/std). It is three
  per-channel multiply-adds and a concatenation on the input, outside every conv: set `transform_input = True`
  on the model (e.g. in a `python:` factory) to reproduce torchvision's pretrained model exactly.

Each Inception module runs four parallel branches on one input (1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool ->
1x1), every conv a conv-BN(eps 1e-3)-ReLU chain, and concatenates them along channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, transform_input: bool = False, dropout: float = 0.2):
        super().__init__()
        self.aux_logits = False
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)

    def _transform_input(self, x: Tensor) -> Tensor:
        # torchvision's: ImageNet mean/std normalisation -> the original model's [-1, 1] scaling
        if self.transform_input:
            x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
            x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
            x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
            x = torch.cat((x_ch0, x_ch1, x_ch2), 1)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool1(self.conv1(self._transform_input(x)))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4c(self.inception4b(self.inception4a(x)))
        x = self.maxpool4(self.inception4e(self.inception4d(x)))
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))

    @staticmethod
    def adapt_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A torchvision checkpoint with its auxiliary heads (training only), without them (a new dict)."""
        return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}


def googlenet() -> GoogLeNet:
    return GoogLeNet()
