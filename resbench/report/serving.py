"""The serving table: one row per (model, runtime, dtype, scenario) that LoadGen measured, for the
terminal, Markdown and HTML reports. Every figure is the one LoadGen wrote in its summary (docs/serving.md).

Latency tables elsewhere show latency rows only (`latency_rows`); serving rows are shown here. A row whose
LoadGen runs were measured under contention or on a throttled GPU (doubts.py) has its status marked as the
latency tables mark theirs (`ok (1 warning) ! busy`, yellow in the terminal)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from resbench.doubts import doubts
from resbench.report.tables import html_table, markdown_table, ok_status, status_reason
from resbench.results import ResultRow, RunFile

HEADERS = ["model", "runtime", "dtype", "scenario", "status", "QPS", "p90 ms", "p99 ms", "Server bound", "batch",
           "LoadGen", "top-1", "logs"]
NUMERIC = {"QPS", "p90 ms", "p99 ms"}
ABOUT = ("Serving rows come from MLPerf LoadGen driving each runtime as the system under test: QPS is "
         "LoadGen's samples per second (single-stream: without LoadGen overhead; server: completed; offline: "
         "the whole query), latencies are per sample from issue to completion. A Server row's bound is the "
         "p99 limit; with find_peak its QPS is the highest target that held it. LoadGen's own verdict is "
         "quoted: quick-mode runs are short by design and mostly INVALID.")


def serving_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """The serving rows that ran or tried to (skipped runtimes: `skipped_line`)."""
    return [row for row in rows if row.scenario is not None and row.status != "skipped"]


def skipped_line(rows: Sequence[ResultRow]) -> str:
    """'Not served here: tensorrt, triton[cuda_graphs=True] (skipped; their reasons are in the latency rows)'."""
    skipped = dict.fromkeys(f"{row.backend_label} {row.dtype}" for row in rows
                            if row.scenario is not None and row.status == "skipped")
    return (f"Not served here: {', '.join(skipped)} (skipped, for the reason their latency rows give)."
            if skipped else "")


def latency_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    return [row for row in rows if row.scenario is None]


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _latency(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def bound_text(row: ResultRow) -> str:
    serving = row.serving
    if serving is None or serving.scenario != "server":
        return "—"
    verdict = "held" if serving.bound_held else "MISSED"
    where = f" at {serving.target_qps:,.4g} QPS" if serving.target_qps is not None else ""
    if serving.peak is not None and serving.peak.peak_qps is None:
        where += " (no QPS held it)"
    elif serving.peak is not None:
        where += " (peak)" if serving.bound_held else " (the peak's probe held it; this full run did not)"
    return f"p99 ≤ {serving.latency_bound_ms:g} ms {verdict}{where}"


def verdict_text(row: ResultRow) -> str:
    serving = row.serving
    if serving is None:
        return "—"
    if not serving.unmet:
        return serving.result
    conditions = ", ".join(line.split(" satisfied")[0].lower() for line in serving.unmet)
    return f"{serving.result}: {conditions} not satisfied"


def status_cell(row: ResultRow) -> str:
    """'ok', 'ok (2 warnings)', plus the timing doubts when there are any: 'ok (1 warning) ! busy'."""
    tags = doubts(row)
    return ok_status(row) + (f" ! {', '.join(tags)}" if tags else "")


def cells(row: ResultRow) -> list[str]:
    identity = [row.model, row.backend_label, row.dtype, row.scenario or "—"]
    serving = row.serving
    if row.status != "ok" or serving is None:
        return identity + [status_reason(row)] + ["—"] * (len(HEADERS) - 5)
    batching = serving.batching
    accuracy = serving.accuracy
    top1 = "—" if accuracy is None else f"{accuracy.samples - len(accuracy.mismatched)}/{accuracy.samples}"
    return identity + [
        status_cell(row), _number(serving.samples_per_s, ",.1f"), _latency(serving.latency_ms.p90),
        _latency(serving.latency_ms.p99), bound_text(row),
        f"{batching.batch_size} (fill {batching.mean_fill:.0%})", verdict_text(row), top1, serving.log_dir,
    ]


def csv_fields(row: ResultRow) -> dict[str, object]:
    """The serving columns of the CSV export (empty on latency rows)."""
    serving = row.serving
    if serving is None:
        return {"scenario": row.scenario}
    return {"scenario": row.scenario, "loadgen_result": serving.result, "loadgen_samples_per_s": serving.samples_per_s,
            "loadgen_p90_ms": serving.latency_ms.p90, "loadgen_p99_ms": serving.latency_ms.p99,
            "server_target_qps": serving.target_qps, "server_bound_held": serving.bound_held,
            "loadgen_summary": serving.summary_file}


def mode_line(rows: Sequence[ResultRow]) -> str:
    modes = sorted({"compliant (MLPerf ResNet-50 rules)" if row.serving.compliant else "quick"
                    for row in rows if row.serving is not None})
    return "mode: " + (", ".join(modes) if modes else "—")


# ---------------------------------------------------------------------------------------------- formats


def console_table(run: RunFile):
    """A rich Table of the serving rows, or None when the run has none."""
    from rich.markup import escape
    from rich.table import Table

    rows = serving_rows(run.rows)
    if not rows:
        return None
    folders = sorted({row.serving.log_dir.split("/")[0] for row in rows if row.serving is not None})
    caption = " ".join(filter(None, (ABOUT, skipped_line(run.rows), f"LoadGen's logs: {', '.join(folders)}/ "
                                     "beside the run file." if folders else "")))
    table = Table(title=f"serving (MLPerf LoadGen) · {mode_line(rows)}", title_justify="left",
                  header_style="bold", caption=escape(caption), caption_justify="left")  # labels: eager[a=b]
    for header in HEADERS[:-1]:  # the log folder is in the caption: a path column is too wide for a terminal
        table.add_column(header, justify="right" if header in NUMERIC else "left", overflow="fold")
    for row in rows:
        values = [escape(cell) for cell in cells(row)[:-1]]
        if row.status != "ok":
            values[4] = f"[red]{values[4]}[/]"
        else:
            if doubts(row):
                values[4] = f"[bold yellow]{values[4]}[/]"
            if row.serving is not None and row.serving.bound_held is False:
                values[8] = f"[red]{values[8]}[/]"
        table.add_row(*values)
    return table


def print_serving(run: RunFile, console) -> None:
    table = console_table(run)
    if table is not None:
        console.print(table)
    elif skipped_line(run.rows):
        console.print(f"serving (MLPerf LoadGen): {skipped_line(run.rows)}", markup=False, highlight=False)


def markdown_lines(run: RunFile) -> list[str]:
    """The serving section of the Markdown report (empty when the run has no serving rows)."""
    rows = serving_rows(run.rows)
    skipped = skipped_line(run.rows)
    if not rows:
        return ["", "#### Serving (MLPerf LoadGen)", "", skipped] if skipped else []
    lines = ["", f"#### Serving (MLPerf LoadGen, {mode_line(rows)})", "", f"<sub>{ABOUT}</sub>", "",
             *markdown_table(HEADERS, ([cell.replace("|", "\\|") for cell in cells(row)] for row in rows), NUMERIC)]
    return lines + (["", skipped] if skipped else [])


def html_section(run: RunFile) -> str:
    """The serving section of the HTML report: the table and the latency-vs-QPS plot ('' without rows)."""
    from resbench.report.serving_plots import latency_vs_qps

    rows = serving_rows(run.rows)
    skipped = skipped_line(run.rows)
    if not rows:
        return f'<h2 id="serving">Serving (MLPerf LoadGen)</h2>\n<p>{html.escape(skipped)}</p>' if skipped else ""
    table = html_table(HEADERS, [cells(row) for row in rows], NUMERIC,
                       ["" if row.status == "ok" else "bad" for row in rows])
    plot = latency_vs_qps(rows)
    figure = "" if plot is None else (
        f'<figure><img alt="{html.escape(plot.title)}" src="data:image/png;base64,{plot.png_base64}">'
        f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")
    return (f'<h2 id="serving">Serving (MLPerf LoadGen, {html.escape(mode_line(rows))})</h2>\n'
            f'<p class="contract">{html.escape(ABOUT)}</p>\n{table}\n<p>{html.escape(skipped)}</p>\n{figure}')
