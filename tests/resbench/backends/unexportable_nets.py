"""Models for the failure path through the runner (model spec `python:unexportable_nets:NAME`, with this
folder on sys.path): they build, run in eager and count FLOPs on meta tensors, but no ONNX exporter can
translate them."""

from __future__ import annotations

import torch
from torch import nn


class CummaxNet(nn.Module):
    """aten.cummax has no ONNX translation in torch.onnx."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cummax(self.conv(x).mean((2, 3)), dim=1).values)


def cummax_net() -> nn.Module:
    return CummaxNet()
