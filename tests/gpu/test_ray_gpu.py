"""`--executor ray` on real GPUs (GPU only): a local cluster started by resbench itself (`--address local`:
a new one, whatever else runs on the machine) gives each group one GPU; every row says which, with the
GPU's name from NVML, and the env lists the node.

    python -m pytest tests/gpu/test_ray_gpu.py -m gpu"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from resbench.results import RunFile

sys.path.insert(0, str(Path(__file__).parent.parent / "resbench"))  # faults.py: tiny models and helpers
import faults  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_each_group_runs_on_one_gpu_and_says_which(tmp_path):
    pytest.importorskip("ray", reason="pip install 'resbench[ray]'")
    suite = faults.write_suite(tmp_path / "suite.yaml", device="cuda", batch_sizes=[1, 2], dtypes=["fp16"])
    out = tmp_path / "run.json"

    result = faults.resbench("run", suite, "--out", out, "--executor", "ray", "--address", "local",
                             env=faults.cli_env(RAY_AUTH_MODE="disabled"), timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFile.load(out)
    names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    assert [r.status for r in run.rows] == ["ok", "ok"], [(r.status, r.reason) for r in run.rows]
    for row in run.rows:
        assert row.placement.device_name in names, row.placement
        assert row.placement.gpu_index in range(torch.cuda.device_count())
        assert row.placement.cuda_visible_devices == str(row.placement.gpu_index)
    assert len(run.env["nodes"]) == 1 and run.env["device"] in names
