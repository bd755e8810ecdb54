"""The command line as a user sees it: exit codes, one-line errors, and an end-to-end run on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resbench.results import RunFile

ROOT = Path(__file__).resolve().parents[2]


def resbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resbench.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_smoke_suite_end_to_end(smoke_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    result, out = smoke_run  # tests/conftest.py: `resbench run suites/smoke.yaml --out OUT --device cpu`
    assert result.returncode == 0, result.stderr
    assert f"run file: {out}" in result.stdout
    assert "resnet18 · fp32 · 64px" in result.stdout  # the table's title
    run = RunFile.load(out)
    assert run.env["device_type"] == "cpu" and run.env["torch"]
    assert run.suite["name"] == "smoke"
    assert {r.backend for r in run.rows} == {"eager", "compile"}
    for row in run.rows:
        assert row.status == "ok", row.reason
        assert row.latency_ms.n == len(row.samples_ms) >= 1
        assert row.latency_ms.min <= row.latency_ms.median <= row.latency_ms.p99 <= row.latency_ms.max
        assert row.throughput_ips == pytest.approx(row.batch_size / (row.latency_ms.median / 1e3))
        assert row.params == 11_689_512 and row.gflops == pytest.approx(3.628 * (64 / 224) ** 2, rel=0.05)
        assert row.prepare_s is not None and row.first_call_s is not None
        assert row.parity is not None and row.parity.passed, row.parity
        assert row.memory.process_mb and "RSS" in row.memory.source
        assert row.numerics["tf32_cudnn"] is False
    compiled = next(r for r in run.rows if r.backend == "compile")
    assert compiled.parity.err_ratio is not None and compiled.prepare_s > 1.0  # compile happened in prepare


def test_list_models_json() -> None:
    result = resbench("list", "models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    assert rows["resnet50"]["params"] == 25_557_032 and rows["resnet50"]["gflops_224"] == pytest.approx(8.178)


def test_list_suites_outside_a_checkout_says_where_it_looked(tmp_path: Path) -> None:
    # It reads ./suites: from another folder it printed an empty table and nothing else.
    result = subprocess.run([sys.executable, "-m", "resbench.cli", "list", "suites"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"no suite files in {tmp_path / 'suites'}" in " ".join(result.stderr.split())


def test_no_isolation_with_another_executor_is_refused(tmp_path: Path) -> None:
    # --no-isolation is --executor in-process: with --executor ray it silently ran everything in this process.
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodels: [resnet18]\nbackends: [eager]\nbatch_sizes: [1]\ndtypes: [fp32]\n"
                     "image_size: 32\ntiming: {warmup_s: 0, min_iters: 1, min_time_s: 0, max_time_s: 0.1}\n")
    out = tmp_path / "run.json"
    result = resbench("run", str(suite), "--no-isolation", "--executor", "ray", "--out", str(out))
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip() == ("error: --no-isolation is --executor in-process; it cannot be combined with "
                                     "--executor ray: give one of them")


def test_list_backends_says_why_unavailable() -> None:
    result = resbench("list", "backends", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["backend"]: r for r in json.loads(result.stdout)}
    assert rows["eager"]["available"] is True
    for row in rows.values():
        assert row["available"] or row["reason"], row


def test_env_reports_device_and_backends() -> None:
    result = resbench("env", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["env"]["device_type"] == "cpu" and {"backend", "available", "reason"} <= set(data["backends"][0])


@pytest.mark.parametrize("args, fragment", [
    (["list", "gadgets"], "cannot list 'gadgets'; one of: models, backends, suites"),
    (["run", "suites/nope.yaml"], "suites/nope.yaml: suite file does not exist; suites in suites/:"),
    (["run", "suites/smoke.yaml", "--device", "tpu"], "device 'tpu' is not allowed; one of: auto, cpu, cuda"),
    (["run", "suites/smoke.yaml", "--repeat", "0"], "--repeat 0 is not allowed"),
    # 10**20 repetitions: the run was OOM-killed (exit 137) before it said anything
    (["run", "suites/smoke.yaml", "--repeat", "99999999999999999999"],
     "--repeat 99999999999999999999 is not allowed; it must be an integer from 1 to 1,000"),
    (["run", "suites/smoke.yaml", "--bogus"], "No such option: --bogus"),
    (["run", "suites/smoke.yaml", "--wait-idle", "-1"], "--wait-idle -1.0 is not allowed; it must be a number"),
    # pathlib drops a trailing '/': `--out new.json/` wrote a file named new.json
    (["run", "suites/smoke.yaml", "--out", "new.json/"], "--out 'new.json/' ends with '/', which names a folder"),
    (["report", "r.json", "--html", "r.html/"], "--html 'r.html/' ends with '/', which names a folder"),
])
def test_usage_errors_are_one_line_exit_2(args: list[str], fragment: str) -> None:
    result = resbench(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_suite_exits_2_before_any_work(tmp_path: Path) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: x\nmodels: [resnet18]\nbackends: [eager]\nbatch_sizes: [1]\ndtypes: [fp64]\n")
    out = tmp_path / "never.json"
    result = resbench("run", str(suite), "--out", str(out))
    assert result.returncode == 2
    assert "dtypes[0]" in result.stderr and "'fp64'" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args", [["--debug", "recommend", "nope.json"], ["recommend", "nope.json", "--debug"],
                                  ["recommend", "--debug", "nope.json"]])
def test_debug_is_accepted_anywhere_on_the_command_line(args: list[str]) -> None:
    result = resbench(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr and "RunFileError" in result.stderr   # --debug: the traceback
    assert result.stderr.strip().splitlines()[-1] == "error: run file 'nope.json' does not exist"
