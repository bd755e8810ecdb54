"""Seeded random weights with non-trivial BatchNorm state, for runs without a checkpoint.

Kaiming-initialised convs followed by identity BatchNorm (mean 0, var 1, gamma 1, beta 0) would make BN a
no-op, hide BN-folding bugs, and let activations grow with depth. Instead the running statistics are
*calibrated*: gamma and beta are drawn at random, then one forward pass in train mode over a seeded random
batch records each layer's real mean and variance (cumulative average, momentum=None). Every BN therefore
folds into a non-identity scale and shift. The residual stream still grows with depth (logit std 5 for
ResNet-18, 52 for ResNet-152 at 224 px), so the classifier is rescaled to a logit std of LOGIT_STD on the
calibration batch: fp16 stays far from overflow and top-k comparisons see ImageNet-like logit spreads."""

from __future__ import annotations

import torch
from torch import nn

CALIBRATION_BATCH = 2
LOGIT_STD = 4.0
CALIBRATION_SIZE = 224  # statistics depend on resolution (border effects): calibrate at the default size


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter from `seed` and calibrate BN running statistics, in place."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.01)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in batchnorms:
        if bn.affine:
            bn.weight.copy_(torch.empty(bn.weight.shape).uniform_(0.5, 1.5, generator=generator))
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=generator) * 0.1)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
    was_training = model.training
    model.train()
    images = torch.randn(CALIBRATION_BATCH, 3, CALIBRATION_SIZE, CALIBRATION_SIZE, generator=generator)
    model(images)
    for bn in batchnorms:
        bn.momentum = 0.1
    model.eval()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if classifier:
        std = float(model(images).std())
        if std > 0:
            classifier[-1].weight.mul_(LOGIT_STD / std)
            if classifier[-1].bias is not None:
                classifier[-1].bias.mul_(LOGIT_STD / std)
    model.train(was_training)
    return model


@torch.no_grad()
def random_batchnorm_(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm state without a calibration pass, for a module that cannot take an image (a
    lone residual block): running mean U(-0.5, 0.5), variance U(0.5, 2), gamma U(0.5, 1.5), beta U(-0.5, 0.5),
    drawn from torch's global generator (seed it first). In place; returns the module in eval mode."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return module.eval()
