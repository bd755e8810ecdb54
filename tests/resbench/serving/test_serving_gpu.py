"""Serving on a CUDA GPU (skipped without one): the QSL lives on the device, the SUT's thread runs a
CUDA-graph-captured runtime it did not capture, and every scenario's row comes back ok, with the evidence
latency rows carry on a GPU: NVML telemetry, the other-GPU-process check, the allocator memory account."""

from __future__ import annotations

import faults
import pytest
import torch

from resbench.results import RunFile

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("loadgen_installed"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_every_scenario_serves_on_the_gpu_including_a_captured_runtime(tmp_path) -> None:
    suite = faults.write_suite(tmp_path / "suite.yaml", device="cuda", models=["resnet18"], image_size=64,
                               dtypes=["fp16"], backends=["eager", {"name": "eager", "cuda_graphs": True}],
                               serving={"duration_s": 0.5, "min_queries": 64, "max_batch": 8})
    out = tmp_path / "run.json"
    result = faults.resbench("run", suite, "--out", out, "--device", "cuda", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for row in RunFile.load(out).rows if row.scenario is not None]
    assert len(rows) == 6
    for row in rows:
        assert row.status == "ok", (row.backend_label, row.scenario, row.reason)
        assert row.serving.samples_per_s > 0 and row.serving.accuracy.responses == 4
        assert row.serving.accuracy.top1_agree >= 0.75  # fp16 against fp64: a near-tie may flip
        # measure.Watch around the LoadGen runs: clocks sampled while LoadGen ran, other GPU processes listed
        assert row.telemetry["status"] == "ok" and row.telemetry["samples"] >= 1, row.telemetry
        assert isinstance(row.system["gpu_other_processes"], list) and row.system["window_s"] > 0
        assert row.memory.backend_mb is not None and row.memory.backend_mb > 0   # eager: torch's allocator
        assert row.memory.peak_allocated_mb == row.memory.backend_mb
