"""A run as one self-contained HTML file: inline CSS, plots embedded as base64 PNGs, no scripts and no
external resources, so it opens offline and can be attached to a CI run or committed under reports/.

Sections: environment, timing and parity contracts in words, the summary table, the plots (latency vs
batch, throughput vs depth, speedup over eager, latency distributions, peak memory), the parity table,
and every warning, skipped or failed case with its reason."""

from __future__ import annotations

import html
import json
from pathlib import Path

from resbench.output_files import replace_file, resolve
from resbench.report.markdown import environment_line, parity_contract, summary_rows, timing_contract
from resbench.report.plots import all_plots
from resbench.report.serving import html_section as serving_section
from resbench.report.tables import html_table, row_label
from resbench.results import RunFile

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fff0f0; } tr.skip td { color: #777; }
.contract { background: #f8f8f8; padding: 0.6em 1em; border-left: 3px solid #888; font-size: 0.9em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
nav a { margin-right: 1em; }
"""

_NUMERIC = {"batch", "median ms", "p99 ms", "n", "img/s", "vs eager", "TFLOP/s", "rel-L2", "max-abs",
            "cosine", "SQNR dB", "top-1", "top-5", "err ratio"}


def _parity_table(run: RunFile) -> str:
    headers = ["model", "backend", "batch", "dtype", "verdict", "rel-L2", "max-abs", "cosine", "SQNR dB",
               "top-1", "top-5", "err ratio", "rule"]
    body, classes = [], []
    for row in run.rows:
        if row.parity is None:
            continue
        p = row.parity
        body.append([row.model, row.backend_label, str(row.batch_size), row.dtype,
                     "pass" if p.passed else "FAIL", f"{p.rel_l2:.3e}", f"{p.max_abs:.3e}", f"{p.cosine:.6f}",
                     f"{p.sqnr_db:.1f}", f"{p.top1_agree:.1%}", f"{p.top5_overlap:.1%}",
                     "—" if p.err_ratio is None else f"{p.err_ratio:.2f}", p.rule])
        classes.append("" if p.passed else "bad")
    if not body:
        return "<p>No row has parity metrics.</p>"
    reference = next(row.parity.reference for row in run.rows if row.parity is not None)
    return f"<p>Reference: {html.escape(reference)}.</p>\n" + html_table(headers, body, _NUMERIC, classes)


def _environment_table(run: RunFile) -> str:
    body = [[key, json.dumps(value) if isinstance(value, dict | list) else str(value)]
            for key, value in run.env.items()]
    return html_table(["key", "value"], body)


def _problems(run: RunFile) -> str:
    items = []
    for row in run.rows:
        label = row_label(row)
        if row.status != "ok":
            items.append(f"<li><b>{html.escape(label)}</b>: {html.escape(row.status)} — "
                         f"{html.escape(row.reason or 'no reason recorded')}</li>")
        items += [f"<li>{html.escape(label)}: {html.escape(w)}</li>" for w in row.warnings]
    return "<ul>\n" + "\n".join(items) + "\n</ul>" if items else "<p>None.</p>"


def render_html(run: RunFile) -> str:
    name = str(run.suite.get("name", "?"))
    headers, body = summary_rows(run)
    status_index = headers.index("status")
    classes = ["" if cells[status_index].startswith("ok") else
               ("skip" if cells[status_index].startswith("skipped") else "bad") for cells in body]
    plots = all_plots(run.rows)
    serving = serving_section(run)  # once: it renders the serving plot
    figures = "\n".join(
        f'<h2 id="{plot.key}">{html.escape(plot.title)}</h2>\n<figure><img alt="{html.escape(plot.title)}" '
        f'src="data:image/png;base64,{plot.png_base64}">\n<figcaption>{html.escape(plot.caption)}</figcaption>'
        f"</figure>" for plot in plots)
    if not plots:
        figures = "<h2>Plots</h2>\n<p>No case finished, so there is nothing to plot.</p>"
    nav = " ".join(f'<a href="#{key}">{label}</a>' for key, label in
                   [("summary", "Summary"), *((p.key, p.title) for p in plots),
                    *([("serving", "Serving")] if serving else []), ("parity", "Parity"),
                    ("environment", "Environment"), ("problems", "Warnings and failures")])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>resbench: {html.escape(name)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>resbench run: {html.escape(name)}</h1>
<p>{html.escape(environment_line(run))}</p>
<nav>{nav}</nav>
<h2>Timing contract</h2>
<p class="contract">{html.escape(timing_contract(run))}</p>
<p class="contract">{html.escape(parity_contract(run))}</p>
<h2 id="summary">Summary</h2>
{html_table(headers, body, _NUMERIC, classes)}
{figures}
{serving}
<h2 id="parity">Parity</h2>
{_parity_table(run)}
<h2 id="environment">Environment</h2>
{_environment_table(run)}
<h2 id="problems">Warnings and failures</h2>
{_problems(run)}
</body>
</html>
"""


def write_html(run: RunFile, path: str | Path) -> None:
    replace_file(resolve(path), render_html(run))
