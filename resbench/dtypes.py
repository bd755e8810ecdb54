"""The run precisions a suite may name, and what each means for tensors and numerics flags.

`tf32` is fp32 storage with TF32 tensor-core math allowed for matmul and cuDNN convolutions; `fp32` pins
TF32 off, so "fp32" rows are true fp32 (the flags are recorded per row either way).

`int8` is static post-training quantization: weights int8 per output channel, activations 8-bit with
ranges calibrated on seeded images (resbench/calibration.py). The model's interface stays fp32 (images in,
logits out, as a deployed int8 model takes them), so its storage dtype here is fp32; the backend quantizes
inside `prepare`, and a backend without an int8 path is skipped (`Backend.supports`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# run precision -> the torch dtype of its tensors (by name, so reports and recommend need no torch import)
STORAGE: dict[str, str] = {
    "fp32": "float32",
    "tf32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "int8": "float32",  # the interface dtype: fp32 images in, fp32 logits out
}
DTYPE_NAMES: tuple[str, ...] = tuple(STORAGE)
QUANTIZED: tuple[str, ...] = ("int8",)


def torch_dtype(name: str) -> torch.dtype:
    """The storage dtype of a run precision name (tf32 stores fp32; int8 takes and returns fp32)."""
    import torch

    return getattr(torch, STORAGE[name])


def is_quantized(name: str) -> bool:
    """True for precisions whose weights and activations are integer (calibrated static quantization)."""
    return name in QUANTIZED
