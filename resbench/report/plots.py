"""The HTML report's plots: matplotlib on the Agg canvas (no pyplot, no display, no global state), each
returned as a base64 PNG so the report is one self-contained file that opens offline.

Every function takes the run's rows and returns a `Plot`, or None when the run has nothing to draw
(e.g. throughput vs depth needs models with a known depth)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from resbench.report.console import speedups
from resbench.results import ResultRow

MAX_ROWS = 80          # per-row plots (distributions, memory) show at most this many rows
DPI = 96
_DEPTH = re.compile(r"res(?:net|next)[_-]?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Plot:
    key: str            # anchor id in the HTML
    title: str
    caption: str        # what the plot shows and how it was measured
    png_base64: str


# Legends right of the axes: with up to ten backends an inside legend hides data points.
LEGEND_OUTSIDE = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "frameon": False}


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ok(rows: Sequence[ResultRow]) -> list[ResultRow]:
    return [row for row in rows if row.status == "ok" and row.latency_ms is not None]


def _grid(count: int, width: float = 4.6, height: float = 3.4, columns: int = 3) -> tuple[Figure, list]:
    columns = min(columns, count)
    lines = -(-count // columns)
    fig = Figure(figsize=(width * columns, height * lines))
    axes = [fig.add_subplot(lines, columns, i + 1) for i in range(count)]
    return fig, axes


_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
_PLAIN_2_5 = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")


def _plain_log(axis) -> None:
    """Log-scale ticks as plain numbers (1, 2, 5, 10, 20, 50) instead of 10^0, 2x10^0, ..."""
    axis.set_major_formatter(_PLAIN)
    axis.set_minor_formatter(_PLAIN_2_5)


def _label(row: ResultRow) -> str:
    return f"{row.model} {row.backend_label} b{row.batch_size} {row.dtype}"


def model_depth(model: str) -> int | None:
    """18 for resnet18, 50 for wide_resnet50_2 or torchvision:resnext50_32x4d; None when not a ResNet name."""
    match = _DEPTH.search(model)
    return int(match.group(1)) if match else None


def latency_vs_batch(rows: Sequence[ResultRow]) -> Plot | None:
    ok = _ok(rows)
    if not ok:
        return None
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in ok:
        groups.setdefault((row.model, row.dtype), []).append(row)
    fig, axes = _grid(len(groups))
    for ax, ((model, dtype), members) in zip(axes, groups.items(), strict=True):
        by_backend: dict[str, list[ResultRow]] = {}
        for row in members:
            by_backend.setdefault(row.backend_label, []).append(row)
        for backend, series in by_backend.items():
            series.sort(key=lambda r: r.batch_size)
            x = [r.batch_size for r in series]
            y = [r.latency_ms.median for r in series]  # type: ignore[union-attr]
            low = [r.latency_ms.median - r.latency_ms.ci_median[0] for r in series]  # type: ignore[union-attr]
            high = [r.latency_ms.ci_median[1] - r.latency_ms.median for r in series]  # type: ignore[union-attr]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=backend)
        batches = sorted({r.batch_size for r in members})
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_title(f"{model} · {dtype}", fontsize=10)
        ax.set_xlabel("batch size")
        ax.set_ylabel("median latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(**LEGEND_OUTSIDE)
    return Plot("latency-vs-batch", "Latency vs batch size",
                "Median latency per call against batch size, one line per backend; error bars are the "
                "median's 95% CI.", _png(fig))


def throughput_vs_depth(rows: Sequence[ResultRow]) -> Plot | None:
    ok = [row for row in _ok(rows) if model_depth(row.model) is not None and row.throughput_ips]
    if not ok:
        return None
    by_dtype: dict[str, list[ResultRow]] = {}
    for row in ok:
        by_dtype.setdefault(row.dtype, []).append(row)
    fig, axes = _grid(len(by_dtype))
    for ax, (dtype, members) in zip(axes, by_dtype.items(), strict=True):
        batch = max(r.batch_size for r in members)
        chosen = [r for r in members if r.batch_size == batch]
        by_backend: dict[str, list[ResultRow]] = {}
        for row in chosen:
            by_backend.setdefault(row.backend_label, []).append(row)
        for backend, series in by_backend.items():
            series.sort(key=lambda r: model_depth(r.model) or 0)
            ax.plot([model_depth(r.model) for r in series], [r.throughput_ips for r in series],
                    marker="o", label=backend)
        ax.set_title(f"{dtype} · batch {batch}", fontsize=10)
        ax.set_xlabel("ResNet depth (layers)")
        ax.set_ylabel("throughput (images/s)")
        ax.grid(True, alpha=0.3)
        ax.legend(**LEGEND_OUTSIDE)
    return Plot("throughput-vs-depth", "Throughput vs depth",
                "Images per second (batch / median latency) against the model's depth, at the largest batch "
                "size measured for each dtype, one line per backend.", _png(fig))


def speedup_over_eager(rows: Sequence[ResultRow]) -> Plot | None:
    ok = _ok(rows)
    factor = speedups(ok)
    bars = [(row, factor[id(row)]) for row in ok if id(row) in factor and not (row.backend == "eager"
                                                                                and not row.options)]
    if not bars:
        return None
    bars = bars[:MAX_ROWS]
    fig = Figure(figsize=(9, max(2.0, 0.28 * len(bars) + 1)))
    ax = fig.add_subplot(1, 1, 1)
    labels = [_label(row) for row, _ in bars]
    values = [value for _, value in bars]
    colors = ["tab:green" if value >= 1 else "tab:red" for value in values]
    positions = list(range(len(bars)))
    ax.barh(positions, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over eager (eager median / median)")
    ax.margins(x=0.1)
    for position, value in zip(positions, values, strict=True):
        ax.text(value, position, f" {value:.2f}×", va="center", fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    return Plot("speedup", "Speedup over eager",
                "Eager's median latency divided by each backend's, for the same model, dtype, batch and "
                "image size; above 1 is faster than eager.", _png(fig))


def latency_distribution(rows: Sequence[ResultRow]) -> Plot | None:
    ok = _ok(rows)[:MAX_ROWS]
    if not ok:
        return None
    fig = Figure(figsize=(9, max(2.0, 0.28 * len(ok) + 1)))
    ax = fig.add_subplot(1, 1, 1)
    for position, row in enumerate(ok):
        lat = row.latency_ms
        ax.plot([lat.min, lat.max], [position, position], color="lightgray", linewidth=1)  # type: ignore[union-attr]
        ax.plot([lat.median, lat.p90], [position, position], color="tab:blue", linewidth=5,  # type: ignore[union-attr]
                solid_capstyle="butt")
        ax.plot([lat.median], [position], "o", color="black", markersize=4)  # type: ignore[union-attr]
        ax.plot([lat.p99], [position], "x", color="tab:red", markersize=6)  # type: ignore[union-attr]
    ax.set_yticks(range(len(ok)), [f"{_label(r)} (n={r.latency_ms.n})" for r in ok],  # type: ignore[union-attr]
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("latency per call (ms, log scale)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(handles=[Line2D([], [], color="black", marker="o", linestyle="", label="p50 (median)"),
                       Line2D([], [], color="tab:blue", linewidth=5, label="p50 to p90"),
                       Line2D([], [], color="tab:red", marker="x", linestyle="", label="p99"),
                       Line2D([], [], color="lightgray", label="min to max")],
              fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    return Plot("distribution", "Latency distributions (p50 / p90 / p99)",
                "Per case: the median, the p50-p90 band, p99 (nearest-rank) and the full range of the raw "
                "samples.", _png(fig))


def _memory(row: ResultRow) -> tuple[str, float] | None:
    m = row.memory
    for kind, value in (("allocator peak", m.peak_allocated_mb), ("GPU process (NVML)", m.gpu_process_mb),
                        ("process peak RSS", m.process_mb)):
        if value is not None:
            return kind, value
    return None


def peak_memory(rows: Sequence[ResultRow]) -> Plot | None:
    bars = [(row, figure) for row in _ok(rows) if (figure := _memory(row)) is not None][:MAX_ROWS]
    if not bars:
        return None
    fig = Figure(figsize=(9, max(2.0, 0.28 * len(bars) + 1)))
    ax = fig.add_subplot(1, 1, 1)
    palette = {"allocator peak": "tab:blue", "GPU process (NVML)": "tab:orange",
               "process peak RSS": "tab:gray"}
    kinds_seen: dict[str, None] = {}
    for position, (_, (kind, value)) in enumerate(bars):
        ax.barh(position, value, color=palette[kind], label=kind if kind not in kinds_seen else None)
        kinds_seen[kind] = None
        ax.text(value, position, f" {value:,.0f}", va="center", fontsize=7)
    ax.set_yticks(range(len(bars)), [_label(row) for row, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("peak memory (MB)")
    ax.margins(x=0.12)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    return Plot("memory", "Peak memory",
                "Per case: the torch allocator peak of the backend (weights, workspaces, one call) when "
                "measured; otherwise the process-wide figure, which includes every backend the process "
                "measured before.", _png(fig))


def all_plots(rows: Sequence[ResultRow]) -> list[Plot]:
    """Every plot the run has data for, in report order."""
    makers = (latency_vs_batch, throughput_vs_depth, speedup_over_eager, latency_distribution, peak_memory)
    return [plot for make in makers if (plot := make(rows)) is not None]
