"""No user code in the parent: models whose own code aborts, exits or hangs while being built, or aborts in
every forward, become rows of their cases (checked in a checker process, executors/model_check.py) and
every other case is measured, while resbench's own checks of a model still fail fast in one line."""

from __future__ import annotations

import sys
from pathlib import Path

from resbench.results import RunFile

sys.path.insert(0, str(Path(__file__).parent.parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402


def test_models_whose_code_fails_become_rows_and_the_rest_is_measured(tmp_path):
    suite = faults.write_faulty_models_suite(tmp_path / "suite.yaml", faults.FAULTY_MODELS)
    out = tmp_path / "run.json"

    result = faults.resbench("run", suite, "--out", out)

    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFile.load(out)
    faults.assert_faulty_models_rows(run, faults.FAULTY_MODELS)
    aborted = [r for r in run.rows if r.model == "python:faults:abort_on_build"]
    assert all(r.reason.endswith(f"(last output: {faults.ABORT_MESSAGE})") for r in aborted), [  # last words
        r.reason for r in aborted]


def test_resbench_s_own_model_checks_still_fail_fast(tmp_path):
    """A module without the callable is resbench's finding, not the model's fault: one line, exit 2, no file."""
    suite = faults.write_suite(tmp_path / "suite.yaml", models=["python:faults:tiny", "python:faults:nothing_here"])
    out = tmp_path / "run.json"

    result = faults.resbench("run", suite, "--out", out)

    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: model 'python:faults:nothing_here': module 'faults' has no callable 'nothing_here'"]
    assert not out.exists()
