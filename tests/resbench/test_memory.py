"""Per-backend memory (resbench/memory.py): the GPU accounting arithmetic on numbers (gpu-audit.md item 3),
and the CPU RSS windows on real allocations."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from resbench import memory
from resbench.memory import MB, CpuFootprint, GpuAccount, PeakRss, gpu_backend_bytes, graph_pool_free_bytes

# ResNet-50's weights: 25.6 M parameters = 97.5 MiB in fp32, 48.7 MiB in fp16 (the audit's -49 / -98 MiB rows)
FP32_WEIGHTS = 25_557_032 * 4
FP16_WEIGHTS = 25_557_032 * 2
FLUSH = 256 * MB
OTHER = 3 * 2**30   # whatever earlier backends of the group still hold


def account(**fields: int) -> GpuAccount:
    base = dict(before_copy=OTHER, after_prepare=OTHER, harness_bytes=0, graph_pool_free=0, call_base=0,
                call_peak=0)
    return GpuAccount(**{**base, **fields})


# ------------------------------------------------------------------------------------------ GPU arithmetic


def test_baseline_before_the_copy_counts_the_weights_a_backend_keeps():
    """fp16 eager: the fp32 copy (97.5 MiB) is cast to fp16 and freed, 48.7 MiB stay. Baseline taken after
    the copy (the old code) read -48.7 MiB; before the copy it reads the fp16 weights. fp32 eager keeps the
    copy itself, which a baseline after the copy omitted."""
    fp16, notes = gpu_backend_bytes(account(after_prepare=OTHER + FP16_WEIGHTS))
    assert fp16 == FP16_WEIGHTS and notes == []
    fp32, _ = gpu_backend_bytes(account(after_prepare=OTHER + FP32_WEIGHTS))
    assert fp32 == FP32_WEIGHTS


def test_the_cold_l2_flush_buffer_is_not_the_backends():
    total, _ = gpu_backend_bytes(account(after_prepare=OTHER + FP16_WEIGHTS + FLUSH, harness_bytes=FLUSH))
    assert total == FP16_WEIGHTS


def test_graph_pool_memory_and_one_calls_peak_are_added():
    activations = 40 * MB
    total, _ = gpu_backend_bytes(account(after_prepare=OTHER + FP16_WEIGHTS, graph_pool_free=activations,
                                         call_base=OTHER + FP16_WEIGHTS,
                                         call_peak=OTHER + FP16_WEIGHTS + 2 * MB))
    assert total == FP16_WEIGHTS + activations + 2 * MB


def test_never_negative_and_says_so():
    total, notes = gpu_backend_bytes(account(after_prepare=OTHER - FP32_WEIGHTS, call_base=OTHER,
                                             call_peak=OTHER - 2 * MB))
    assert total == 0
    assert notes == ["held memory read -97.5 MB (freed more than it allocated): counted as 0",
                     "one call's peak read -2.0 MB: counted as 0"]


def _segment(pool: tuple[int, int], total: int, allocated: int) -> dict:
    return {"device": 0, "total_size": total, "allocated_size": allocated, "segment_pool_id": pool}


def test_graph_pool_free_bytes_counts_only_new_private_pools():
    before = [_segment((0, 0), 100 * MB, 50 * MB), _segment((1, 7), 20 * MB, 0)]   # an earlier backend's graph
    after = before + [_segment((0, 0), 64 * MB, 64 * MB),      # ordinary pool: memory_allocated sees it
                      _segment((1, 9), 32 * MB, 2 * MB),       # this backend's graph: 30 MB kept free for it
                      _segment((1, 9), 8 * MB, 8 * MB)]        # (its static output: already allocated)
    assert graph_pool_free_bytes(before, after) == 30 * MB
    assert graph_pool_free_bytes(after, after) == 0


def test_runtimes_outside_torchs_allocator_have_no_comparable_gpu_figure():
    assert "not comparable" in memory.gpu_source("onnxruntime")
    assert "graph pools" in memory.gpu_source("eager")


# ------------------------------------------------------------------------------------------- CPU, real


def _touch(megabytes: int) -> np.ndarray:
    block = np.empty(megabytes * MB, dtype=np.uint8)
    block[::4096] = 1   # fault every page in: RSS grows only when pages are touched
    return block


def test_peak_rss_window_sees_a_transient_allocation_and_nothing_outside():
    window = PeakRss()
    held_outside = _touch(48)   # before the window: not its growth
    window.start()
    transient = _touch(64)
    del transient               # gone again before the window ends: only the peak remembers it
    window.stop()
    assert 60 * MB <= window.growth < 100 * MB, window.growth / MB
    assert memory.process_peak_rss_mb() * MB >= memory.rss_bytes() + 60 * MB   # the reset forgot nothing
    del held_outside


class _Cycle:
    """Garbage only the cycle collector frees: a reference cycle holding a block of memory."""

    def __init__(self, megabytes: int):
        self.block, self.me = _touch(megabytes), self


def test_cpu_footprint_is_prepare_growth_plus_call_peak():
    """Garbage an earlier test (or backend) left must not move the figures: were it collected in the middle
    of the window, the process would shrink by 64 MB while the 'backend' grew by 32."""
    _Cycle(64)
    footprint = CpuFootprint()
    footprint.start()
    kept = _touch(32)                       # "weights" the backend keeps
    gc.collect()                            # a collection in the middle of a prepare
    footprint.prepared()
    footprint.calls.start()
    activations = _touch(16)
    del activations
    footprint.calls.stop()
    figures = footprint.figures()
    assert 30 <= figures["prepare_mb"] < 60 and 15 <= figures["calls_mb"] < 40
    assert figures["backend_mb"] == pytest.approx(figures["prepare_mb"] + figures["calls_mb"])
    assert "backend_mb: this backend's own RSS" in figures["source"]
    del kept


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_captured_graph_keeps_its_activations_in_its_pool():
    device = torch.device("cuda")
    layer = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).eval()
    x = torch.randn(32, 64, 56, 56, device=device)
    footprint = memory.GpuFootprint(device)
    footprint.start()
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad():
        layer(layer(x))   # warm-up outside capture (cuDNN picks its algorithm)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            y = layer(layer(x))   # the intermediate (25 MB) lives in the graph's pool, freed at capture end
    footprint.prepared()
    assert footprint.graph_pool_free >= 24 * MB
    del graph, y
