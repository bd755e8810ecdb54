"""Bad input end to end, through the command line's own entry point: each mistake is caught before the
work it would spoil, as one line on stderr with exit code 2, and no run file is written. Weights files are
never unpickled unsafely."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from resbench.cli import main
from resbench.measure import base_row
from resbench.models import ModelSpec, construct
from resbench.results import RunFile
from resbench.suite import expand, load_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402

run_main, assert_one_line_error = faults.run_main, faults.assert_one_line_error


@pytest.mark.parametrize("text, fragment", [
    ("name: x\nmodels: [resnet18\n", "invalid YAML: line 3, column 1"),
    (faults.suite_dict(batch_sizes="many"), "batch_sizes: Input should be a valid list"),
    (faults.suite_dict(colour="red"), "unknown key 'colour'; allowed keys: name, description"),
    (faults.suite_dict(models=["resnet19"]), "unknown model 'resnet19'; one of: resnet18"),
    (faults.suite_dict(backends=["tensorflow"]), "backends[0].name: unknown backend 'tensorflow'"),
    (faults.suite_dict(backends=[{"name": "eager", "graphs": True}]), "unknown option 'graphs' for backend"),
    (faults.suite_dict(image_size=8), "image_size 8 is too small for a ResNet"),
    (faults.suite_dict(batch_sizes=[0]), "batch size 0 is not allowed"),
    (faults.suite_dict(timing={"min_time_s": 2, "max_time_s": 1}), "max_time_s (1.0) must be >= min_time_s"),
    (faults.suite_dict(batch_sizes=[10**9], image_size=224), "in fp32 needs 560,760.5 GiB for the input batch alone"),
    (faults.suite_dict(models=["python:no_such_module_xyz:build"]), "needs the package 'no_such_module_xyz'"),
    (faults.suite_dict(models=["python:faults:no_such_factory"]), "has no callable 'no_such_factory'"),
])
def test_bad_suites(tmp_path, monkeypatch, capsys, text, fragment):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    out = tmp_path / "run.json"
    assert_one_line_error(*run_main(monkeypatch, capsys, "run", suite, "--out", out), fragment)
    assert not out.exists()


class CodeOnLoad:
    """Unpickling this runs a shell command: what an unsafe torch.load of a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def weights_case(kind: str, folder: Path) -> tuple[str, Path, str]:
    """(model, weights file, expected fragment) for one kind of bad weights file."""
    path = folder / "weights.pth"
    if kind == "missing":
        return "resnet18", path, f"weights file {str(path)!r} does not exist"
    if kind == "not a checkpoint":
        path.write_text("these are not the weights you are looking for\n")
        return "resnet18", path, "is not a readable checkpoint"
    if kind == "another architecture":
        torch.save(construct(ModelSpec("resnet18")).state_dict(), path)
        # 96 keys resnet34 has and resnet18 lacks, less the 16 BN `num_batches_tracked` counters the loader
        # fills in as torch's own loader does (one per BatchNorm of the 8 extra BasicBlocks)
        return "resnet34", path, "does not fit model 'resnet34': 80 missing keys (first: 'layer1.2.bn1.bias')"
    if kind == "code in the pickle":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": CodeOnLoad(folder / "pwned")}, path)
        return "resnet18", path, "is not a readable checkpoint: Weights only load failed"
    # a FIFO, a device and a symlink loop all read "does not exist" (which they do)
    if kind == "a FIFO":
        os.mkfifo(path)
        return "resnet18", path, f"weights {str(path)!r} is a FIFO; give a checkpoint file (.pth"
    if kind == "a device":
        return "resnet18", Path("/dev/zero"), "weights '/dev/zero' is a device; give a checkpoint file (.pth"
    if kind == "a symlink loop":
        path.symlink_to(path.name)
        return "resnet18", path, f"weights file {str(path)!r} cannot be read: Too many levels of symbolic links"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["missing", "not a checkpoint", "another architecture", "code in the pickle",
                                  "a FIFO", "a device", "a symlink loop"])
def test_bad_weights_fail_before_any_case_runs(tmp_path, monkeypatch, capsys, kind):
    model, weights, fragment = weights_case(kind, tmp_path)
    suite = faults.write_suite(tmp_path / "suite.yaml", models=[{"name": model, "weights": str(weights)}])
    out = tmp_path / "run.json"
    assert_one_line_error(*run_main(monkeypatch, capsys, "run", suite, "--out", out), fragment)
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()  # nothing in the file was executed


@pytest.mark.parametrize("where, fragment", [
    ("file/run.json", "cannot create output folder"),
    (".", "is a directory; give a file path"),
    ("/proc/run.json", "output folder '/proc' is not writable"),
])
def test_unwritable_output_fails_before_any_work(tmp_path, monkeypatch, capsys, where, fragment):
    (tmp_path / "file").write_text("a file, not a folder\n")
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = Path(where) if where.startswith("/") else tmp_path / where
    assert_one_line_error(*run_main(monkeypatch, capsys, "run", suite, "--out", out), fragment)


def test_a_bad_worker_memory_cap_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESBENCH_WORKER_MEMORY_MB", "12")
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = tmp_path / "run.json"
    assert_one_line_error(*run_main(monkeypatch, capsys, "run", suite, "--out", out),
                          "RESBENCH_WORKER_MEMORY_MB='12' is not allowed")
    assert not out.exists()


def test_a_worker_memory_cap_below_the_real_minimum_says_so(tmp_path, monkeypatch):
    """256 and 512 MiB used to crash every worker at start-up with "killed by SIGABRT": importing torch alone
    maps more. The run now stops with one line naming what a worker really needs."""
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = tmp_path / "run.json"
    result = faults.resbench("run", suite, "--out", out, env=faults.cli_env(RESBENCH_WORKER_MEMORY_MB="300"))
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "RESBENCH_WORKER_MEMORY_MB=300 is too small: a worker maps" in error[0], error
    needed = int(error[0].split("give at least ")[1].split()[0].replace(",", ""))
    assert 300 < needed < 16_384 and "SIGABRT" not in result.stderr
    ok = faults.resbench("run", suite, "--out", out, env=faults.cli_env(RESBENCH_WORKER_MEMORY_MB=str(needed + 512)))
    assert ok.returncode == 0 and RunFile.load(out).rows[0].status == "ok", ok.stderr[-2000:]


def test_weights_given_as_a_directory_say_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "ckpt").mkdir()
    suite = faults.write_suite(tmp_path / "suite.yaml", models=[{"name": "resnet18", "weights": "ckpt"}])
    assert_one_line_error(*run_main(monkeypatch, capsys, "run", suite, "--out", tmp_path / "run.json"),
                          f"weights {str(tmp_path / 'ckpt')!r} is a directory; give a checkpoint file (.pth")


def _run_with(tmp_path: Path, **row_fields) -> Path:
    """A run file of one ok row whose fields are replaced by `row_fields` as raw JSON (bypassing the model)."""
    import json

    from resbench.stats import summarize

    suite = load_suite(faults.write_suite(tmp_path / "suite.yaml"))
    case = expand(suite, "cpu")[0]
    row = base_row(case, None, "ok", latency_ms=summarize([2.0, 2.1]), samples_ms=[2.0, 2.1],
                   throughput_ips=500.0)
    data = json.loads(RunFile(env={}, suite=suite.model_dump(mode="json"), rows=[row]).to_json())
    data["rows"][0].update(row_fields)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("command", [["recommend"], ["report", "--html", "r.html"],
                                     ["report", "--pytest-benchmark", "pb.json"]])
@pytest.mark.parametrize("fields, fragment", [
    ({"samples_ms": [float("nan"), 2.0]}, "rows.0.samples_ms.0: Input should be a finite number"),
    ({"samples_ms": [0.0, 0.0]}, "rows.0.samples_ms.0: Input should be greater than 0"),
    ({"latency_ms": {"n": 2, "median": -6.144, "mean": 1, "stdev": 0, "min": 1, "max": 1, "p90": 1, "p95": 1,
                     "p99": -6.144, "ci_median": [1, 1], "cv": 0}}, "rows.0.latency_ms.median: Input should be"),
])
def test_reports_and_recommend_refuse_impossible_numbers(tmp_path, monkeypatch, capsys, command, fields, fragment):
    """These were exit 1 "internal error" (report) or a recommendation for "lowest p99 (-6.144 ms)"."""
    path = _run_with(tmp_path, **fields)
    args = [command[0], path, *[a if a.startswith("--") else str(tmp_path / a) for a in command[1:]]]
    assert_one_line_error(*run_main(monkeypatch, capsys, *args), fragment)


def test_reports_render_nan_parity_metrics(tmp_path, monkeypatch, capsys):
    """A NaN output is a legitimate (failing) parity result: every report renders it."""
    nan = float("nan")
    path = _run_with(tmp_path, parity={"reference": "fp64", "rel_l2": nan, "max_abs": nan, "cosine": nan,
                                       "sqnr_db": nan, "top1_agree": 0.0, "top5_overlap": 0.0, "err_ratio": nan,
                                       "passed": False, "rule": "NaN in the output"})
    outputs = {flag: tmp_path / name for flag, name in (("--html", "r.html"), ("--md", "r.md"), ("--csv", "r.csv"),
                                                        ("--pytest-benchmark", "pb.json"))}
    monkeypatch.setattr(sys, "argv", ["resbench", "report", str(path),
                                      *[part for flag, p in outputs.items() for part in (flag, str(p))]])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert all(p.is_file() for p in outputs.values())
    code, lines = run_main(monkeypatch, capsys, "recommend", path)
    assert code == 0, lines


def test_every_error_line_is_capped(tmp_path, monkeypatch, capsys):
    """A 4.3 MB "one-line" error was printed for an alias-expanded value."""
    suite = faults.write_suite(tmp_path / "suite.yaml", description=["x" * 100] * 3000)
    code, lines = run_main(monkeypatch, capsys, "run", suite, "--out", tmp_path / "run.json")
    assert code == 2 and len(lines) == 1 and len(lines[0]) < 700, (len(lines[0]), lines[0][:200])
