"""A run as compact Markdown, for PR comments and CI step summaries.

Also the words every report format shares: the timing contract and the parity contract of a run, stated
from the run file itself (`timing_contract`, `parity_contract`), and the one-line environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resbench.dtypes import is_quantized
from resbench.output_files import replace_file, resolve
from resbench.report.console import speedups
from resbench.report.serving import latency_rows
from resbench.report.serving import markdown_lines as serving_markdown
from resbench.report.tables import fmt, markdown_table, ok_status, row_label, status_reason
from resbench.results import ResultRow, RunFile

MODE_WORDS = {
    "device": "device time per call ({clock}); the input is already on the device and the output stays there",
    "graph": ("CUDA-graph replay time per call: a block of calls captured in one graph and replayed, "
              "divided by the calls per replay (launch-free, what a CUDA-graph deployment sees)"),
    "e2e": ("end-to-end host wall clock per call: the host-to-device copy of a pinned batch, the call, the "
            "device-to-host copy of the logits and a synchronize (what a Python caller sees)"),
}
CLOCKS = {"cuda": "CUDA events around each call", "cpu": "time.perf_counter around each call; CPU calls are "
                                                         "synchronous"}


def mode_words(mode: str, devices: set[str]) -> str:
    clock = "; ".join(CLOCKS.get(d, d) for d in sorted(devices)) or CLOCKS["cuda"]
    return MODE_WORDS.get(mode, mode).format(clock=clock)


def effective_timing(run: RunFile) -> dict[str, Any]:
    """The suite's timing settings as the run applied them (the `cpu:` overrides on a CPU run)."""
    from resbench.suite import Suite

    device = run.env.get("device_type") or (run.rows[0].device if run.rows else "cuda")
    try:
        suite = Suite.model_validate(run.suite)
    except Exception:  # an older or hand-edited suite block: report what it says
        timing = run.suite.get("timing", {})
        return dict(timing) if isinstance(timing, dict) else {}
    return suite.for_device(device).timing.model_dump()


def timing_contract(run: RunFile) -> str:
    """The timing contract of this run, in words."""
    timing = effective_timing(run)
    modes = sorted({row.timing_mode for row in run.rows}) or [timing.get("mode", "device")]
    l2 = sorted({row.l2 for row in run.rows}) or [timing.get("l2", "warm")]
    devices = {row.device for row in run.rows}
    parts = ["; ".join(f"`{mode}` = {mode_words(mode, devices)}" for mode in modes) + "."]
    parts.append("L2 " + " / ".join(l2) + (" (flushed between calls; the flush is not timed)."
                                            if "cold" in l2 else " (not flushed between calls)."))
    if timing:
        parts.append(
            f"Warm-up {timing.get('warmup_s', '?')} s; then at least {timing.get('min_iters', '?')} "
            f"calls and {timing.get('min_time_s', '?')} s of measured time, stopping once the median's "
            f"95% CI half-width is within {_percent(timing.get('target_rel_ci'))} or after "
            f"{timing.get('max_time_s', '?')} s (the row then carries a noise warning). Backends of one "
            f"(model, dtype, batch) are measured in {timing.get('rounds', '?')} interleaved rounds.")
    parts.append("Median with a distribution-free 95% CI; percentiles are nearest-rank; "
                 "throughput = batch / median latency; TFLOP/s from the model's analytic FLOPs.")
    return " ".join(parts)


def parity_contract(run: RunFile) -> str:
    parity = run.suite.get("parity", {}) if isinstance(run.suite.get("parity"), dict) else {}
    return (f"Parity: every row's logits on a fixed, seeded batch of {parity.get('samples', '?')} "
            f"images (seed {parity.get('seed', '?')}) against a {parity.get('reference', 'fp64')} "
            f"reference of the same model; a row passes when its rel-L2 error is at most 2x (fp32) or 3x "
            f"(fp16, bf16, tf32) eager's in the same dtype, or under the dtype's floor.")


def environment_line(run: RunFile) -> str:
    env = run.env
    sha = (env.get("git_sha") or "?")[:8] + (" (dirty)" if env.get("git_dirty") else "")
    parts = [str(env.get("device", "?"))]
    if env.get("driver"):
        parts.append(f"driver {env['driver']}")
    parts += [f"torch {env.get('torch', '?')}"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    if packages.get("triton"):
        parts.append(f"triton {packages['triton']}")
    parts += [f"Python {env.get('python', '?')}", f"resbench {env.get('resbench', '?')} @ {sha}",
              str(env.get("created", ""))]
    return " · ".join(p for p in parts if p)


def _percent(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else "?"


def memory_cell(row: ResultRow) -> str:
    """The row's memory figures, each named (allocator peak is per backend; process figures are not)."""
    m = row.memory
    cells = []
    if m.backend_mb is not None:
        cells.append(f"{m.backend_mb:,.0f} MB own")
    if m.peak_allocated_mb is not None and m.peak_allocated_mb != m.backend_mb:
        cells.append(f"{m.peak_allocated_mb:,.0f} MB alloc")
    if m.gpu_process_mb is not None:
        cells.append(f"{m.gpu_process_mb:,.0f} MB proc")
    if m.process_mb is not None:
        cells.append(f"{m.process_mb:,.0f} MB RSS")
    return " / ".join(cells) if cells else "—"


def parity_cell(row: ResultRow) -> str:
    if row.parity is None:
        return "—"
    if is_quantized(row.dtype):  # judged on agreement with the reference (docs/parity.md)
        return (f"{'pass' if row.parity.passed else 'FAIL'} top-1 {row.parity.top1_text} "
                f"(cos {row.parity.cosine:.4f})")
    ratio = f" ×{row.parity.err_ratio:.2f}" if row.parity.err_ratio is not None else ""
    return f"{'pass' if row.parity.passed else 'FAIL'}{ratio} (cos {row.parity.cosine:.4f})"


def varying_identity(rows: list[ResultRow]) -> list[str]:
    """Identity fields beyond model/backend/batch/dtype that differ between rows (shown as columns)."""
    return [name for name in ("image_size", "memory_format", "timing_mode", "l2")
            if len({getattr(row, name) for row in rows}) > 1]


SUMMARY_HEADERS = ["model", "backend", "batch", "dtype", "status", "median ms", "p99 ms", "n", "img/s",
                   "vs eager", "TFLOP/s", "memory", "parity"]


def summary_rows(run: RunFile) -> tuple[list[str], list[list[str]]]:
    """The run's one-row-per-case summary (headers, cells), shared by the Markdown and HTML reports."""
    rows = latency_rows(run.rows)  # serving rows have their own table (report/serving.py)
    extra = varying_identity(rows)
    speedup = speedups(rows)
    headers = SUMMARY_HEADERS[:4] + extra + SUMMARY_HEADERS[4:]
    body = []
    for row in rows:
        identity = [row.model, row.backend_label, str(row.batch_size), row.dtype]
        identity += [str(getattr(row, name)) for name in extra]
        if row.status != "ok" or row.latency_ms is None:
            body.append(identity + [status_reason(row)] + ["—"] * (len(SUMMARY_HEADERS) - 5))
            continue
        latency = row.latency_ms
        tflops = fmt(row.tflops, ".2f") + (f" ({row.pct_peak:.0f}%)" if row.pct_peak is not None else "")
        body.append(identity + [
            ok_status(row), fmt(latency.median, ".3f"), fmt(latency.p99, ".3f"), str(latency.n),
            fmt(row.throughput_ips, ",.1f"),
            fmt(speedup.get(id(row)), ".2f", "×"), tflops, memory_cell(row), parity_cell(row),
        ])
    return headers, body


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(run: RunFile) -> str:
    """The whole run as Markdown: title, environment, contract, one table, warnings."""
    name = run.suite.get("name", "?")
    headers, body = summary_rows(run)
    numeric = {"batch", "median ms", "p99 ms", "n", "img/s", "vs eager", "TFLOP/s"}
    lines = [f"### resbench run: {name}", "", environment_line(run), "",
             f"<sub>{timing_contract(run)}</sub>", "",
             *markdown_table(headers, ([_escape(cell) for cell in cells] for cells in body), numeric)]
    lines += serving_markdown(run)
    warned = [row for row in run.rows if row.warnings]
    if warned:
        lines += ["", "<details><summary>Warnings</summary>", ""]
        for row in warned:
            lines += [f"- {row_label(row)}: {_escape(w)}" for w in row.warnings]
        lines += ["", "</details>"]
    lines.append("")
    return "\n".join(lines)


def write_markdown(run: RunFile, path: str | Path) -> None:
    replace_file(resolve(path), render_markdown(run))
