"""compare, recommend and the reports on serving rows (synthetic rows: no LoadGen needed)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from resbench.compare import Verdict, compare_runs
from resbench.errors import UsageError
from resbench.recommend import Constraints, recommend
from resbench.report.csv_export import render_csv
from resbench.report.html import render_html
from resbench.report.markdown import render_markdown
from resbench.report.serving import console_table
from resbench.results import Memory, Parity, ResultRow, RunFile
from resbench.serving.recommend import print_scenario_recommendation, recommend_scenario
from resbench.serving.record import Accuracy, Batching, LoadgenLatency, PeakSearch, Probe, ServingRecord
from resbench.stats import summarize

BOUND = 15.0


def serving_row(backend: str, scenario: str, qps: float = 100.0, p99: float = 5.0, held: bool | None = None,
                probes: list[tuple[float, float]] | None = None, status: str = "ok", dtype: str = "fp32") -> ResultRow:
    """A serving row; `probes` = [(target QPS, p99 ms)] of a peak search (held when p99 <= BOUND)."""
    fields = dict(model="resnet50", backend=backend, batch_size=1 if scenario == "single-stream" else 8,
                  dtype=dtype, image_size=224, memory_format="channels_last", timing_mode="device", device="cpu",
                  status=status, scenario=scenario)
    if status != "ok":
        return ResultRow(**fields, reason="serving: RuntimeError: boom")
    server = scenario == "server"
    peak = None
    if probes is not None:
        made = [Probe(target_qps=q, completed_qps=q, p99_ms=p, held=p <= BOUND, result="INVALID",
                      log_dir=f"run.loadgen/{backend}_{scenario}/probe-{i:02d}") for i, (q, p) in enumerate(probes, 1)]
        held_qps = [p.target_qps for p in made if p.held]
        peak = PeakSearch(precision=0.1, peak_qps=max(held_qps) if held_qps else None, probes=made)
    record = ServingRecord(
        scenario=scenario, compliant=False, result="INVALID", unmet=["Min duration satisfied : NO"],
        samples_per_s=qps, latency_ms=LoadgenLatency(p50=p99 / 2, p90=p99 / 1.5, p99=p99),
        target_qps=qps if server else None, latency_bound_ms=BOUND if server else None,
        bound_held=(p99 <= BOUND if held is None else held) if server else None, min_duration_s=1.0, min_queries=16,
        batching=Batching(batch_size=fields["batch_size"], max_wait_ms=2.0, batches=10, samples=70, mean_fill=0.875,
                          batch_ms=4.0),
        accuracy=Accuracy(reference="fp64", samples=16, responses=16, top1_agree=1.0, log_dir="a"),
        peak=peak, log_dir=f"run.loadgen/{backend}_{scenario}", summary_file=f"run.loadgen/{backend}_{scenario}/s.txt")
    return ResultRow(**fields, throughput_ips=qps, serving=record)


def run_of(*rows: ResultRow) -> RunFile:
    return RunFile(env={"device": "cpu"}, suite={"name": "serving"}, rows=list(rows))


def test_compare_matches_serving_rows_by_scenario_and_gates_a_missed_bound() -> None:
    base = run_of(serving_row("eager", "server", 100, 10), serving_row("eager", "offline", 400))
    same = compare_runs(base, base)
    assert same.exit_code == 0 and [c.verdict for c in same.cases] == [Verdict.SAME, Verdict.SAME]
    slower = compare_runs(base, run_of(serving_row("eager", "server", 100, 10), serving_row("eager", "offline", 300)))
    assert slower.cases[1].verdict is Verdict.SLOWER and slower.exit_code == 0  # shown, not gated
    assert slower.cases[1].metrics[0].delta == pytest.approx(400 / 300 - 1)
    missed = compare_runs(base, run_of(serving_row("eager", "server", 100, 40), serving_row("eager", "offline", 400)))
    assert missed.exit_code == 1
    assert "held -> MISSED" in missed.regressed[0].regressions[0]
    assert "resnet50 eager fp32 server" in missed.summary


def test_recommend_server_picks_the_highest_qps_under_the_bound_from_every_run() -> None:
    run = run_of(serving_row("eager", "server", 100, 5, probes=[(100, 5), (200, 30)]),
                 serving_row("onnxruntime", "server", 150, 14, probes=[(75, 6), (150, 14), (300, 90)]),
                 serving_row("compile", "server", status="failed"))
    (group,) = recommend_scenario(run, "server")
    assert group.recommended.row.backend == "onnxruntime" and group.recommended.value == 150
    assert group.candidates[-1].value is None and "failed" in group.candidates[-1].reason
    (tight,) = recommend_scenario(run, "server", max_p99_ms=10)  # onnxruntime only met it at 75 QPS
    assert tight.recommended.row.backend == "eager" and tight.recommended.value == 100
    assert [c.value for c in tight.candidates[:2]] == [100, 75]
    # a peak whose probe held but whose own full-length run missed counts the next QPS that held in every run
    shaky = run_of(serving_row("onnxruntime", "server", 150, 14, probes=[(75, 6), (150, 14)]),
                   serving_row("aot-inductor", "server", 400, 20, probes=[(200, 5), (400, 12), (800, 60)]))
    (group,) = recommend_scenario(shaky, "server")
    assert group.recommended.row.backend == "aot-inductor" and group.recommended.value == 200
    assert group.recommended.p99_ms == 5 and "own run at 400 QPS missed" in group.recommended.reason


def test_recommend_excludes_a_runtime_whose_latency_rows_fail_parity() -> None:
    broken = ResultRow(model="resnet50", backend="onnxruntime", batch_size=1, dtype="fp32", image_size=224,
                       memory_format="channels_last", timing_mode="device", device="cpu", status="ok",
                       samples_ms=[1.0] * 5, latency_ms=summarize([1.0] * 5),
                       parity=Parity(reference="fp64", rel_l2=1.0, max_abs=9.0, cosine=0.1, sqnr_db=0.0,
                                     top1_agree=0.0, top5_overlap=0.0, err_ratio=1e6, passed=False, rule="x"))
    run = run_of(broken, serving_row("eager", "offline", 100), serving_row("onnxruntime", "offline", 900))
    (group,) = recommend_scenario(run, "offline")
    assert group.recommended.row.backend == "eager"
    assert group.candidates[-1].reason == "fails parity in this run's latency rows"
    (single,) = recommend_scenario(run_of(serving_row("eager", "single-stream", p99=3),
                                          serving_row("onnxruntime", "single-stream", p99=1.5)), "single-stream")
    assert single.recommended.row.backend == "onnxruntime"  # lowest p90


def test_recommend_scenario_filters_on_own_memory_and_says_what_it_could_not_check() -> None:
    """Serving rows carry the runtime's own memory (backend_mb) like latency rows: --max-memory-gb excludes
    by it with --scenario too (it was refused there), and a row without the figure is kept with a note."""
    def with_mb(row: ResultRow, mb: float | None) -> ResultRow:
        return row.model_copy(update={"memory": Memory(backend_mb=mb)})

    run = run_of(with_mb(serving_row("onnxruntime", "offline", 900), 1536.0),
                 with_mb(serving_row("eager", "offline", 400), 300.0),
                 with_mb(serving_row("compile", "offline", 300), None))
    (group,) = recommend_scenario(run, "offline", max_memory_gb=1.0)
    assert group.recommended.row.backend == "eager"
    assert group.candidates[-1].reason == "memory 1.50 GB (backend_mb) > --max-memory-gb 1"
    assert group.notes == ("--max-memory-gb not checked for compile fp32: no per-backend memory figure",)
    (unfiltered,) = recommend_scenario(run, "offline")
    assert unfiltered.recommended.row.backend == "onnxruntime" and not unfiltered.notes
    with pytest.raises(UsageError, match=r"--max-memory-gb 0.0 is not allowed; it must be > 0"):
        recommend_scenario(run, "offline", max_memory_gb=0.0)


BUSY_WARNING = "machine busy: other processes used 1.7 of 2 cores while measured (allowed 0.2)"


def busy(row: ResultRow) -> ResultRow:
    """The row as measured under contention: the warning measure.Watch gives it (system.py's wording)."""
    return row.model_copy(update={"warnings": [BUSY_WARNING], "system": {"contended": True, "other_cores": 1.7}})


def test_recommend_marks_a_contended_serving_row_and_names_the_best_clean_one(capsys) -> None:
    run = run_of(busy(serving_row("onnxruntime", "offline", 900)), serving_row("eager", "offline", 400),
                 busy(serving_row("compile", "offline", 300)))
    (group,) = recommend_scenario(run, "offline")
    pick = group.recommended
    # ranked on its figure, as latency rows are, but never preferred over a clean row without saying so
    assert pick.row.backend == "onnxruntime" and pick.doubts == ["busy"]
    assert pick.reason == ("900.0 samples/s; caution: measured with warnings (busy); the best clean runtime is "
                           "eager fp32 (400.0)")
    assert [c.doubts for c in group.candidates] == [["busy"], [], ["busy"]]
    assert group.candidates[2].reason == "300.0 samples/s"   # only the pick's reason carries the caution
    assert len(group.notes) == 1 and "--wait-idle SECONDS" in group.notes[0]
    console = Console(file=io.StringIO(), width=250)
    print_scenario_recommendation([group], console, None)
    text = console.file.getvalue()
    assert "doubts" in text and "caution: measured with warnings (busy)" in text and "note: runtimes with" in text
    # a clean pick: no caution; the note stays, since a ranked runtime is doubtful
    (clean,) = recommend_scenario(run_of(serving_row("eager", "offline", 400),
                                         busy(serving_row("compile", "offline", 300))), "offline")
    assert clean.recommended.reason == "400.0 samples/s" and clean.notes


def test_serving_tables_mark_a_contended_row_as_latency_tables_do() -> None:
    run = run_of(busy(serving_row("eager", "offline", 400)), serving_row("compile", "offline", 300))
    console = Console(file=io.StringIO(), width=250)
    console.print(console_table(run))
    lines = console.file.getvalue().splitlines()
    assert "ok (1 warning) ! busy" in next(line for line in lines if "│ eager" in line)
    assert "!" not in next(line for line in lines if "│ compile" in line)
    assert "| ok (1 warning) ! busy | 400.0 |" in render_markdown(run)


def test_recommend_errors_are_one_line() -> None:
    run = run_of(serving_row("eager", "offline"))
    with pytest.raises(UsageError, match="--scenario 'sever' is not allowed; one of: single-stream, server, offline"):
        recommend_scenario(run, "sever")
    with pytest.raises(UsageError, match="matches no serving row in the run; scenarios in it: offline"):
        recommend_scenario(run, "server")


def test_latency_recommend_leaves_serving_rows_out() -> None:
    samples = [10.0 + i / 10 for i in range(30)]
    latency = ResultRow(model="resnet50", backend="eager", batch_size=8, dtype="fp32", image_size=224,
                        memory_format="channels_last", timing_mode="device", device="cpu", status="ok",
                        samples_ms=samples, latency_ms=summarize(samples), throughput_ips=800.0)
    recommendation = recommend(run_of(latency, serving_row("compile", "offline", 4000)), Constraints())
    assert [[r.row.backend for r in group.runtimes] for group in recommendation.groups] == [["eager"]]
    with pytest.raises(UsageError, match=r"no latency rows.*serving rows: --scenario"):
        recommend(run_of(serving_row("eager", "offline")), Constraints())


def test_reports_show_a_serving_table_and_plot() -> None:
    run = run_of(serving_row("eager", "server", 100, 5, probes=[(100, 5), (200, 30)]),
                 serving_row("eager", "offline", 400), serving_row("eager", "single-stream", 90, 2),
                 serving_row("compile", "server", status="failed"), serving_row("tensorrt", "server", status="skipped"),
                 serving_row("tensorrt", "offline", status="skipped"))
    markdown = render_markdown(run)
    assert "#### Serving (MLPerf LoadGen, mode: quick)" in markdown
    assert "| resnet50 | eager | fp32 | server | ok | 100.0 | 3.333 | 5.000 | p99 ≤ 15 ms held at 100 QPS (peak) |" \
        in markdown
    assert "failed: serving: RuntimeError: boom" in markdown
    assert "| tensorrt |" not in markdown and "Not served here: tensorrt fp32 (skipped" in markdown
    html = render_html(run)
    assert 'id="serving"' in html and "Serving: p99 latency vs QPS" in html and "data:image/png;base64," in html
    console = Console(file=io.StringIO(), width=250)
    console.print(console_table(run))
    text = console.file.getvalue()
    assert "serving (MLPerf LoadGen)" in text and "INVALID: min duration not satisfied" in text
    csv = render_csv(run)
    assert "scenario" in csv.splitlines()[0] and ",server,INVALID,100.0," in csv


def test_each_latency_plot_panel_draws_only_its_own_server_bound(monkeypatch) -> None:
    from resbench.report import serving_plots

    figures = []
    monkeypatch.setattr(serving_plots, "encode_png", lambda fig: figures.append(fig) or "")
    fp32 = serving_row("eager", "server", 100, 10, probes=[(100, 10), (200, 30)])
    bf16 = serving_row("eager", "server", 100, 10, probes=[(100, 10)], dtype="bf16")
    bf16 = bf16.model_copy(update={"serving": bf16.serving.model_copy(update={"latency_bound_ms": 50.0})})

    assert serving_plots.latency_vs_qps([fp32, bf16]) is not None

    (figure,) = figures
    bounds = [sorted(line.get_ydata()[0] for line in axis.lines if line.get_linestyle() == "--")
              for axis in figure.axes]
    assert bounds == [[BOUND], [50.0]]
