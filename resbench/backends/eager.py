"""PyTorch eager: the baseline every speedup is measured against."""

from __future__ import annotations

import torch

from resbench.backends.base import Backend, Forward, cast_model, register


@register
class EagerBackend(Backend):
    name = "eager"
    description = "PyTorch eager mode (cuDNN / oneDNN kernels, one launch per op)"

    def available(self, device: torch.device) -> tuple[bool, str]:
        return True, ""

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        return cast_model(model, case)
