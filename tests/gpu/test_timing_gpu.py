"""resbench's timer on a GPU (GPU only): the cold-L2 rules of resbench/timing.py that only a GPU can show.

- `graph` mode with `l2: cold` captures one call per graph, so every timed call follows a flush (an unrolled
  replay timed 1 cold call and 9 warm ones under a cold label; notes/gpu-audit.md, item 7);
- the flush is at least 4x the device's L2 (60 MB on the H200; the code said 50; item 17);
- the host waits for the flush before the start event, so a launch-bound call does not read faster cold than
  warm (the host used to queue its first kernels while the flush ran; item 13)."""

from __future__ import annotations

import statistics

import pytest
import torch

from resbench.timing import COLD_L2_BYTES, COLD_L2_MULTIPLE, Sampler

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cold_graph_mode_captures_one_call_per_flush():
    calls = []
    x = torch.randn(1024, device="cuda")

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(torch.cuda.is_current_stream_capturing())
        return t * 2

    cold = Sampler(fn, x, "graph", "cold")
    assert cold.unroll == 1 and len(cold.sample(5)) == 5
    assert calls.count(True) == 1  # one call inside the captured graph (plus the warm-up outside it)
    assert Sampler(fn, x, "graph", "warm").unroll > 1
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    assert cold.flush_buffer.numel() >= max(COLD_L2_BYTES, COLD_L2_MULTIPLE * l2)


def test_a_launch_bound_call_does_not_read_faster_cold_than_warm():
    """200 tiny kernels per call: the host's launches pace the GPU. Cold samples used to start timing while
    the flush still ran, with the host already queueing kernels behind it, and read ~10% fast."""
    x = torch.randn(256, device="cuda")

    def launch_bound(t: torch.Tensor) -> torch.Tensor:
        for _ in range(200):
            t = t + 1
        return t

    medians = {}
    for l2 in ("warm", "cold", "warm", "cold"):  # interleaved: drift hits both
        sampler = Sampler(launch_bound, x, "device", l2)
        sampler.sample(10)
        medians.setdefault(l2, []).append(statistics.median(sampler.sample(60)))
    warm, cold = min(medians["warm"]), min(medians["cold"])
    assert cold >= 0.97 * warm, f"cold {cold:.4f} ms < warm {warm:.4f} ms: the flush hides launch latency"
