"""Isolation end to end: real worker processes meet real faults (an abort, an allocation past a memory
cap, a hang past the timeout) and the run finishes with the right statuses, every other case measured
and the run file intact. The models are in faults.py."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from resbench.errors import UsageError
from resbench.executors.isolated import memory_cap_mb
from resbench.results import RunFile

sys.path.insert(0, str(Path(__file__).parent.parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402

CASE_TIMEOUT_S = faults.CASE_TIMEOUT_S


def test_abort_oom_and_hang_become_rows_and_the_run_goes_on(tmp_path):
    """Per group (batch size), two cheap backends: eager and eager[cuda_graphs=auto] (plain on CPU). The
    abort and the hang strike the first call of eager once (RESBENCH_FAULTS_ONCE_DIR); the retried worker must
    then measure the group's other backend."""
    batches = [1, faults.ABORT_BATCH, faults.HOG_BATCH, faults.SLEEP_BATCH]
    suite = faults.write_faulty_suite(tmp_path, batches, CASE_TIMEOUT_S)
    out = tmp_path / "run.json"
    token = uuid.uuid4().hex
    env = faults.cli_env(RESBENCH_WORKER_MEMORY_MB="4096", RESBENCH_TEST_TOKEN=token,
                         RESBENCH_FAULTS_ONCE_DIR=str(tmp_path / "once"))

    result = faults.resbench("run", suite, "--out", out, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFile.load(out)
    assert [(r.batch_size, r.backend_label) for r in run.rows] == [
        (b, label) for b in batches for label in ("eager", "eager[cuda_graphs=auto]")]
    rows = {(r.batch_size, r.backend_label): r for r in run.rows}
    assert [r.status for r in run.rows] == ["ok", "ok", "crashed", "ok", "oom", "oom", "timeout", "ok"], [
        (r.batch_size, r.backend_label, r.status, r.reason) for r in run.rows]

    for row in (r for r in run.rows if r.status == "ok"):  # every other case measured, as if nothing happened
        assert row.latency_ms is not None and row.latency_ms.n >= 5
        assert row.parity is not None and row.parity.passed, row.parity
        assert row.memory.process_mb and "worker process" in row.memory.source

    aborted = rows[faults.ABORT_BATCH, "eager"]
    assert aborted.reason == (f"crashed during first call of eager: killed by SIGABRT "
                              f"(last output: {faults.ABORT_MESSAGE})"), aborted.reason

    for hog in (rows[faults.HOG_BATCH, "eager"], rows[faults.HOG_BATCH, "eager[cuda_graphs=auto]"]):
        assert hog.reason.startswith("first call: ") and "can't allocate memory" in hog.reason, hog.reason

    sleeper = rows[faults.SLEEP_BATCH, "eager"]
    assert sleeper.reason == (f"timed out during first call of eager: over timing.case_timeout_s = "
                              f"{CASE_TIMEOUT_S} s"), sleeper.reason

    for status in ("crashed", "oom", "timeout"):
        assert status in result.stdout  # the console table shows each status with its reason
    assert faults.processes_with_token(token) == []  # the hung worker's process tree was killed


def test_a_bad_memory_cap_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("RESBENCH_WORKER_MEMORY_MB", "lots")
    with pytest.raises(UsageError, match="RESBENCH_WORKER_MEMORY_MB='lots' is not allowed"):
        memory_cap_mb()
    monkeypatch.setenv("RESBENCH_WORKER_MEMORY_MB", "2048")
    assert memory_cap_mb() == 2048
