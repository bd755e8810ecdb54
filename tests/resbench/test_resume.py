"""Nothing lost: an interrupted or killed `resbench run` leaves a valid run file with every finished case,
its workers do not outlive it, and `--resume` measures only what is missing."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from resbench.measure import base_row
from resbench.results import RunFile
from resbench.runner import pending_cases
from resbench.stats import summarize
from resbench.suite import expand, load_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402
from faults import start_run, wait_for_rows, wait_gone  # noqa: E402


def test_ctrl_c_keeps_finished_cases_and_resume_runs_only_the_rest(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    out = tmp_path / "run.json"
    proc = start_run(suite, "--out", out)
    _, stderr, workers = faults.interrupt_after_rows(proc, out, 1)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr
    interrupted = RunFile.load(out)
    assert [(r.batch_size, r.status) for r in interrupted.rows] == [(1, "ok")]
    assert wait_gone(workers) == []

    result = faults.resbench("run", suite, "--resume", out)

    assert result.returncode == 0, result.stderr[-2000:]
    final = RunFile.load(out)
    assert sorted((r.batch_size, r.status) for r in final.rows) == [(1, "ok"), (2, "ok")]
    assert final.rows[0].samples_ms == interrupted.rows[0].samples_ms  # kept, not measured again
    assert final.env == interrupted.env


def test_a_killed_run_leaves_a_valid_file_and_no_worker(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    out = tmp_path / "run.json"
    proc = start_run(suite, "--out", out)
    try:
        wait_for_rows(out, 1, proc)
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while not workers and time.monotonic() < deadline:  # the second group's worker
            workers = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.02)
        assert workers, "the second group's worker never started"
        proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: only what was on disk survives
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    run = RunFile.load(out)
    assert [(r.batch_size, r.status) for r in run.rows] == [(1, "ok")]
    assert wait_gone(workers) == []  # a worker never outlives its parent


run_main = faults.run_main


def test_resume_refuses_a_run_file_of_another_suite(tmp_path, monkeypatch, capsys):
    before = faults.write_suite(tmp_path / "before.yaml", batch_sizes=[1])
    out = tmp_path / "run.json"
    RunFile(env={}, suite=load_suite(before).model_dump(mode="json")).save(out)
    saved = out.read_text()
    after = faults.write_suite(tmp_path / "after.yaml", batch_sizes=[1, 2])

    code, lines = run_main(monkeypatch, capsys, "run", after, "--resume", out)

    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot resume {str(out)!r}"), lines
    assert "batch_sizes" in lines[0]
    assert out.read_text() == saved


def test_resume_of_a_missing_file_is_one_line(tmp_path, monkeypatch, capsys):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    code, lines = run_main(monkeypatch, capsys, "run", suite, "--resume", tmp_path / "nope.json")
    assert code == 2
    assert len(lines) == 1 and "does not exist" in lines[0], lines


def _row(case, status: str):
    if status == "ok":
        return base_row(case, None, "ok", latency_ms=summarize([1.0, 1.2]), samples_ms=[1.0, 1.2])
    return base_row(case, None, status, f"why {case.batch_size}")


def test_pending_cases_are_the_missing_and_unfinished_ones_and_crash_reasons_stay(tmp_path):
    suite = load_suite(faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2, 3, 4, 5, 6]))
    cases = expand(suite, "cpu")
    statuses = ["ok", "crashed", "timeout", "failed", "skipped"]  # the sixth case has no row at all
    run = RunFile(env={}, suite=suite.model_dump(mode="json"),
                  rows=[_row(c, s) for c, s in zip(cases[:5], statuses, strict=True)])

    pending = pending_cases(run, suite, cases, "run.json")

    assert [c.batch_size for c in pending] == [2, 3, 6]
    # an interrupted resume must not have lost the crash reasons: they stay until a new row replaces them
    assert [(r.batch_size, r.status, r.reason) for r in run.rows] == [
        (1, "ok", None), (2, "crashed", "why 2"), (3, "timeout", "why 3"), (4, "failed", "why 4"),
        (5, "skipped", "why 5")]


@pytest.mark.parametrize("edit, fragment", [
    ("foreign", "row 1 (python:faults:tiny eager b9 fp32) is not a case of this suite on cpu"),
    ("duplicate", "row 1 (python:faults:tiny eager b1 fp32) repeats the case of row 0"),
    ("other device", "row 0 (python:faults:tiny eager b1 fp32) was measured on cuda, this run is on cpu"),
])
def test_resume_refuses_rows_that_are_not_this_suites_cases(tmp_path, monkeypatch, capsys, edit, fragment):
    """Rows of another batch size, duplicate rows and rows measured on another device used to count as done."""
    suite_path = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    suite = load_suite(suite_path)
    cases = expand(suite, "cpu")
    rows = [_row(cases[0], "ok")]
    if edit == "foreign":
        rows.append(_row(cases[0], "ok").model_copy(update={"batch_size": 9}))
    elif edit == "duplicate":
        rows.append(_row(cases[0], "crashed"))
    else:
        rows[0] = rows[0].model_copy(update={"device": "cuda"})
    out = tmp_path / "run.json"
    RunFile(env={}, suite=suite.model_dump(mode="json"), rows=rows).save(out)
    saved = out.read_text()

    code, lines = run_main(monkeypatch, capsys, "run", suite_path, "--resume", out)

    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert out.read_text() == saved


def test_a_resumed_crash_is_replaced_in_place_and_repeat_is_reused(tmp_path, monkeypatch, capsys):
    """--repeat is recorded in the run file and reused by --resume (the printed hint used to drop it);
    the crashed row keeps its place and reason until its new row replaces it."""
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    out = tmp_path / "run.json"
    code, lines = run_main(monkeypatch, capsys, "run", suite, "--out", out, "--repeat", "2", "--no-isolation")
    assert code == 0, lines
    run = RunFile.load(out)
    assert run.settings.repeat == 2 and [len(r.repeat_medians_ms) for r in run.rows] == [2, 2]
    crashed = base_row(expand(load_suite(suite), "cpu")[0], None, "crashed", "crashed during measure of eager")
    run.rows[0] = crashed
    run.save(out)

    code, lines = run_main(monkeypatch, capsys, "run", suite, "--resume", out, "--repeat", "3")
    assert code == 2 and "--repeat 3 differs from the --repeat 2 recorded in" in lines[0], lines

    code, lines = run_main(monkeypatch, capsys, "run", suite, "--resume", out, "--no-isolation")
    assert code == 0, lines
    resumed = RunFile.load(out)
    assert [(r.batch_size, r.status) for r in resumed.rows] == [(1, "ok"), (2, "ok")]
    assert len(resumed.rows[0].repeat_medians_ms) == 2
    assert resumed.rows[1].samples_ms == run.rows[1].samples_ms   # kept, not measured again


def test_resuming_a_run_file_of_another_schema_names_the_schema(tmp_path, monkeypatch, capsys):
    """It read "--out 'old.json' exists and is not a resbench run file ... remove it": a flag the user never
    gave, and advice to delete the measurements."""
    suite_path = faults.write_suite(tmp_path / "suite.yaml")
    old = tmp_path / "old.json"
    old.write_text('{"schema": "resbench.run/0", "env": {}, "suite": {}, "rows": []}')
    faults.assert_one_line_error(*faults.run_main(monkeypatch, capsys, "run", suite_path, "--resume", old),
                                 f"run file {str(old)!r} has schema 'resbench.run/0'; expected 'resbench.run/1'")
    assert old.read_text().startswith('{"schema": "resbench.run/0"')
