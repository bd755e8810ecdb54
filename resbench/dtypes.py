"""The run precisions a suite may name, and what each means for tensors and numerics flags.

`tf32` is fp32 storage with TF32 tensor-core math allowed for matmul and cuDNN convolutions; `fp32` pins
TF32 off, so "fp32" rows are true fp32 (the flags are recorded per row either way)."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
DTYPE_NAMES: tuple[str, ...] = tuple(DTYPES)


def torch_dtype(name: str) -> torch.dtype:
    """The storage dtype of a run precision name (tf32 stores fp32)."""
    return DTYPES[name]

