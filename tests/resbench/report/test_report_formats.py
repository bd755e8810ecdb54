"""The report formats: self-contained HTML with its plots, CSV one row per case, and pytest-benchmark JSON
that pytest-benchmark's own `compare` reads."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys

import pytest

from resbench.report.csv_export import COLUMNS, render_csv
from resbench.report.html import render_html
from resbench.report.plots import model_depth
from resbench.report.pytest_benchmark import benchmark_stats, to_pytest_benchmark, write_pytest_benchmark

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_and_has_its_plots(synthetic_run):
    page = render_html(synthetic_run)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [title for title, _ in images] == ["Latency vs batch size", "Throughput vs depth",
                                              "Speedup over eager", "Latency distributions (p50 / p90 / p99)",
                                              "Memory per backend"]
    for _, data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    # opens offline: nothing fetched, nothing executed
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    for section in ('id="summary"', 'id="parity"', 'id="environment"', "Timing contract"):
        assert section in page
    assert "time.perf_counter around each call" in page             # the timing contract in words
    assert "Test CPU @ 2.0GHz" in page and "2.13.0+cpu" in page     # the environment
    assert "tensorrt needs a CUDA GPU" in page                      # skipped rows keep their reason
    assert page.count("<tr") > len(synthetic_run.rows)              # summary + parity + env tables


def test_html_without_finished_cases_says_so(synthetic_run, factory):
    failed = factory.make_run([row for row in synthetic_run.rows if row.status != "ok"])
    page = render_html(failed)
    assert "data:image/png" not in page and "nothing to plot" in page


def test_model_depth():
    assert [model_depth(m) for m in ("resnet18", "wide_resnet50_2", "torchvision:resnext50_32x4d",
                                     "python:mymodels:build")] == [18, 50, 50, None]


def test_csv_has_one_row_per_case(synthetic_run):
    records = list(csv.DictReader(io.StringIO(render_csv(synthetic_run))))
    assert len(records) == len(synthetic_run.rows)
    assert tuple(records[0]) == COLUMNS
    first = records[0]
    assert first["model"] == "resnet18" and first["status"] == "ok"
    assert float(first["median_ms"]) == pytest.approx(synthetic_run.rows[0].latency_ms.median)
    assert float(first["speedup_vs_eager"]) == pytest.approx(1.0)
    compiled = records[1]
    assert float(compiled["speedup_vs_eager"]) == pytest.approx(1.25)
    skipped = next(r for r in records if r["status"] == "skipped")
    assert skipped["median_ms"] == "" and "CUDA GPU" in skipped["reason"]


def test_pytest_benchmark_stats_match_its_own_definitions():
    stats_module = pytest.importorskip("pytest_benchmark.stats")
    cases = ([0.003], [0.001, 0.002], [0.5, 0.1, 0.3, 0.2, 0.9], [0.01 * (i % 7 + 1) for i in range(23)],
             [0.01 * (i % 5 + 1) for i in range(24)], [0.002] * 10 + [0.02], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    for data in cases:
        reference = stats_module.Stats()
        for value in data:
            reference.update(value)
        ours, theirs = benchmark_stats(data), reference.as_dict()
        assert ours.keys() == theirs.keys()
        for key in theirs:
            expected = theirs[key] if isinstance(theirs[key], str | int) else pytest.approx(theirs[key])
            assert ours[key] == expected, key


def test_pytest_benchmark_export_layout(synthetic_run):
    document = to_pytest_benchmark(synthetic_run)
    ok_rows = [row for row in synthetic_run.rows if row.status == "ok"]
    assert len(document["benchmarks"]) == len(ok_rows)
    bench = document["benchmarks"][0]
    assert bench["stats"]["median"] == pytest.approx(ok_rows[0].latency_ms.median / 1000)
    assert bench["stats"]["rounds"] == len(ok_rows[0].samples_ms) and bench["stats"]["iterations"] == 1
    assert bench["group"] == "resnet18 b1 fp32" and bench["params"]["backend"] == "eager"
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(document)


def test_pytest_benchmark_compare_reads_the_export(synthetic_run, factory, tmp_path):
    """pytest-benchmark's own CLI loads two exports and compares them (it only warns on files it cannot
    load, so the check is that every benchmark of both files shows up in its table)."""
    pytest.importorskip("pytest_benchmark")
    slower = factory.make_run([row.model_copy(update={"samples_ms": [s * 1.2 for s in row.samples_ms]})
                               for row in synthetic_run.rows])
    write_pytest_benchmark(synthetic_run, tmp_path / "0001_base.json")
    write_pytest_benchmark(slower, tmp_path / "0002_cand.json")
    json.loads((tmp_path / "0001_base.json").read_text())           # strict JSON (no NaN)
    result = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", "--columns=min,median,max,rounds",
         "--group-by=group", str(tmp_path / "0001_base.json"), str(tmp_path / "0002_cand.json")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Failed to load" not in output, output
    names = [bench["name"] for bench in to_pytest_benchmark(synthetic_run)["benchmarks"]]
    for name in names:
        assert output.count(name) == 2, (name, output)              # once from each file
    assert "benchmark 'resnet50 b8 fp32': 4 tests" in output


def test_int8_parity_cells_show_top1_agreement_not_an_eager_ratio(factory):
    from resbench.report.console import fmt_parity
    from resbench.report.markdown import parity_cell
    from resbench.results import Parity

    parity = Parity(reference="fp64", rel_l2=0.05, max_abs=0.4, cosine=0.99812, sqnr_db=26.0, top1_agree=15 / 16,
                    top5_overlap=0.95, err_ratio=1.6, passed=True, images=16,
                    rule="int8 agrees on top-1 for 15/16 images, top-5 overlap 0.95, cosine 0.9981")
    row = factory.make_row("resnet18", "onnxruntime", 1, dtype="int8", parity=parity)
    assert parity_cell(row) == "pass top-1 15/16 (cos 0.9981)"
    assert fmt_parity(row) == "[green]pass[/] top-1 15/16 cos 0.9981"
    fp32 = factory.make_row("resnet18", "onnxruntime", 1)
    assert parity_cell(fp32) == "pass ×1.10 (cos 1.0000)"  # float rows keep the ratio to eager


def test_console_marks_a_partial_row_and_shows_no_spread_of_one_median(factory):
    """A --repeat 3 row of one repetition (the run stopped): tagged, no "repeat spread 0.0%"."""
    import io

    from rich.console import Console

    from resbench.report.console import print_run
    from resbench.runner import combine_repeats

    repetitions = [[factory.make_row(median_ms=m), factory.make_row(backend="compile", median_ms=m / 2)]
                   for m in (10.0, 11.0, 12.0)]
    partial = combine_repeats(repetitions[:1], asked=3)[1]
    complete = combine_repeats(repetitions)[0]
    buffer = io.StringIO()
    print_run(factory.make_run([complete, partial]), Console(file=buffer, width=250, color_system=None))
    eager, compiled = (line for line in buffer.getvalue().splitlines() if line.startswith(("│ eager", "│ compile")))
    assert "repeat spread 20.0%" in eager and "!" not in eager
    assert "! 1/3 repetitions" in compiled and "repeat spread" not in compiled
    assert "1 of 3 repetitions measured (the run stopped" in buffer.getvalue()   # listed under the table
