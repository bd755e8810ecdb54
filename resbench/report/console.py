"""The terminal summary of a run: one rich table per (model, dtype), a row per backend x batch size with
the median and its 95% CI half-width (`30.2 ±0.4`), p99, images/s, speedup over eager, TFLOP/s, the
backend's own memory and the parity verdict; skipped and failed rows keep their place with the reason.
Rows whose timing is doubtful (measured under contention, through noise, throttled: doubts.py) are marked
in yellow with the cause, and their warnings are listed under the tables."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from resbench.doubts import doubts, tag
from resbench.dtypes import is_quantized
from resbench.report.serving import print_serving
from resbench.report.tables import row_label
from resbench.results import ResultRow, RunFile

MAX_WARNING_LINES = 12   # warnings listed under the tables; the run file keeps them all


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def fmt_median(row: ResultRow) -> str:
    """'30.2 ±0.4': the median and the half-width of its distribution-free 95% CI, in the median's digits."""
    lat = row.latency_ms
    if lat is None:
        return "-"
    low, high = lat.ci_median
    half = (high - low) / 2
    return f"{fmt_ms(lat.median)} ±{half:.3f}" if lat.median < 10 else f"{lat.median:.1f} ±{half:.1f}"


def fmt_tflops(row: ResultRow) -> str:
    if not row.tflops:
        return "-"
    text = f"{row.tflops:.3g}" if row.tflops < 100 else f"{row.tflops:.0f}"
    return text + (f" ({row.pct_peak:.0f}%)" if row.pct_peak is not None else "")


def fmt_memory(row: ResultRow) -> str:
    """The backend's own footprint when measured (`own`, comparable across runtimes); otherwise a
    process-wide figure, named: `proc` (NVML, whole process) or `RSS` (peak RSS, whole process)."""
    m = row.memory
    if m.backend_mb is not None:
        return f"{m.backend_mb:,.0f} MB own"
    if m.gpu_process_mb is not None:
        return f"{m.gpu_process_mb:,.0f} MB (proc)"
    if m.peak_allocated_mb is not None:
        return f"{m.peak_allocated_mb:,.0f} MB (alloc)"
    if m.process_mb is not None:
        return f"{m.process_mb:,.0f} MB (RSS)"
    return "-"


def fmt_parity(row: ResultRow) -> str:
    if row.parity is None:
        return "-"
    mark = "[green]pass[/]" if row.parity.passed else "[red]FAIL[/]"
    if is_quantized(row.dtype):  # judged on agreement with the reference (docs/parity.md)
        return f"{mark} top-1 {row.parity.top1_text} cos {row.parity.cosine:.4f}"
    ratio = f" x{row.parity.err_ratio:.2f}" if row.parity.err_ratio is not None else ""
    return f"{mark}{ratio} cos {row.parity.cosine:.4f}"


def speedups(rows: Iterable[ResultRow]) -> dict[int, float]:
    """id(row) -> eager median / row median, within the same model, dtype, batch and image size."""
    eager = {(r.model, r.dtype, r.batch_size, r.image_size): r.latency_ms.median
             for r in rows if r.backend == "eager" and not r.options and r.status == "ok" and r.latency_ms}
    out = {}
    for r in rows:
        base = eager.get((r.model, r.dtype, r.batch_size, r.image_size))
        if base and r.status == "ok" and r.latency_ms:
            out[id(r)] = base / r.latency_ms.median
    return out


def tables(run: RunFile) -> list[Table]:
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in run.rows:
        if row.scenario is None:  # serving rows: report/serving.py
            groups.setdefault((row.model, row.dtype), []).append(row)
    speedup = speedups(run.rows)
    out = []
    for (model, dtype), rows in groups.items():
        first = rows[0]
        threads = f" · {first.threads} threads" if first.threads else ""
        table = Table(title=f"{model} · {dtype} · {first.image_size}px · {first.memory_format} · "
                            f"{first.timing_mode} timing, L2 {first.l2} · {first.device}{threads}",
                      title_justify="left", header_style="bold")
        for name, justify in (("backend", "left"), ("batch", "right"), ("median ms ±CI", "right"),
                              ("p99 ms", "right"), ("images/s", "right"), ("vs eager", "right"),
                              ("TFLOP/s", "right"), ("memory", "right"), ("parity", "left"),
                              ("notes", "left")):
            table.add_column(name, justify=justify, overflow="fold")
        for r in sorted(rows, key=lambda r: (r.batch_size, rows.index(r))):
            if r.status != "ok" or r.latency_ms is None:
                status = {"skipped": "yellow", "failed": "red"}.get(r.status, "red")
                table.add_row(escape(r.backend_label), str(r.batch_size), "-", "-", "-", "-", "-", "-", "-",
                              f"[{status}]{r.status}[/]: {escape(r.reason or '')}")
                continue
            lat = r.latency_ms
            doubt = doubts(r)
            notes = f"n={lat.n}"
            if doubt:
                notes = f"[bold yellow]! {escape(', '.join(doubt))}[/], " + notes
            others = len(r.warnings) - sum(1 for w in r.warnings if tag(w) is not None)
            if others:
                notes += f", {others} note{'s' if others > 1 else ''}"
            if len(r.repeat_medians_ms) > 1:  # one median has no spread (a partial row: tagged in doubts)
                spread = (max(r.repeat_medians_ms) - min(r.repeat_medians_ms)) / min(r.repeat_medians_ms)
                notes += f", repeat spread {spread:.1%}"
            median = fmt_median(r)
            table.add_row(
                escape(r.backend_label), str(r.batch_size), f"[yellow]{median}[/]" if doubt else median,
                fmt_ms(lat.p99),
                f"{r.throughput_ips:,.1f}" if r.throughput_ips else "-",
                f"{speedup[id(r)]:.2f}x" if id(r) in speedup else "-",
                fmt_tflops(r),
                fmt_memory(r), fmt_parity(r), notes,
            )
        out.append(table)
    return out


def print_run(run: RunFile, console: Console | None = None) -> None:
    console = console or Console()
    env = run.env
    console.print(f"[bold]{run.suite.get('name', '?')}[/] on {env.get('device')} · torch {env.get('torch')} · "
                  f"resbench {env.get('resbench')} ({(env.get('git_sha') or '?')[:8]}"
                  f"{', dirty' if env.get('git_dirty') else ''})")
    for table in tables(run):
        console.print(table)
    print_serving(run, console)
    system = run.env.get("system") if isinstance(run.env.get("system"), dict) else {}
    start = system.get("at_start") if isinstance(system.get("at_start"), dict) else None
    if start and start.get("busy") and isinstance(start.get("other_cores"), int | float):
        console.print(f"[bold yellow]machine busy at start: other processes used {start['other_cores']:.1f} of "
                      f"{start.get('cores') or run.env.get('cpu_count', '?')} cores[/]", highlight=False)
    lines = [(r, w) for r in run.rows for w in r.warnings]
    if lines:
        noisy = sum(1 for r in run.rows if doubts(r))
        if noisy:
            console.print(f"[bold yellow]! {noisy} row(s) measured under contention, noise or throttling: "
                          "their medians may be off by more than their CIs say[/]", highlight=False)
        for row, warning in lines[:MAX_WARNING_LINES]:
            console.print(f"  {escape(row_label(row))}: {escape(warning)}", highlight=False)
        if len(lines) > MAX_WARNING_LINES:
            console.print(f"  ... {len(lines) - MAX_WARNING_LINES} more in `warnings` of the run file",
                          highlight=False)

