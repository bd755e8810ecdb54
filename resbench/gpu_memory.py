"""GPU memory this process holds, from NVML: the figure that is comparable across runtimes.

torch's allocator statistics (`max_memory_allocated`) see only tensors allocated through PyTorch;
TensorRT engines and workspaces, ONNX Runtime's arena and cuDNN/cuBLAS workspaces live outside it. NVML's
per-process figure counts all of it, plus the CUDA context itself (a few hundred MB), at the moment of
reading. The device is found by UUID, so CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER cannot mismatch
torch's index and NVML's.

Without NVML or a GPU every reading is `None` with the reason; nothing here raises."""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch

MB = 1 << 20


class GpuProcessMemory(NamedTuple):
    mb: float | None  # GPU memory held by this process on the device; None when it cannot be read
    source: str       # how the figure was obtained, or why there is none


@functools.cache
def _nvml() -> tuple[object | None, str]:
    """(the pynvml module, "") once NVML is initialised; (None, why) when it cannot be."""
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"NVML unavailable: {exc}"
    return pynvml, ""


def nvml_available() -> tuple[bool, str]:
    """(True, "") when NVML initialises here; (False, why) otherwise. Never raises."""
    nvml, why = _nvml()
    return nvml is not None, why


def process_used(device: torch.device | str | int | None = None) -> GpuProcessMemory:
    """GPU memory (MB) that NVML attributes to this process on `device` (default: the current device)."""
    if not torch.cuda.is_available():
        return GpuProcessMemory(None, "no CUDA device")
    nvml, why = _nvml()
    if nvml is None:
        return GpuProcessMemory(None, why)
    where = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    if where.type != "cuda":
        return GpuProcessMemory(None, f"{where} is not a CUDA device")
    index = where.index if where.index is not None else torch.cuda.current_device()
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    pid = os.getpid()
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError as exc:
        return GpuProcessMemory(None, f"NVML could not list processes on {uuid}: {exc}")
    mine = [p for p in processes if p.pid == pid]
    if not mine:
        return GpuProcessMemory(None, f"this process (pid {pid}) is not in NVML's process list for {uuid} "
                                      "(no CUDA context yet, or a container PID namespace)")
    used = [p.usedGpuMemory for p in mine]
    if any(u is None for u in used):
        return GpuProcessMemory(None, f"NVML does not report per-process memory on {uuid} (driver mode)")
    return GpuProcessMemory(sum(used) / MB,
                            f"NVML per-process used memory, pid {pid} on {uuid} (incl. the CUDA context)")


def process_used_mb(device: torch.device | str | int | None = None) -> float | None:
    """`process_used(device).mb`: the number alone, None when NVML or a GPU is unavailable."""
    return process_used(device).mb
