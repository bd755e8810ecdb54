"""`--repeat K` loses no repetition: a run stopped during a group's later repetitions leaves that group's
finished ones in the run file as partial rows (`repetitions.measured < asked`, with a warning), `--resume`
measures the group again, and a partial row stays until a row of as many repetitions or more replaces it.

The stops are real: a KeyboardInterrupt raised from the run's progress hook while repetition k+1 of a
group is being measured (in-process executor), and SIGINT to a real `resbench run` (worker processes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from resbench.doubts import doubts
from resbench.errors import RunFileError
from resbench.executors import get_executor
from resbench.results import ResultRow, RunFile, RunSettings
from resbench.runner import pending_cases, run_suite
from resbench.suite import expand, load_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402

PARTIAL = "1 of 3 repetitions measured (the run stopped"


def _stop_at(label: str, after_groups: int = 0) -> tuple[Callable[[str], None], Callable]:
    """A progress hook that raises KeyboardInterrupt (Ctrl-C) at the first message of repetition `label`
    ("[2/3]") once `after_groups` groups have finished, and the on_group_done hook that counts them."""
    finished: list[int] = []

    def progress(message: str) -> None:
        if message.startswith(label) and len(finished) >= after_groups:
            raise KeyboardInterrupt

    return progress, lambda group, _rows: finished.append(len(group))


def _run(tmp_path: Path, batch_sizes: list[int]):
    suite_path = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=batch_sizes)
    suite = load_suite(suite_path)
    return suite, expand(suite, "cpu"), tmp_path / "run.json"


def _measure(cases, run: RunFile, out: Path, stop: str | None = None, after_groups: int = 0) -> None:
    """Measure `cases` with --repeat 3 in this process; Ctrl-C at repetition `stop` (None: to the end)."""
    progress, on_group_done = _stop_at(stop or "never", after_groups)
    if stop is None:
        run_suite(cases, run, out, repeat=3, executor=get_executor("in-process"), progress=progress)
        return
    with pytest.raises(KeyboardInterrupt):
        run_suite(cases, run, out, repeat=3, executor=get_executor("in-process"), progress=progress,
                  on_group_done=on_group_done)


def _assert_complete(row: ResultRow) -> None:
    assert row.status == "ok" and not row.partial, row.warnings
    assert (row.repetitions.measured, row.repetitions.asked) == (3, 3)
    assert len(row.repeat_medians_ms) == 3 and row.latency_ms.median in row.repeat_medians_ms
    assert not any("repetitions measured" in w for w in row.warnings), row.warnings


def test_a_stop_during_repetition_two_keeps_repetition_one_as_a_partial_row_and_resume_completes_it(tmp_path):
    suite, cases, out = _run(tmp_path, [1, 2])
    run = RunFile(env={}, suite=suite.model_dump(mode="json"))

    _measure(cases, run, out, stop="[2/3]", after_groups=1)   # group b1 done, b2 stopped in repetition 2

    stopped = RunFile.load(out)
    first, second = stopped.rows
    assert (first.batch_size, second.batch_size) == (1, 2)
    _assert_complete(first)
    assert second.status == "ok" and second.partial
    assert (second.repetitions.measured, second.repetitions.asked) == (1, 3)
    assert second.repeat_medians_ms == [second.latency_ms.median]   # one repetition: its own median
    assert any(w.startswith(PARTIAL) for w in second.warnings), second.warnings
    assert "1/3 repetitions" in doubts(second)   # (with busy / noisy ones on a loaded machine)

    pending = pending_cases(stopped, suite, cases, str(out))
    assert [c.batch_size for c in pending] == [2]   # a partial row is not a finished case
    _measure(pending, stopped, out)

    resumed = RunFile.load(out)
    assert [r.batch_size for r in resumed.rows] == [1, 2]
    assert resumed.rows[0].samples_ms == first.samples_ms   # kept, not measured again
    for row in resumed.rows:
        _assert_complete(row)
    assert pending_cases(resumed, suite, cases, str(out)) == []


def test_a_partial_row_stays_until_a_row_of_as_many_repetitions_replaces_it(tmp_path):
    """A resume stopped again must not trade two measured repetitions for one (nor for none)."""
    suite, cases, out = _run(tmp_path, [1])
    run = RunFile(env={}, suite=suite.model_dump(mode="json"))
    _measure(cases, run, out, stop="[3/3]")
    (two,) = RunFile.load(out).rows
    assert two.partial and two.repetitions.measured == 2 and two.warnings[-1].startswith("2 of 3 repetitions")

    _measure(cases, RunFile.load(out), out, stop="[1/3]")   # stopped before any repetition: the row stays
    assert RunFile.load(out).rows == [two]
    _measure(cases, RunFile.load(out), out, stop="[2/3]")   # one repetition is fewer than two: it stays
    assert RunFile.load(out).rows == [two]
    _measure(cases, RunFile.load(out), out, stop="[3/3]")   # two again: the newer measurement replaces it
    (again,) = RunFile.load(out).rows
    assert again.partial and again.repetitions.measured == 2 and again.samples_ms != two.samples_ms

    _measure(cases, RunFile.load(out), out)
    (done,) = RunFile.load(out).rows
    _assert_complete(done)


def test_run_files_without_repetitions_load_and_resume_as_before(tmp_path):
    """Rows written before `repetitions` existed (and files from before `settings`) are complete rows."""
    suite, cases, out = _run(tmp_path, [1, 2])
    run = RunFile(env={}, suite=suite.model_dump(mode="json"), settings=RunSettings(repeat=3))
    _measure(cases, run, out)
    data = json.loads(out.read_text())
    for row in data["rows"]:
        del row["repetitions"]
    older = dict(data, rows=data["rows"][:1])   # b2 never measured
    out.write_text(json.dumps(older))

    loaded = RunFile.load(out)
    assert loaded.settings.repeat == 3 and not loaded.rows[0].partial and loaded.rows[0].repetitions is None
    assert [c.batch_size for c in pending_cases(loaded, suite, cases, str(out))] == [2]
    del older["settings"]   # before --repeat was recorded (issue 19)
    out.write_text(json.dumps(older))
    assert RunFile.load(out).settings.repeat == 1

    older["rows"][0]["repetitions"] = {"measured": 4, "asked": 3}
    out.write_text(json.dumps(older))
    with pytest.raises(RunFileError, match=r"rows\.0\.repetitions: measured \(4\) exceeds asked \(3\)"):
        RunFile.load(out)


def test_ctrl_c_during_repetition_two_keeps_repetition_one_and_resume_completes_it(tmp_path):
    """The real command line: worker processes, SIGINT as a terminal sends it, then `--resume`."""
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = tmp_path / "run.json"
    proc = faults.start_run(suite, "--out", out, "--repeat", "3")
    # the file's first rows are repetition 1's (partial); the next repetition needs a fresh worker, which
    # takes seconds to start, so the SIGINT (within ~0.05 s) lands in repetition 2
    _, stderr, workers = faults.interrupt_after_rows(proc, out, 1)

    assert proc.returncode == 130, stderr[-2000:]
    assert "1 partial: fewer repetitions than --repeat 3" in stderr and "--resume" in stderr
    (row,) = RunFile.load(out).rows
    assert row.status == "ok" and row.partial and row.repetitions.measured == 1, row.warnings
    assert any(w.startswith(PARTIAL) for w in row.warnings)
    assert faults.wait_gone(workers) == []

    result = faults.resbench("run", suite, "--resume", out, "--no-isolation")

    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = RunFile.load(out).rows
    _assert_complete(row)
    assert "1/3 repetitions" not in result.stdout
