"""End to end on a real run file: `resbench run suites/smoke.yaml` on CPU, then `report`, `compare` and
`recommend` through the real entry point (exit codes and one-line errors included)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from resbench import cli
from resbench.compare import P_THRESHOLD, smallest_p_value
from resbench.results import RunFile

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def smoke(smoke_run) -> Path:
    result, out = smoke_run  # tests/conftest.py: one real smoke run per session
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def resbench(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run `resbench ARGS` in-process through cli.main (its exit-code mapping included)."""
    monkeypatch.setattr(sys, "argv", ["resbench", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_report_writes_every_format(smoke, tmp_path, capsys, monkeypatch):
    paths = {flag: tmp_path / name for flag, name in (("--html", "r.html"), ("--md", "r.md"), ("--csv", "r.csv"),
                                                      ("--pytest-benchmark", "0001_r.json"))}
    code, out, err = resbench(capsys, monkeypatch, "report", str(smoke),
                              *[part for flag, path in paths.items() for part in (flag, str(path))])
    assert code == 0, err
    assert "resnet18" in out and all(f"wrote {path}" in out for path in paths.values())
    html = paths["--html"].read_text()
    # one model at one batch size: no latency-vs-batch or throughput-vs-depth plot, the other three
    assert html.count("data:image/png;base64,") == 3 and "<script" not in html
    assert "### resbench run: smoke" in paths["--md"].read_text()
    assert len(list(csv.DictReader(paths["--csv"].open()))) == 2
    assert {b["params"]["backend"] for b in json.loads(paths["--pytest-benchmark"].read_text())["benchmarks"]} == \
        {"eager", "compile"}


def test_compare_gate_on_real_run_files(smoke, tmp_path, capsys, monkeypatch):
    run = RunFile.load(smoke)
    alpha = P_THRESHOLD / len(run.rows)
    decidable = all(smallest_p_value(len(r.samples_ms), len(r.samples_ms)) < alpha for r in run.rows)
    twin = tmp_path / "twin.json"   # the same rows in another file (one file as both sides is refused)
    twin.write_bytes(smoke.read_bytes())
    code, out, err = resbench(capsys, monkeypatch, "compare", str(smoke), str(twin), "--md", str(tmp_path / "c.md"))
    summary = out.strip().splitlines()[-2]          # the line before "wrote c.md"
    if decidable:   # identical runs: SAME or AMBIGUOUS, never SLOWER
        assert code == 0, err
        assert summary.startswith("PASS") and "SLOWER" not in summary, out
        assert "✅ resbench compare: PASS" in (tmp_path / "c.md").read_text()
    else:           # an overloaded machine took too few samples to judge: not a pass unless allowed
        assert code == 1 and "INSUFFICIENT" in summary, out
        code, out, _ = resbench(capsys, monkeypatch, "compare", str(smoke), str(twin), "--allow-insufficient")
        assert code == 0 and "PASS" in out

    # every candidate sample slower than every baseline sample, however spread out a loaded machine left them
    factor = {r.backend: max(10.0, 2 * max(r.samples_ms) / min(r.samples_ms)) for r in run.rows}
    slowed = run.model_copy(update={"rows": [
        row.model_copy(update={"samples_ms": [s * factor[row.backend] for s in row.samples_ms]})
        if row.backend == "compile" else row for row in run.rows]})
    slowed.save(tmp_path / "slow.json")
    code, out, err = resbench(capsys, monkeypatch, "compare", str(smoke), str(tmp_path / "slow.json"),
                              "--allow-insufficient")
    assert code == 1, out   # slower in every sample: a regression however few samples there are
    assert "FAIL: 1 regression (resnet18 compile b2 fp32 64px)" in out


def test_compare_input_errors_exit_2(smoke, tmp_path, capsys, monkeypatch):
    code, _, err = resbench(capsys, monkeypatch, "compare", str(tmp_path / "missing.json"), str(smoke))
    assert code == 2 and "missing.json" in err and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = resbench(capsys, monkeypatch, "compare", str(smoke), str(smoke), "--fail-on", "median:5")
    assert code == 2 and "'median:5'" in err and "median, p90, p95, p99, memory" in err


def test_recommend_on_a_real_run(smoke, capsys, monkeypatch):
    code, out, err = resbench(capsys, monkeypatch, "recommend", str(smoke), "--objective", "throughput")
    assert code == 0, err
    assert "resnet18, batch 2" in out and "recommend" in out
    code, _, err = resbench(capsys, monkeypatch, "recommend", str(smoke), "--batch", "64")
    assert code == 2 and "--batch 64" in err and "batch sizes in it: 2" in err
