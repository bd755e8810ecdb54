"""What every fused-convolution parity case states (test_conv_bn_act.py, test_prologue_grouped.py): its layer,
its sizes, its epilogue, its dtype and the forced tile config; each test file adds its own fields in a subclass.
A helper module on sys.path, not a conftest fixture: parametrize needs the cases at collection
(--import-mode=importlib, as tests/resbench/faults.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.configs import TileConfig


@dataclass(frozen=True)
class ConvCase:
    label: str  # the layer it stands for
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int  # a square R x R filter
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    residual: bool = False
    relu: bool = True  # the epilogue's ReLU
    dtype: torch.dtype = torch.float16
    config: TileConfig = TileConfig(16, 16, 16)
