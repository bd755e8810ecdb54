"""scripts/gpu-check.sh cannot rot: its dry run (every step on this CPU at toy size) must pass here, and the
second script's suite part must name backends the suite has. CPU tests, about 1-2 minutes of the CI run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from resbench.results import RunFile
from resbench.suite import load_suite

REPO = Path(__file__).resolve().parents[2]
MAX_FILES_BACK = 8  # the device tool returns at most 8 files from $OUT


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check-out")
    env = {**os.environ, "OUT": str(out), "PYTHON": os.environ.get("PYTHON", "python")}
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run(["bash", "scripts/gpu-check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=1800)
    return result, out


def test_every_step_passes_on_cpu(dry_run):
    result, out = dry_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    for name in ("wheels", "env", "prewarm", "a", "b", "c", "d"):
        assert re.search(rf"^{name}: ok in \d+ s", summary, re.MULTILINE), summary


def test_results_come_back_in_few_files(dry_run):
    _, out = dry_run
    files = sorted(path.name for path in out.iterdir())
    assert len(files) <= MAX_FILES_BACK and "gpu-check-logs.tar.gz" in files, files
    run = RunFile.load(out / "gpu-quick-1.json")
    rows = {row.backend_label: row for row in run.rows}
    assert rows["eager"].status == "ok" and rows["eager"].parity.passed
    for label in ("eager[cuda_graphs=True]", "triton", "triton[cuda_graphs=False]"):
        assert rows[label].status == "skipped" and rows[label].reason, label  # CUDA-only on CPU, with the reason
    layers = json.loads((out / "layer-bench.json").read_text())["rows"]
    assert len(layers) == 3 and all(row["fused_check"] == "ok" for row in layers)
    # the baseline's one epilogue kernel computes the same function (a wrong one is off by O(1))
    assert all(row["baseline_rel_l2"] < 1e-2 for row in layers), layers


@pytest.mark.parametrize("script", ["scripts/gpu-check.sh", "scripts/gpu-check-2.sh"])
def test_each_suite_part_names_backends_the_suite_has(script):
    lines = (REPO / script).read_text().replace("\\\n", " ").splitlines()  # continuation lines joined
    calls = [shlex.split(line.split("run_suite", 1)[1]) for line in lines if " run_suite " in f" {line} "]
    assert calls, f"{script} runs no suite part"
    for _name, suite_path, *labels in calls:
        have = {entry.label for entry in load_suite(REPO / suite_path).backends}
        assert set(labels) <= have, f"{script}: {sorted(set(labels) - have)} not in {suite_path} ({sorted(have)})"
