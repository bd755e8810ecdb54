"""RESBENCH_WORKER_MEMORY_MB on a CUDA run (GPU only): the worker caps its data segment (RLIMIT_DATA), not its
address space, so CUDA initialises under the cap and the case is measured (notes/gpu-audit.md, item 9; under
RLIMIT_AS the driver's address-space reservation fails at initialisation). About 15 s: one isolated worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from resbench.results import RunFile

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[2]
CAP_MB = 8192  # far below the ~100+ GB of address space CUDA reserves, far above a tiny case's heap


def test_a_capped_worker_measures_a_cuda_case(tmp_path):
    suite = {"name": "cap", "device": "cuda", "models": ["resnet18"], "backends": ["eager"], "batch_sizes": [1],
             "dtypes": ["fp32"], "image_size": 32,
             "timing": {"warmup_s": 0.05, "min_iters": 5, "min_time_s": 0.1, "max_time_s": 0.5,
                        "target_rel_ci": 0.5, "rounds": 1},
             "parity": {"samples": 2}}
    (tmp_path / "cap.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "run.json"
    env = {**os.environ, "RESBENCH_WORKER_MEMORY_MB": str(CAP_MB)}
    result = subprocess.run([sys.executable, "-m", "resbench.cli", "run", str(tmp_path / "cap.yaml"), "--out",
                             str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = RunFile.load(out).rows
    assert row.status == "ok", row.reason
    assert row.latency_ms is not None and row.latency_ms.n >= 5
