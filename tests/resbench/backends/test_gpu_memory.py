"""NVML per-process GPU memory: degrades to None with a reason without NVML or a GPU (never raises), and
on a GPU counts memory the torch allocator knows nothing about."""

from __future__ import annotations

import ctypes

import pytest
import torch

from resbench import gpu_memory


def test_nvml_status_never_raises():
    ok, reason = gpu_memory.nvml_available()
    assert isinstance(ok, bool)
    assert ok or reason.startswith(("NVML unavailable:", "pynvml is not installed"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_the_reading_is_none_with_the_reason():
    reading = gpu_memory.process_used()
    assert reading.mb is None and reading.source == "no CUDA device"
    assert gpu_memory.process_used_mb() is None
    assert gpu_memory.process_used_mb("cuda:0") is None


def test_a_cpu_device_has_no_gpu_reading():
    reading = gpu_memory.process_used("cpu")
    assert reading.mb is None and reading.source


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_counts_memory_outside_the_torch_allocator():
    torch.zeros(1, device="cuda")  # a CUDA context, so the process is in NVML's list
    before = gpu_memory.process_used()
    if before.mb is None:
        pytest.skip(f"NVML cannot attribute memory to this process here: {before.source}")
    assert "NVML per-process" in before.source
    size = 512 << 20
    libcudart = ctypes.CDLL(_cudart_path())
    pointer = ctypes.c_void_p()
    assert libcudart.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(size)) == 0
    try:
        after = gpu_memory.process_used()
        assert torch.cuda.memory_allocated() < size  # torch's allocator did not see it
        assert after.mb - before.mb >= 0.9 * size / 2**20, (before, after)
    finally:
        libcudart.cudaFree(pointer)


def _cudart_path() -> str:
    import glob
    import os

    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    candidates = sorted(glob.glob(os.path.join(torch_lib, "..", "..", "nvidia", "*", "lib", "libcudart.so*")))
    candidates += sorted(glob.glob(os.path.join(torch_lib, "libcudart*.so*")))
    if not candidates:
        pytest.skip("libcudart not found next to torch")
    return candidates[0]
