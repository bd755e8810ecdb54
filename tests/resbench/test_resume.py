"""Nothing lost: an interrupted or killed `resbench run` leaves a valid run file with every finished case,
its workers do not outlive it, and `--resume` measures only what is missing."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from resbench.cli import main
from resbench.measure import base_row
from resbench.results import RunFile
from resbench.runner import pending_cases
from resbench.suite import expand, load_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402
from faults import start_run, wait_for_rows, wait_gone  # noqa: E402


def test_ctrl_c_keeps_finished_cases_and_resume_runs_only_the_rest(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    out = tmp_path / "run.json"
    proc = start_run(suite, "--out", out)
    try:
        wait_for_rows(out, 1, proc)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole foreground group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
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


def run_main(monkeypatch, capsys, *args: str | Path) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["resbench", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


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


def test_pending_cases_are_the_missing_and_unfinished_ones(tmp_path):
    suite = load_suite(faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2, 3, 4, 5, 6]))
    cases = expand(suite, "cpu")
    statuses = ["ok", "crashed", "timeout", "failed", "skipped"]  # the sixth case has no row at all
    rows = [base_row(c, None, s, None if s == "ok" else "why") for c, s in zip(cases[:5], statuses, strict=True)]
    run = RunFile(env={}, suite=suite.model_dump(mode="json"), rows=rows)

    pending = pending_cases(run, suite, cases, "run.json")

    assert [c.batch_size for c in pending] == [2, 3, 6]
    assert [(r.batch_size, r.status) for r in run.rows] == [(1, "ok"), (4, "failed"), (5, "skipped")]
