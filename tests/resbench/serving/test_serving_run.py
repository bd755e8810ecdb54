"""`resbench run` with a `serving:` block, for real: LoadGen drives the runtime in a worker, every row's
figures are the ones LoadGen wrote in its own summary file, a Server run far above capacity misses its
bound and one far below holds it, a runtime that raises mid-run yields failed rows (not a hang), and
Ctrl-C / --resume keep serving rows like latency rows. Tiny models and short LoadGen runs (~0.3 s each)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import faults
import pytest
import serving_faults

from resbench.results import RunFile

pytestmark = pytest.mark.usefixtures("loadgen_installed")

THROUGHPUT_LINE = {"single-stream": "QPS w/o loadgen overhead", "server": "Completed samples per second",
                   "offline": "Samples per second"}
QUICK = {"duration_s": 0.3, "min_queries": 16}
SCENARIOS = ["single-stream", "server", "offline"]


def serving_suite(path: Path, model: str = "python:faults:tiny", **serving) -> Path:
    return faults.write_suite(path, models=[model], serving={**QUICK, **serving})


def loadgen_said(summary: Path, key: str) -> str:
    """A value as LoadGen wrote it: `key : value` or `key: value` on its own line (parsed independently of
    resbench.serving.loadgen_log)."""
    match = re.search(rf"^\s*{re.escape(key)}\s*:\s*(.+?)\s*$", summary.read_text(), re.MULTILINE)
    assert match is not None, f"{key!r} not in {summary}"
    return match.group(1)


def ns_to_ms(text: str) -> float:
    return float(text) / 1e6


@pytest.fixture(scope="module")
def serving_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("serving")
    suite = serving_suite(folder / "suite.yaml", max_batch=4, max_wait_ms=2, server_latency_ms=250)
    out = folder / "run.json"
    return faults.resbench("run", suite, "--out", out, timeout=400), out


def test_rows_carry_what_loadgen_wrote_in_its_summary(serving_run) -> None:
    result, out = serving_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serving (MLPerf LoadGen)" in result.stdout
    run = RunFile.load(out)
    rows = [row for row in run.rows if row.scenario is not None]
    assert [row.scenario for row in rows] == ["single-stream", "server", "offline"]
    assert len({row.identity for row in run.rows}) == len(run.rows)
    for row in rows:
        assert row.status == "ok", row.reason
        serving = row.serving
        summary = out.parent / serving.summary_file
        assert summary.is_file() and summary.parent.parent == out.parent / serving.log_dir
        assert serving.log_dir.startswith("run.loadgen/")
        assert serving.result == loadgen_said(summary, "Result is")
        assert serving.samples_per_s == float(loadgen_said(summary, THROUGHPUT_LINE[row.scenario]))
        assert row.throughput_ips == serving.samples_per_s
        assert serving.latency_ms.p90 == ns_to_ms(loadgen_said(summary, "90.00 percentile latency (ns)"))
        assert serving.latency_ms.p99 == ns_to_ms(loadgen_said(summary, "99.00 percentile latency (ns)"))
        assert serving.latency_ms.max == ns_to_ms(loadgen_said(summary, "Max latency (ns)"))
        unmet = [line.strip() for line in summary.read_text().splitlines() if re.search(r"satisfied\s*:\s*NO$", line)]
        assert serving.unmet == unmet
        assert serving.min_duration_s == pytest.approx(QUICK["duration_s"]) and not serving.compliant
        assert serving.accuracy.top1_agree == 1.0 and serving.accuracy.responses == 4  # eager fp32 on 4 images
    single, server, offline = rows
    assert single.batch_size == 1 and server.batch_size == 4
    assert server.serving.bound_held == (loadgen_said(out.parent / server.serving.summary_file,
                                                      "Performance constraints satisfied") == "Yes")
    assert server.serving.target_qps == float(loadgen_said(out.parent / server.serving.summary_file, "target_qps"))
    probes = server.serving.peak.probes
    assert 1 <= len(probes) <= 8 and all((out.parent / p.log_dir / "mlperf_log_summary.txt").is_file() for p in probes)
    for probe in probes:
        said = loadgen_said(out.parent / probe.log_dir / "mlperf_log_summary.txt", "Performance constraints satisfied")
        assert probe.held == (said == "Yes")
    if server.serving.peak.peak_qps is not None:
        assert server.serving.peak.peak_qps == max(p.target_qps for p in probes if p.held)
    assert "latency rows" in offline.serving.batching.choice or "max_batch" in offline.serving.batching.choice


def test_report_compare_and_recommend_read_serving_rows(serving_run, tmp_path) -> None:
    _, out = serving_run
    report = faults.resbench("report", out, "--md", tmp_path / "r.md", "--html", tmp_path / "r.html")
    assert report.returncode == 0, report.stderr
    assert "#### Serving (MLPerf LoadGen, mode: quick)" in (tmp_path / "r.md").read_text()
    html = (tmp_path / "r.html").read_text()
    assert 'id="serving"' in html and "Serving: p99 latency vs QPS" in html
    twin = tmp_path / "twin.json"   # the same rows in another file (one file as both sides is refused)
    twin.write_bytes(Path(out).read_bytes())
    compare = faults.resbench("compare", out, twin, "--allow-insufficient")  # the tiny latency row is short
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert "serving (MLPerf LoadGen)" in compare.stdout
    recommend = faults.resbench("recommend", out, "--scenario", "server", "--max-p99-ms", "250")
    assert recommend.returncode == 0, recommend.stderr
    assert "highest QPS under the p99 bound" in recommend.stdout


def test_server_far_above_capacity_misses_its_bound_and_far_below_holds_it(tmp_path) -> None:
    capacity = 1 / serving_faults.SLEEP_S  # the sleepy model at batch 1: at most 50 samples/s
    verdicts = {}
    for name, qps, bound_ms in (("above", 10 * capacity, 60.0), ("below", capacity / 20, 1000.0)):
        suite = serving_suite(tmp_path / f"{name}.yaml", model="python:serving_faults:sleepy", scenarios=["server"],
                              max_batch=1, target_qps=qps, server_latency_ms=bound_ms, min_queries=8)
        out = tmp_path / f"{name}.json"
        result = faults.resbench("run", suite, "--out", out, "--executor", "in-process")
        assert result.returncode == 0, result.stderr[-3000:]
        (row,) = [row for row in RunFile.load(out).rows if row.scenario == "server"]
        assert row.status == "ok", row.reason
        assert row.serving.target_qps == pytest.approx(qps) and row.serving.peak is None
        verdicts[name] = (row.serving.bound_held, row.serving.latency_ms.p99)
    assert verdicts["above"][0] is False and verdicts["above"][1] > 60.0, verdicts
    assert verdicts["below"][0] is True and verdicts["below"][1] <= 1000.0, verdicts


def test_a_bound_shorter_than_one_batch_ends_the_peak_search_after_one_probe(tmp_path) -> None:
    suite = serving_suite(tmp_path / "suite.yaml", model="python:serving_faults:sleepy", scenarios=["server"],
                          max_batch=1, server_latency_ms=5.0)  # one call sleeps 20 ms
    out = tmp_path / "run.json"
    result = faults.resbench("run", suite, "--out", out, "--executor", "in-process")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [row for row in RunFile.load(out).rows if row.scenario == "server"]
    assert row.status == "ok", row.reason
    assert len(row.serving.peak.probes) == 1 and row.serving.peak.peak_qps is None
    assert row.serving.bound_held is False
    assert any("search stopped after one probe" in warning for warning in row.warnings), row.warnings


def test_a_runtime_that_raises_mid_run_completes_every_sample_and_fails_its_rows(tmp_path) -> None:
    suite = serving_suite(tmp_path / "suite.yaml", model="python:serving_faults:raises", max_batch=1,
                          min_queries=64, server_latency_ms=1000)
    out = tmp_path / "run.json"
    result = faults.resbench("run", suite, "--out", out, timeout=300)  # a hang would end in a timeout here
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for row in RunFile.load(out).rows if row.scenario is not None]
    assert [row.scenario for row in rows] == ["single-stream", "server", "offline"]
    for row in rows:  # single-stream meets the fault mid-run; the others, already broken, before theirs
        assert row.status == "failed", (row.scenario, row.status, row.reason)
        assert serving_faults.RAISE_MESSAGE in row.reason
    first = rows[0].reason
    assert first.startswith("serving: single-stream: RuntimeError"), first
    assert "samples completed without a result" in first and "LoadGen logs in" in first
    folder = out.parent / re.search(r"LoadGen logs in (\S+)\)", first).group(1)
    assert "Result is" in (folder / "mlperf_log_summary.txt").read_text()  # LoadGen finished its run


def test_ctrl_c_keeps_serving_rows_and_resume_measures_the_rest_without_overwriting_logs(tmp_path) -> None:
    suite = serving_suite(tmp_path / "suite.yaml", duration_s=1.0, target_qps=200, max_batch=2)
    out = tmp_path / "run.json"
    proc = faults.start_run(suite, "--out", out)
    try:
        seen = faults.wait_for_rows(out, 2, proc, timeout=300)  # the latency row, then single-stream's
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    interrupted = RunFile.load(out)
    kept = [row for row in interrupted.rows if row.scenario is not None]
    assert kept and len(kept) < 3 and all(row.status == "ok" for row in kept), seen
    # The interrupted scenario's folder (made here if the worker died before making it) is never reused.
    interrupted_case = out.parent / "run.loadgen" / f"python-faults-tiny_eager_fp32_{SCENARIOS[len(kept)]}"
    interrupted_case.mkdir(parents=True, exist_ok=True)
    (interrupted_case / "marker").write_text("from the interrupted attempt")
    result = faults.resbench("run", suite, "--resume", out, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    final = [row for row in RunFile.load(out).rows if row.scenario is not None]
    assert [row.scenario for row in final] == SCENARIOS
    assert all(row.status == "ok" for row in final)
    assert final[0].serving == kept[0].serving  # kept, not measured again
    summaries = [out.parent / row.serving.summary_file for row in final]
    assert all(path.is_file() for path in summaries) and len(set(summaries)) == 3
    assert final[len(kept)].serving.log_dir == f"run.loadgen/{interrupted_case.name}-2"
    assert (interrupted_case / "marker").read_text() == "from the interrupted attempt"

