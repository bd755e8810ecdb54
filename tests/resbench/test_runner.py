"""The runner in this process: stages, streamed rows, skipped backends, L2 and telemetry fields; and
`--repeat K` end to end (the run-to-run spread of the medians in the rows and the table)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import yaml

from resbench.results import RunFile
from resbench.runner import preflight, run_group
from resbench.suite import expand, parse_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402


def test_run_group_reports_each_stage_and_streams_rows():
    suite = parse_suite(yaml.safe_dump(faults.suite_dict(
        backends=["eager", {"name": "eager", "cuda_graphs": True}], timing={"l2": "cold"})))
    cases = expand(suite, "cpu")
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


def test_preflight_counts_each_model_once_for_the_workers():
    suite = parse_suite(yaml.safe_dump(faults.suite_dict(batch_sizes=[1, 2], dtypes=["fp32", "bf16"])))
    costs = preflight(expand(suite, "cpu"))  # four groups, four workers: count once, here
    (spec, size), cost = next(iter(costs.items()))
    assert len(costs) == 1 and spec.name == "python:faults:tiny" and size == 32
    assert cost.params == 3 * 8 * 9 + 2 * 8 + 8 * 10 + 10  # conv, BN affine, fc weight + bias

    single = expand(parse_suite(yaml.safe_dump(faults.suite_dict())), "cpu")  # one group: its worker counts
    assert preflight(single) == {} and preflight(single, repeat=2) == costs
    assert preflight(single, isolate=False) == costs


def test_repeat_reports_the_run_to_run_spread(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = tmp_path / "run.json"

    result = faults.resbench("run", suite, "--out", out, "--repeat", "2", "--no-isolation")

    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = RunFile.load(out).rows
    assert row.status == "ok"
    assert len(row.repeat_medians_ms) == 2 and row.latency_ms.median in row.repeat_medians_ms
    assert "repeat spread" in result.stdout
