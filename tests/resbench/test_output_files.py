"""Never destroy what is at a path: what `run --out`, `report --html/--md/--csv/--pytest-benchmark` and
`compare --md` refuse to write, how they write (atomically, through symlinks, 0644), the run-file lock, and
a full disk. Each case is one a probe found replaced, truncated or blocked before."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resbench.measure import base_row
from resbench.output_files import exclusive, replace_file, resolve, sibling
from resbench.results import RunFile
from resbench.suite import expand, load_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: suites of a tiny model, the CLI helpers
import faults  # noqa: E402

run_main, assert_refused = faults.run_main, faults.assert_one_line_error


def run_file_of(suite: Path, path: Path) -> Path:
    """A (row-less) run file of `suite` at `path`."""
    RunFile(env={}, suite=load_suite(suite).model_dump(mode="json")).save(path)
    return path


# ------------------------------------------------------------------------------------ run --out refuses


@pytest.mark.parametrize("kind", ["fifo", "directory", "suite itself", "unrelated json", "text file",
                                  "run of another suite"])
def test_run_out_refuses_what_it_must_not_replace(tmp_path, monkeypatch, capsys, kind):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = tmp_path / "out.json"
    fragment = {
        "fifo": "is a FIFO; give a file path (resbench writes only regular files)",
        "directory": "is a directory; give a file path (resbench writes only regular files)",
        "suite itself": "is an input of this command",
        "unrelated json": "exists and is not a resbench run file; resbench does not replace a file it did not write",
        "text file": "exists and is not a resbench run file",
        "run of another suite": "is a run file of suite 'other', not 'faults'; pass --force",
    }[kind]
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "directory":
        out.mkdir()
    elif kind == "suite itself":
        out = suite
    elif kind == "unrelated json":
        out.write_text('{"schema": "someone-else/1", "precious": true}\n')
    elif kind == "text file":
        out.write_text("notes I want to keep\n")
    else:
        run_file_of(faults.write_suite(tmp_path / "other.yaml", name="other"), out)
    before = out.read_bytes() if out.is_file() else None
    mode = os.stat(out).st_mode

    assert_refused(*run_main(monkeypatch, capsys, "run", suite, "--out", out), fragment)

    assert os.stat(out).st_mode == mode                      # still a FIFO / a directory / the same file
    if before is not None:
        assert out.read_bytes() == before


def test_run_out_refuses_a_device(monkeypatch, capsys, tmp_path):
    """`--out /dev/null` as root turned /dev/null into a 0600 regular file."""
    suite = faults.write_suite(tmp_path / "suite.yaml")
    assert_refused(*run_main(monkeypatch, capsys, "run", suite, "--out", "/dev/null"), "is a device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_force_replaces_a_run_file_of_another_suite_but_never_another_file(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    other = run_file_of(faults.write_suite(tmp_path / "other.yaml", name="other"), tmp_path / "other.json")
    result = faults.resbench("run", suite, "--out", other, "--force", "--no-isolation")
    assert result.returncode == 0, result.stderr[-2000:]
    assert RunFile.load(other).suite["name"] == "faults"
    text = tmp_path / "notes.txt"
    text.write_text("keep me\n")
    result = faults.resbench("run", suite, "--out", text, "--force")
    assert result.returncode == 2 and "is not a resbench run file" in result.stderr
    assert text.read_text() == "keep me\n"


def test_a_run_writes_through_a_symlink_with_mode_0644_and_a_245_character_name(tmp_path):
    """The link stays a link and its target is the run file; a legal 245-character name works (the temp
    name used to overflow NAME_MAX); the file is readable by others (mkstemp's 0600 before)."""
    suite = faults.write_suite(tmp_path / "suite.yaml")
    real = tmp_path / "data" / ("r" * 240 + ".json")
    assert len(real.name) == 245
    real.parent.mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    old_umask = os.umask(0o022)
    try:
        result = faults.resbench("run", suite, "--out", link, "--no-isolation")
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stderr[-2000:]
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert RunFile.load(real).rows[0].status == "ok"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o644
    assert sorted(p.name for p in real.parent.iterdir()) == [real.name]   # no temp or lock file left


# ------------------------------------------------------------------------------------ report / compare


def test_report_and_compare_never_overwrite_their_inputs_or_a_run_file(tmp_path, monkeypatch, capsys):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    run = run_file_of(suite, tmp_path / "run.json")
    other = run_file_of(suite, tmp_path / "other.json")
    saved = run.read_bytes(), other.read_bytes()
    for args, fragment in [
        (("report", run, "--csv", run), "--csv 'RUN' is an input of this command"),
        (("report", run, "--html", other), "--html 'OTHER' is a resbench run file; a report never replaces"),
        (("report", run, "--md", tmp_path / "a.md", "--csv", tmp_path / "a.md"), "is also the path of another"),
        (("compare", run, other, "--md", run), "--md 'RUN' is an input of this command"),
        (("report", run, "--pytest-benchmark", "/dev/null"), "is a device"),
    ]:
        fragment = fragment.replace("RUN", str(run)).replace("OTHER", str(other))
        assert_refused(*run_main(monkeypatch, capsys, *args), fragment)
    assert (run.read_bytes(), other.read_bytes()) == saved
    assert not (tmp_path / "a.md").exists()


def test_report_outputs_replace_an_earlier_report_atomically(tmp_path, monkeypatch, capsys):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    run = run_file_of(suite, tmp_path / "run.json")
    csv = tmp_path / "r.csv"
    assert run_main(monkeypatch, capsys, "report", run, "--csv", csv)[0] == 0   # the earlier report
    inode = os.stat(csv).st_ino
    code, lines = run_main(monkeypatch, capsys, "report", run, "--csv", csv)
    assert code == 0, lines
    assert csv.read_text().startswith("model,backend") and os.stat(csv).st_ino != inode   # renamed over


def test_report_outputs_replace_only_their_own_earlier_reports_or_an_empty_file(tmp_path, monkeypatch, capsys):
    """`report RUN --html suite.yaml` replaced the suite with HTML: a report output may replace an earlier
    report of its own format (each format is written once, then written again over itself), an empty file
    (a `mktemp`), and nothing else resbench did not write."""
    suite = faults.write_suite(tmp_path / "suite.yaml")
    run = run_file_of(suite, tmp_path / "run.json")
    outputs = {flag: tmp_path / f"out{flag}" for flag in ("--html", "--md", "--csv", "--pytest-benchmark")}
    for flag, path in outputs.items():
        for _ in range(2):
            assert run_main(monkeypatch, capsys, "report", run, flag, path)[0] == 0, flag
    compared, cases = tmp_path / "compare.md", expand(load_suite(suite), "cpu")
    for name in ("base", "cand"):   # compare needs a case in common: one skipped row each
        RunFile(env={}, suite=load_suite(suite).model_dump(mode="json"),
                rows=[base_row(cases[0], None, "skipped", "canned")]).save(tmp_path / f"{name}.json")
    for _ in range(2):
        run_main(monkeypatch, capsys, "compare", tmp_path / "base.json", tmp_path / "cand.json", "--md", compared)
        assert compared.read_text().startswith("### ")
    empty = tmp_path / "empty.html"
    empty.touch()
    assert run_main(monkeypatch, capsys, "report", run, "--html", empty)[0] == 0
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n")
    unrelated = tmp_path / "data.json"
    unrelated.write_text('{"machine_info": {}}')
    suite_text = suite.read_bytes()
    for args, fragment in [
        (("--html", suite), f"--html '{suite}' exists and is not an HTML report resbench wrote; resbench does not"),
        (("--md", readme), "is not a Markdown report resbench wrote"),
        (("--csv", outputs["--md"]), "is not a CSV report resbench wrote"),
        (("--pytest-benchmark", unrelated), "is not a pytest-benchmark export resbench wrote"),
        (("--md", outputs["--html"]), "is not a Markdown report resbench wrote"),
    ]:
        assert_refused(*run_main(monkeypatch, capsys, "report", run, *args), fragment)
    assert_refused(*run_main(monkeypatch, capsys, "compare", tmp_path / "base.json", tmp_path / "cand.json", "--md",
                             readme),
                   "is not a Markdown report resbench wrote")
    assert (suite.read_bytes(), readme.read_text(), unrelated.read_text()) == (suite_text, "# my project\n",
                                                                              '{"machine_info": {}}')


# ------------------------------------------------------------------------------------ the lock


def test_exclusive_names_the_holder_and_ends_with_it(tmp_path):
    from resbench.errors import OutputError

    target = tmp_path / "run.json"
    with exclusive(target):
        assert sibling(target, "lock").read_text().strip() == str(os.getpid())
        code = ("import sys; from pathlib import Path; from resbench.output_files import exclusive\n"
                "try:\n    with exclusive(Path(sys.argv[1])): print('locked')\n"
                "except Exception as exc: print(exc)")
        other = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                               timeout=60, cwd=faults.REPO)
        assert f"is in use by another resbench process (pid {os.getpid()})" in other.stdout, other
    assert not sibling(target, "lock").exists()
    with exclusive(target):   # released: free again
        pass
    with pytest.raises(OutputError):
        with exclusive(target):
            with exclusive(target):   # flock locks are per open file: a second open in one process conflicts
                pass


def test_two_runs_on_one_file_the_second_is_refused_naming_the_first(tmp_path):
    """Both used to exit 0, the last writer winning and the other's rows lost."""
    # the first run measures for a minute (it is interrupted as soon as the second ones are refused)
    suite = faults.write_suite(tmp_path / "suite.yaml", timing={"min_time_s": 60.0, "max_time_s": 60.0,
                                                                "target_rel_ci": 0.0001, "case_timeout_s": 300})
    out = tmp_path / "run.json"
    first = faults.start_run(suite, "--out", out)
    try:
        lock = sibling(resolve(out), "lock")
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.05)
        for args in (("--out", out), ("--resume", out)):
            second = faults.resbench("run", suite, *args, timeout=120)
            assert second.returncode == 2, second.stderr[-2000:]
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"is in use by another resbench process (pid {first.pid})" in lines[0]
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert not lock.exists()


# ------------------------------------------------------------------------------------ a full disk


def test_a_write_that_fails_names_the_file_and_leaves_no_temp_file(tmp_path):
    from resbench.output_files import WriteError

    folder = tmp_path / "d"
    folder.mkdir()
    with pytest.raises(WriteError, match=r"cannot write '.*/d': Is a directory"):
        replace_file(folder, "new")   # the rename over a directory fails after the temp file was written
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and list(folder.iterdir()) == []


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_line_naming_the_file_and_the_resume_command(tmp_path):
    """The file stayed valid but the exit was 1 "internal error" naming no file. RLIMIT_FSIZE makes the
    kernel refuse the run file's first write that holds a row (EFBIG, as ENOSPC would), after the empty
    file was written."""
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    sizing = tmp_path / "sizing.json"
    assert faults.resbench("run", suite, "--out", sizing, "--no-isolation").returncode == 0
    measured = RunFile.load(sizing)
    empty = len(measured.model_copy(update={"rows": []}).to_json().encode())
    one_row = len(measured.model_copy(update={"rows": measured.rows[:1]}).to_json().encode()) - empty
    assert one_row > 1000
    limit = empty + one_row // 2    # room for the row-less file (its environment varies by bytes), not a row

    out = tmp_path / "run.json"
    result = faults.resbench("run", suite, "--out", out, "--no-isolation", preexec_fn=_limit_file_size(limit))

    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("error: ")]
    assert error == [lines[-1]], lines
    assert f"cannot write {str(out)!r}: File too large" in error[0]
    assert f"finish with `resbench run {suite} --resume {out}`" in error[0]   # (--no-isolation is for debugging)
    assert RunFile.load(out).rows == []           # valid, as before the failed write
    resumed = faults.resbench("run", suite, "--resume", out, "--no-isolation")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(r.batch_size for r in RunFile.load(out).rows) == [1, 2]
    assert json.loads(out.read_text())["settings"] == {"repeat": 1}
