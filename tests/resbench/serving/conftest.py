"""Serving tests run MLPerf LoadGen for real: locally they skip without it, in CI (CI=true) they fail."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # faults.py, serving_faults.py


@pytest.fixture
def loadgen_installed() -> None:
    if importlib.util.find_spec("mlperf_loadgen") is None:
        message = "MLPerf LoadGen is not installed: pip install 'resbench[serving]'"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the serving tests)")
        pytest.skip(message)
