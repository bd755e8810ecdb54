"""Numerics flags that change both speed and parity, pinned per case and recorded in every row.

- TF32: `fp32` rows run with TF32 off for matmul and cuDNN (true fp32); `tf32` rows with it on. For
  fp16/bf16 the flags do not apply to the convolutions' math and are left off.
- cudnn.benchmark: on for timing (the algorithm search happens in warm-up), off for parity references.
- The parity reference runs with TF32 off and deterministic algorithms (as PyTorch's dynamo accuracy
  harness does)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def flags_for(dtype: str, *, reference: bool = False) -> dict[str, Any]:
    tf32 = dtype == "tf32" and not reference
    return {
        "tf32_matmul": tf32,
        "tf32_cudnn": tf32,
        "cudnn_benchmark": not reference,
        "deterministic": reference,
        "float32_matmul_precision": "high" if tf32 else "highest",
    }


@contextlib.contextmanager
def pinned(dtype: str, *, reference: bool = False) -> Iterator[dict[str, Any]]:
    """Set the flags for `dtype` (restoring the previous ones on exit) and yield what was set."""
    flags = flags_for(dtype, reference=reference)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = flags["tf32_matmul"]
    torch.backends.cudnn.allow_tf32 = flags["tf32_cudnn"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = flags["deterministic"]
    torch.set_float32_matmul_precision(flags["float32_matmul_precision"])
    try:
        yield flags
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[:4]
        torch.set_float32_matmul_precision(saved[4])
