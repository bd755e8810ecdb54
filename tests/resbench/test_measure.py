"""One group measured in this process: stages, streamed rows, skipped backends, L2 and telemetry fields."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from resbench.measure import run_group

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402


def test_run_group_reports_each_stage_and_streams_rows():
    cases = faults.cpu_cases(
        # max_time_s is a cap on host time, cold-L2 flushes (256 MiB each) included: room for min_iters
        backends=["eager", {"name": "eager", "cuda_graphs": True}], timing={"l2": "cold", "max_time_s": 5.0})
    stages: list[tuple[int | None, str]] = []
    streamed: list[int] = []

    rows = run_group(cases, on_stage=lambda i, s: stages.append((i, s)), on_row=lambda i, _r: streamed.append(i))

    measured, skipped = rows
    assert skipped.status == "skipped" and "cuda_graphs: true needs a CUDA device" in skipped.reason
    assert measured.status == "ok", measured.reason
    assert streamed == [1, 0]  # the skipped row exists first and is sent first
    assert [key for key, _ in itertools.groupby(stages)] == [
        (None, "building model"), (0, "prepare"), (0, "first call"), (0, "warm-up"), (0, "measure"),
        (None, "parity reference"), (0, "parity"), (0, "memory")]
    assert measured.l2 == "cold" and measured.latency_ms.n >= 5
    assert measured.telemetry == {"status": "not available: CPU run (NVML reports GPUs only)"}
    assert "in-process" in measured.memory.source and measured.memory.process_mb > 0
    assert measured.parity is not None and measured.parity.passed


def test_a_group_with_nothing_measured_computes_no_reference():
    """Every backend skipped: the rows say why, and the fp64 reference (a full forward in fp64, seconds for
    a deep model) is never computed."""
    cases = faults.cpu_cases(backends=[{"name": "eager", "cuda_graphs": True}, "tensorrt"])
    stages: list[tuple[int | None, str]] = []

    rows = run_group(cases, on_stage=lambda i, s: stages.append((i, s)))

    assert [r.status for r in rows] == ["skipped", "skipped"]
    assert (None, "parity reference") not in stages and stages == [(None, "building model")]
