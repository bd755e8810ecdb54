"""Fixtures shared across the test tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One real `resbench run suites/smoke.yaml --device cpu` for the whole session (it compiles a model:
    ~30 s on 2 cores), shared by every end-to-end test that reads its output or run file."""
    out = tmp_path_factory.mktemp("smoke") / "smoke.json"
    result = subprocess.run([sys.executable, "-m", "resbench.cli", "run", "suites/smoke.yaml", "--out", str(out),
                             "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return result, out
