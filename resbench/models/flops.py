"""Analytic parameter and FLOP counts (multiply-add = 2 FLOPs), from shapes alone.

The model runs once on one image with hooks on every Conv2d and Linear, whose arithmetic is skipped
(count_flops): FLOPs = 2 x output elements x (input channels / groups) x kernel area, as torchvision's
`_ops` metadata counts MACs over conv + fc (ResNet-50: 4.089 GMAC -> 8.18 GFLOP at 224x224)."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelCost:
    params: int
    flops_per_image: int  # at the image size counted

    @property
    def gflops(self) -> float:
        return self.flops_per_image / 1e9


def count_params(model: nn.Module) -> int:
    """Trainable parameters; BN running statistics are buffers and are not counted (torchvision's rule)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 224) -> int:
    """FLOPs of one forward pass of one image, without the arithmetic of the counted layers: every Conv2d
    and Linear of a copy returns zeros of its output's shape (computed from its stride, padding and
    dilation), so one image of any size costs milliseconds; the other layers run for real on those zeros
    (elementwise work, ~1% of a ResNet's). A model whose forward depends on real values (`.item()`,
    data-dependent control flow) is counted on one real CPU image instead.

    Not the `meta` device: elementwise ops on meta tensors go through Python decompositions that import
    torch._dynamo (3 s on 2 cores), and that import creates TorchInductor's cache folder, so an eager-only
    run failed where that folder is not writable (a read-only HOME)."""
    with torch.device("cpu"):  # whatever device context the caller built the model under (meta, for listing)
        try:
            return _count_flops(_shape_only(copy.deepcopy(model)), image_size)
        except Exception:  # noqa: BLE001 - any forward that needs real values
            return _count_flops(copy.deepcopy(model).to("cpu", torch.float32), image_size)


def _conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _shape_only(model: nn.Module) -> nn.Module:
    """`model` (a copy) with every Conv2d and Linear returning zeros of the right shape, on the CPU."""

    def conv_forward(module: nn.Conv2d):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if isinstance(module.padding, str):  # "valid", or "same" (stride 1 only): PyTorch's own rule
                if module.padding == "same":
                    return torch.zeros(x.shape[0], module.out_channels, *x.shape[2:])
                padding = (0, 0)
            else:
                padding = module.padding
            height, width = (_conv_output_size(x.shape[2 + i], module.kernel_size[i], module.stride[i], padding[i],
                                               module.dilation[i]) for i in range(2))
            return torch.zeros(x.shape[0], module.out_channels, height, width)
        return forward

    def linear_forward(module: nn.Linear):
        return lambda x: torch.zeros(*x.shape[:-1], module.out_features)

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.forward = conv_forward(module)
        elif isinstance(module, nn.Linear):
            module.forward = linear_forward(module)
    if not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return model.to("cpu", torch.float32)
    # Built on the meta device (`resbench list models`: VGG-16-BN's 138 M parameters never allocated): the
    # counted layers never read their weights, so those stay on meta; the rest (BN, ...) become zeros.
    for module in model.modules():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            module.to_empty(device="cpu", recurse=False)
            for tensor in itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False)):
                tensor.data.zero_()  # values are never counted; zeros keep BN finite (var 0 + eps)
    return model


def _count_flops(model: nn.Module, image_size: int) -> int:
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        total += 2 * output.numel() * per_output

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def model_cost(model: nn.Module, image_size: int = 224) -> ModelCost:
    return ModelCost(params=count_params(model), flops_per_image=count_flops(model, image_size))
