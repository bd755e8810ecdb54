"""A run as pytest-benchmark JSON, so pytest-benchmark's own `compare` (and github-action-benchmark's
`tool: pytest`) read resbench results.

One benchmark per case that ran (`status: ok` with raw samples); skipped and failed cases are left out,
as pytest-benchmark leaves out benchmarks that errored. Times are in seconds, as pytest-benchmark stores
them; its statistics (quartiles by its own method, Tukey and stddev outlier counts, ops) are recomputed
from the raw samples with its definitions, and the raw samples go into `data`. Each benchmark is one
sample per call (`iterations: 1`). Cases are grouped by (model, batch, dtype) so that `compare` puts the
backends of one configuration side by side."""

from __future__ import annotations

import bisect
import json
import math
import statistics
from pathlib import Path
from typing import Any

from resbench.output_files import replace_file, resolve
from resbench.results import ResultRow, RunFile

FORMAT_VERSION = "5.2.3"   # the pytest-benchmark release whose JSON layout this follows


def benchmark_stats(samples_s: list[float]) -> dict[str, Any]:
    """pytest_benchmark.stats.Stats.as_dict() for these samples (seconds), with the same definitions."""
    data = sorted(samples_s)
    rounds = len(data)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if rounds > 1 else 0.0
    q1, q3 = _quartiles(data)
    iqr = q3 - q1
    if rounds == 1:
        ld15iqr = hd15iqr = data[0]
    else:
        ld15iqr = data[bisect.bisect_left(data, q1 - 1.5 * iqr)]
        # the highest datum at or below the upper fence (pytest-benchmark >= 5.3.1; 5.2 returned the first
        # datum above it)
        hd15iqr = data[bisect.bisect_right(data, q3 + 1.5 * iqr) - 1]
    stddev_outliers = sum(1 for x in data if x < mean - stddev or x > mean + stddev)
    iqr_outliers = sum(1 for x in data if x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr)
    total = sum(data)
    return {
        "min": data[0], "max": data[-1], "mean": mean, "stddev": stddev, "rounds": rounds,
        "median": statistics.median(data), "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_outliers,
        "stddev_outliers": stddev_outliers, "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": ld15iqr, "hd15iqr": hd15iqr, "ops": rounds / total if total else 0, "total": total,
    }


def _quartiles(data: list[float]) -> tuple[float, float]:
    """pytest-benchmark's quartiles (Wikipedia methods 3 for odd, 2 for even counts); `data` is sorted."""
    rounds = len(data)
    if rounds == 1:
        return data[0], data[0]
    if rounds % 2:
        n, q = rounds // 4, rounds % 4
        if q == 1:
            return 0.25 * data[n - 1] + 0.75 * data[n], 0.75 * data[3 * n] + 0.25 * data[3 * n + 1]
        return 0.75 * data[n] + 0.25 * data[n + 1], 0.25 * data[3 * n + 1] + 0.75 * data[3 * n + 2]
    return statistics.median(data[: rounds // 2]), statistics.median(data[rounds // 2:])


def _param(row: ResultRow) -> str:
    return (f"{row.backend_label}-b{row.batch_size}-{row.dtype}-{row.image_size}px-{row.memory_format}-"
            f"{row.timing_mode}")


def _timer(row: ResultRow) -> str:
    if row.timing_mode == "e2e":
        return "time.perf_counter (end-to-end, host wall clock)"
    if row.device == "cuda":
        return "torch.cuda.Event" + (" (CUDA-graph replay)" if row.timing_mode == "graph" else "")
    return "time.perf_counter"


def benchmark_record(row: ResultRow, suite_name: str, timing: dict[str, Any]) -> dict[str, Any]:
    param = _param(row)
    stats = benchmark_stats([s / 1000.0 for s in row.samples_ms])
    stats["data"] = [s / 1000.0 for s in row.samples_ms]
    stats["iterations"] = 1
    latency = row.latency_ms
    extra: dict[str, Any] = {
        "unit_note": "stats in seconds per call; one sample per call",
        "timing_mode": row.timing_mode, "l2": row.l2, "device": row.device,
        "throughput_ips": row.throughput_ips, "tflops": row.tflops, "pct_peak": row.pct_peak,
        "prepare_s": row.prepare_s, "first_call_s": row.first_call_s,
        "memory": row.memory.model_dump(exclude_none=True),
        "warnings": list(row.warnings),
    }
    if latency is not None:
        extra.update({f"{q}_s": getattr(latency, q) / 1000.0 for q in ("p90", "p95", "p99")})
    if row.parity is not None:
        extra["parity"] = {"passed": row.parity.passed, "rel_l2": row.parity.rel_l2,
                           "cosine": row.parity.cosine, "err_ratio": row.parity.err_ratio}
    return {
        "group": f"{row.model} b{row.batch_size} {row.dtype}",
        "name": f"{row.model}[{param}]",
        "fullname": f"resbench/{suite_name}::{row.model}[{param}]",
        "params": {"backend": row.backend_label, "batch_size": row.batch_size, "dtype": row.dtype,
                   "image_size": row.image_size, "memory_format": row.memory_format,
                   "timing_mode": row.timing_mode},
        "param": param,
        "extra_info": extra,
        "options": {"disable_gc": False, "timer": _timer(row), "min_rounds": timing.get("min_iters"),
                    "max_time": timing.get("max_time_s"), "min_time": timing.get("min_time_s"),
                    "warmup": True},
        "stats": stats,
    }


def to_pytest_benchmark(run: RunFile) -> dict[str, Any]:
    """The pytest-benchmark JSON document for a run."""
    from resbench.report.markdown import effective_timing

    env = run.env
    suite_name = str(run.suite.get("name", "resbench"))
    timing = effective_timing(run)
    machine_info = {
        "node": env.get("host", ""),
        "processor": env.get("cpu", ""),
        "machine": env.get("device", ""),
        "python_implementation": "CPython",
        "python_version": env.get("python", ""),
        "system": env.get("os", ""),
        "release": env.get("os", ""),
        "cpu": {"brand_raw": env.get("cpu", ""), "count": env.get("cpu_count")},
        "resbench_env": env,
    }
    commit_info = {
        "id": env.get("git_sha") or "unknown",
        "time": env.get("created"),
        "author_time": env.get("created"),
        "dirty": bool(env.get("git_dirty")),
        "project": "resbench",
        "branch": env.get("git_branch"),
    }
    benchmarks = [benchmark_record(row, suite_name, timing) for row in run.rows
                  if row.status == "ok" and row.samples_ms]
    return {"machine_info": machine_info, "commit_info": commit_info, "benchmarks": benchmarks,
            "datetime": env.get("created") or "", "version": FORMAT_VERSION}


def _finite(value: Any) -> Any:
    """NaN and Inf become null: strict JSON readers (github-action-benchmark's JSON.parse) reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_pytest_benchmark(run: RunFile, path: str | Path) -> None:
    document = _finite(to_pytest_benchmark(run))
    replace_file(resolve(path), json.dumps(document, indent=2, allow_nan=False, default=str))
