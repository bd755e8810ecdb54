"""A run as CSV: one row per case, flattened statistics, every number in a named unit.

Named csv_export (not csv) so that nothing inside the package can shadow the standard library's csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from resbench.output_files import replace_file, resolve
from resbench.report.console import speedups
from resbench.results import ResultRow, RunFile

COLUMNS: tuple[str, ...] = (
    "model", "backend", "backend_label", "options", "batch_size", "dtype", "image_size", "memory_format",
    "timing_mode", "l2", "device", "status", "reason",
    "n", "median_ms", "mean_ms", "stdev_ms", "min_ms", "max_ms", "p90_ms", "p95_ms", "p99_ms",
    "ci_median_low_ms", "ci_median_high_ms", "cv",
    "throughput_ips", "speedup_vs_eager", "gflops_per_image", "tflops", "pct_peak", "params",
    "prepare_s", "first_call_s", "threads", "other_cores", "contended",
    "backend_mb", "prepare_mb", "calls_mb", "peak_allocated_mb", "peak_reserved_mb", "process_mb", "gpu_process_mb",
    "parity_passed", "rel_l2", "max_abs", "cosine", "sqnr_db", "top1_agree", "top5_overlap", "err_ratio",
    "parity_rule", "warnings",
)


def csv_record(row: ResultRow, speedup: float | None) -> dict[str, Any]:
    latency, parity, memory = row.latency_ms, row.parity, row.memory
    record: dict[str, Any] = {
        "model": row.model, "backend": row.backend, "backend_label": row.backend_label,
        "options": json.dumps(row.options, sort_keys=True) if row.options else "",
        "batch_size": row.batch_size, "dtype": row.dtype, "image_size": row.image_size,
        "memory_format": row.memory_format, "timing_mode": row.timing_mode, "l2": row.l2,
        "device": row.device,
        "status": row.status, "reason": row.reason or "",
        "throughput_ips": row.throughput_ips, "speedup_vs_eager": speedup, "gflops_per_image": row.gflops,
        "tflops": row.tflops, "pct_peak": row.pct_peak, "params": row.params,
        "prepare_s": row.prepare_s, "first_call_s": row.first_call_s, "threads": row.threads,
        "other_cores": row.system.get("other_cores"), "contended": row.system.get("contended"),
        "backend_mb": memory.backend_mb, "prepare_mb": memory.prepare_mb, "calls_mb": memory.calls_mb,
        "peak_allocated_mb": memory.peak_allocated_mb, "peak_reserved_mb": memory.peak_reserved_mb,
        "process_mb": memory.process_mb, "gpu_process_mb": memory.gpu_process_mb,
        "warnings": " | ".join(row.warnings),
    }
    if latency is not None:
        record.update({
            "n": latency.n, "median_ms": latency.median, "mean_ms": latency.mean, "stdev_ms": latency.stdev,
            "min_ms": latency.min, "max_ms": latency.max, "p90_ms": latency.p90, "p95_ms": latency.p95,
            "p99_ms": latency.p99, "ci_median_low_ms": latency.ci_median[0],
            "ci_median_high_ms": latency.ci_median[1], "cv": latency.cv,
        })
    if parity is not None:
        record.update({
            "parity_passed": parity.passed, "rel_l2": parity.rel_l2, "max_abs": parity.max_abs,
            "cosine": parity.cosine, "sqnr_db": parity.sqnr_db, "top1_agree": parity.top1_agree,
            "top5_overlap": parity.top5_overlap, "err_ratio": parity.err_ratio, "parity_rule": parity.rule,
        })
    return {column: ("" if record.get(column) is None else record[column]) for column in COLUMNS}


def render_csv(run: RunFile) -> str:
    speedup = speedups(run.rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in run.rows:
        writer.writerow(csv_record(row, speedup.get(id(row))))
    return buffer.getvalue()


def write_csv(run: RunFile, path: str | Path) -> None:
    replace_file(resolve(path), render_csv(run))
