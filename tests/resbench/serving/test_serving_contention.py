"""Serving rows carry the same measurement-validity evidence as latency rows (measure.Watch): the machine's
load around every LoadGen performance run (`system`, `machine busy` warnings, `--strict`), the runtime's
own memory (`memory.backend_mb`) and the telemetry record, under real load (load.py: spinning Python
processes, bounded in time and killed in a finally) and LoadGen runs of ~0.3 s.

As in test_system.py, no test asserts that the machine running it is quiet (CI boxes are shared): the
quiet path is tested through attribution - this run's own load, however heavy, never counts as other
processes', and a row is flagged exactly when its own figures say so."""

from __future__ import annotations

import sys
from pathlib import Path

import faults
import pytest
import serving_faults
import torch
import yaml

from resbench import system
from resbench.executors import get_executor
from resbench.measure import Watch, run_group
from resbench.report.serving import status_cell
from resbench.results import RunFile
from resbench.runner import run_suite
from resbench.serving.group import MEASURED
from resbench.suite import expand, parse_suite

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from load import cpu_load, cpu_seconds  # noqa: E402

pytestmark = pytest.mark.usefixtures("loadgen_installed")

BUSY = "machine busy: other processes used "
# one scenario, LoadGen's shortest useful run: the load test measures the evidence, not the runtime
TICK_S = 0.01   # /proc/stat and /proc/PID/stat count CPU time in 10 ms ticks
SERVING = {"scenarios": ["single-stream"], "duration_s": 0.3, "min_queries": 16}


def _suite(**fields):
    return parse_suite(yaml.safe_dump(faults.suite_dict(serving=SERVING, **fields)))


def test_under_load_a_serving_row_says_machine_busy_and_strict_fails_it(tmp_path) -> None:
    cores = len(system.affinity_cores())
    suite = _suite()
    run = RunFile(env={}, suite=suite.model_dump(mode="json"))
    out = tmp_path / "strict.json"
    with cpu_load(processes=2, seconds=120, stranger=True):
        run_suite(expand(suite, "cpu"), run, out, executor=get_executor("in-process"), strict=True)
    (row,) = [row for row in RunFile.load(out).rows if row.scenario is not None]
    record = row.system
    # the spinners are other people's processes: they used the cores while LoadGen ran
    assert record["contended"] is True and record["other_cores"] > record["allowed_other_cores"], record
    assert record["cores"] == cores and record["window_s"] > 0 and record["measured"] == MEASURED
    (warning,) = [w for w in row.warnings if w.startswith(BUSY)]
    assert f"of {cores} cores while measured (allowed {record['allowed_other_cores']:.2g}" in warning
    assert row.status == "failed" and row.reason == f"--strict: {warning}"
    assert row.serving is not None   # LoadGen's figures stay in the row for inspection


def test_a_serving_row_records_its_own_load_as_its_own_and_its_memory(tmp_path, monkeypatch) -> None:
    """The run's own load (two spinning children of this measuring process, beside LoadGen's run) is in
    `own_cores`, never in `other_cores`; the row is flagged exactly when `other_cores` exceeds its allowance
    (so on a quiet machine it is not), and the report marks it exactly then. The spinners' CPU time is read
    inside each measured window (wrapping measure.Watch's own methods), so the check holds however busy
    the shared machine is: how much they got to run is measured, not assumed."""
    suite = _suite(threads=1, models=["python:serving_faults:weighty"])
    cases = [case.model_copy(update={"loadgen_dir": str(tmp_path / "run.loadgen" / case.scenario)})
             for case in expand(suite, "cpu") if case.scenario is not None]
    spun: list[float] = []   # the spinners' CPU seconds inside each window
    opened, closed = Watch.opened, Watch.closed

    def opened_then_read(watch, label, rss=None):
        opened(watch, label, rss)
        spun.append(-cpu_seconds(spinners))

    def read_then_closed(watch, label, t0, t1, rss=None):
        spun[-1] += cpu_seconds(spinners)
        return closed(watch, label, t0, t1, rss)

    monkeypatch.setattr(Watch, "opened", opened_then_read)
    monkeypatch.setattr(Watch, "closed", read_then_closed)
    threads_before = torch.get_num_threads()
    try:
        with cpu_load(processes=2, seconds=60, stranger=False) as spinners:
            (row,) = run_group(cases)
    finally:
        torch.set_num_threads(threads_before)   # the thread policy is process-wide: leave it as found
    assert row.status == "ok", row.reason
    record = row.system
    assert len(spun) == 1 and spun[0] > 0.05, f"the spinners hardly ran ({spun}): the load generator is broken"
    # the spinners are this run's own load (rounding: /proc/stat's 10 ms ticks, the record's 3 decimals)
    assert record["own_cores"] * record["window_s"] >= spun[0] - 4 * TICK_S * record["cores"] - 0.01, (record, spun)
    assert row.threads == 1
    assert record["allowed_other_cores"] == system.allowed_other_cores(record["cores"], 1)
    flagged = [w for w in row.warnings if w.startswith(BUSY)]
    limit = record["allowed_other_cores"] + record["resolution_cores"]
    assert record["contended"] == bool(flagged) == (record["other_cores"] > limit)
    assert ("! busy" in status_cell(row)) == record["contended"]
    # the runtime's own memory, measured as on a latency row: its prepare's growth + its LoadGen runs' peak
    memory = row.memory
    assert memory.backend_mb == pytest.approx(memory.prepare_mb + memory.calls_mb)
    # the runtime's private model copy holds the model's 16 MB of weights (its own, not the process's)
    assert serving_faults.BALLAST_MB <= memory.prepare_mb < 4 * serving_faults.BALLAST_MB, memory
    assert memory.calls_mb >= 0 and memory.process_mb > memory.backend_mb
    assert "LoadGen performance runs" in memory.source
    assert row.telemetry["status"].startswith("not available: CPU run")
