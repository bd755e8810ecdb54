"""Text snapshots of what users read: the run's Markdown, the comparison's Markdown and terminal table, and
the recommendation's terminal table. Inputs are deterministic (exact-quantile samples, seeded bootstrap).
Regenerate after an intended change with RESBENCH_UPDATE_SNAPSHOTS=1 pytest tests/resbench/report."""

from __future__ import annotations

from rich.console import Console

from resbench.compare import compare_runs, thresholds_from_specs
from resbench.recommend import Constraints, print_recommendation, recommend
from resbench.report.comparison import print_comparison, render_markdown
from resbench.report.markdown import render_markdown as render_run_markdown
from resbench.results import RunFile

WIDTH = 180


def _console() -> Console:
    return Console(width=WIDTH, record=True, color_system=None, force_terminal=False, legacy_windows=False)


def _candidate(base: RunFile, factory) -> RunFile:
    """The baseline with resnet50 compile b8 20% slower, resnet18 compile b1 30% faster, resnet18 eager b8
    re-measured with too few samples to judge (INSUFFICIENT), and one new case."""
    rows = []
    for row in base.rows:
        key = (row.model, row.backend, row.batch_size)
        if row.status == "ok" and key == ("resnet50", "compile", 8):
            row = factory.make_row("resnet50", "compile", 8, samples_ms=[s * 1.2 for s in row.samples_ms])
        elif row.status == "ok" and key == ("resnet18", "compile", 1):
            row = factory.make_row("resnet18", "compile", 1, samples_ms=[s * 0.7 for s in row.samples_ms])
        elif row.status == "ok" and key == ("resnet18", "eager", 8):
            few = factory.quantile_samples(row.latency_ms.median, 0.02, 2)
            row = factory.make_row("resnet18", "eager", 8, samples_ms=few)
        rows.append(row)
    rows.append(factory.make_row("resnet50", "triton", 1, median_ms=7.0))
    return factory.make_run(rows)


def test_run_markdown_snapshot(synthetic_run, snapshot):
    snapshot("run_report.md", render_run_markdown(synthetic_run))


def test_compare_markdown_and_table_snapshots(synthetic_run, factory, snapshot):
    candidate = _candidate(synthetic_run, factory)
    comparison = compare_runs(synthetic_run, candidate, thresholds_from_specs(["memory:10%"]),
                              base_name="base.json", cand_name="cand.json")
    assert comparison.exit_code == 1
    snapshot("compare.md", render_markdown(comparison))
    console = _console()
    print_comparison(comparison, console)
    snapshot("compare_table.txt", console.export_text())


def test_recommend_table_snapshot(synthetic_run, snapshot):
    console = _console()
    print_recommendation(recommend(synthetic_run, Constraints(max_p99_ms=50.0)), console)
    snapshot("recommend_table.txt", console.export_text())
