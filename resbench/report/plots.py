"""The HTML report's plots: matplotlib on the Agg canvas (no pyplot, no display, no global state), each
returned as a base64 PNG so the report is one self-contained file that opens offline.

Every function takes the run's rows and returns a `Plot`, or None when the run has nothing to draw
(latency vs batch needs two batch sizes; throughput vs depth, two models with a known depth).

Layout rules, checked by rendering 1-model and 5-model reports in headless Chromium: matplotlib's
constrained layout places titles, labels and legends without overlap; a grid of panels has one shared
legend above it (a legend per panel was cut off or overlapped the next panel); every panel labels its
own y ticks (log axes choose ticks that fall inside the data's range); rows whose timing is doubtful
(doubts.py) are labelled with a leading "!" in dark orange."""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from resbench.doubts import doubts
from resbench.report.console import speedups
from resbench.report.tables import row_label
from resbench.results import ResultRow

MAX_ROWS = 80          # per-row plots (distributions, memory) show at most this many rows
DPI = 96
PANEL_W, PANEL_H = 4.2, 3.2   # inches per panel of a grid
ROW_H = 0.26                  # inches per bar of a per-row plot
DOUBT_COLOR = "#b35900"       # tick labels of rows measured under contention or noise
_DEPTH = re.compile(r"res(?:net|next)[_-]?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Plot:
    key: str            # anchor id in the HTML
    title: str
    caption: str        # what the plot shows and how it was measured
    png_base64: str


def encode_png(fig: Figure) -> str:
    """The figure as a base64 PNG (no timestamp or software tag, so equal plots give equal bytes)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ok(rows: Sequence[ResultRow]) -> list[ResultRow]:
    return [row for row in rows if row.status == "ok" and row.latency_ms is not None]


def _grid(count: int, columns: int = 3) -> tuple[Figure, list[Axes]]:
    """`count` panels, up to `columns` a line, in a constrained-layout figure (room left for a legend)."""
    columns = min(columns, count)
    lines = -(-count // columns)
    width = max(PANEL_W * columns, 6.5)   # a lone panel still has room for a legend line above it
    fig = Figure(figsize=(width, PANEL_H * lines + 0.6), layout="constrained")
    axes = list(fig.subplots(lines, columns, squeeze=False).flat)
    for spare in axes[count:]:
        spare.remove()
    return fig, axes[:count]


def _shared_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend above the grid, each label once, in first-seen order."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        # ~0.07 in per character at 9 pt plus the marker: as many columns as fit the figure's width
        widest = max(len(label) for label in entries) * 0.07 + 0.7
        columns = max(1, min(len(entries), int(fig.get_figwidth() / widest)))
        fig.legend(list(entries.values()), list(entries), loc="outside upper center", ncols=columns,
                   frameon=False, fontsize=9)


def _plain(value: float, _position: object = None) -> str:
    return f"{value:g}" if value >= 0.01 else f"{value:.1e}"


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis spanning [low, high]: 1-2-5 steps per decade over wide ranges, evenly
    spaced round numbers (MaxNLocator) over ranges under ~1.2 decades, so every panel has at least two."""
    if low <= 0 or high <= 0:
        return []
    if math.log10(high / low) <= 1.2:
        ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        return [float(v) for v in ticks if low <= v <= high]
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return [step * 10.0 ** exponent for exponent in range(first, last + 1) for step in (1, 2, 5)
            if low <= step * 10.0 ** exponent <= high]


def _log_axis(axis: Axis, values: Sequence[float]) -> None:
    """Log scale with plain-number tick labels (5, 10, 20 ... not 10^1) inside the data's range."""
    low, high = min(values) / 1.15, max(values) * 1.15
    axis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _label(row: ResultRow) -> str:
    return ("! " if doubts(row) else "") + row_label(row)  # latency rows only: no scenario


def _row_axis(fig: Figure, rows: Sequence[ResultRow], labels: Sequence[str]) -> Axes:
    """One bar/marker per row, top to bottom, no empty band above or below."""
    ax = fig.add_subplot(1, 1, 1)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if doubts(row):
            tick.set_color(DOUBT_COLOR)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    return ax


def _row_figure(count: int) -> Figure:
    return Figure(figsize=(9, max(2.2, ROW_H * count + 1.3)), layout="constrained")


def model_depth(model: str) -> int | None:
    """18 for resnet18, 50 for wide_resnet50_2 or torchvision:resnext50_32x4d; None when not a ResNet name."""
    match = _DEPTH.search(model)
    return int(match.group(1)) if match else None


def latency_vs_batch(rows: Sequence[ResultRow]) -> Plot | None:
    ok = _ok(rows)
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in ok:
        groups.setdefault((row.model, row.dtype), []).append(row)
    if not any(len({r.batch_size for r in members}) > 1 for members in groups.values()):
        return None   # one batch size everywhere: the distributions plot shows the same numbers better
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
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        _log_axis(ax.yaxis, [r.latency_ms.median for r in members])  # type: ignore[union-attr]
        ax.set_title(f"{model} · {dtype}", fontsize=10)
        ax.set_xlabel("batch size")
        ax.set_ylabel("median latency (ms)")
        ax.grid(True, alpha=0.3)
    _shared_legend(fig, axes)
    return Plot("latency-vs-batch", "Latency vs batch size",
                "Median latency per call against batch size, one panel per model and dtype, one line per "
                "backend; error bars are the median's 95% CI.", encode_png(fig))


def throughput_vs_depth(rows: Sequence[ResultRow]) -> Plot | None:
    ok = [row for row in _ok(rows) if model_depth(row.model) is not None and row.throughput_ips]
    if len({model_depth(row.model) for row in ok}) < 2:
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
        depths = sorted({model_depth(r.model) for r in chosen})
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_title(f"{dtype} · batch {batch}", fontsize=10)
        ax.set_xlabel("ResNet depth (layers)")
        ax.set_ylabel("throughput (images/s)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    _shared_legend(fig, axes)
    return Plot("throughput-vs-depth", "Throughput vs depth",
                "Images per second (batch / median latency) against the model's depth, at the largest batch "
                "size measured for each dtype, one line per backend.", encode_png(fig))


def speedup_over_eager(rows: Sequence[ResultRow]) -> Plot | None:
    ok = _ok(rows)
    factor = speedups(ok)
    bars = [(row, factor[id(row)]) for row in ok if id(row) in factor and not (row.backend == "eager"
                                                                                and not row.options)]
    if not bars:
        return None
    bars = bars[:MAX_ROWS]
    fig = _row_figure(len(bars))
    ax = _row_axis(fig, [row for row, _ in bars], [_label(row) for row, _ in bars])
    values = [value for _, value in bars]
    colors = ["tab:green" if value >= 1 else "tab:red" for value in values]
    positions = list(range(len(bars)))
    ax.barh(positions, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speedup over eager (eager median / median)")
    ax.set_xlim(0, max(values) * 1.12)
    for position, value in zip(positions, values, strict=True):
        ax.text(value, position, f" {value:.2f}×", va="center", fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    return Plot("speedup", "Speedup over eager",
                "Eager's median latency divided by each backend's, for the same model, dtype, batch and "
                "image size; above 1 is faster than eager. Rows marked ! were measured under contention or "
                "noise.", encode_png(fig))


def latency_distribution(rows: Sequence[ResultRow]) -> Plot | None:
    ok = _ok(rows)[:MAX_ROWS]
    if not ok:
        return None
    fig = _row_figure(len(ok))
    ax = _row_axis(fig, ok, [f"{_label(r)} (n={r.latency_ms.n})" for r in ok])  # type: ignore[union-attr]
    for position, row in enumerate(ok):
        lat = row.latency_ms
        ax.plot([lat.min, lat.max], [position, position], color="lightgray", linewidth=1)  # type: ignore[union-attr]
        ax.plot([lat.median, lat.p90], [position, position], color="tab:blue", linewidth=5,  # type: ignore[union-attr]
                solid_capstyle="butt")
        ax.plot([lat.median], [position], "o", color="black", markersize=4)  # type: ignore[union-attr]
        ax.plot([lat.p99], [position], "x", color="tab:red", markersize=6)  # type: ignore[union-attr]
    ax.set_xscale("log")
    _log_axis(ax.xaxis, [v for r in ok for v in (r.latency_ms.min, r.latency_ms.max)])  # type: ignore[union-attr]
    ax.set_xlabel("latency per call (ms, log scale)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(handles=[Line2D([], [], color="black", marker="o", linestyle="", label="p50 (median)"),
                        Line2D([], [], color="tab:blue", linewidth=5, label="p50 to p90"),
                        Line2D([], [], color="tab:red", marker="x", linestyle="", label="p99"),
                        Line2D([], [], color="lightgray", label="min to max")],
               fontsize=8, loc="outside upper center", ncols=4, frameon=False)
    return Plot("distribution", "Latency distributions (p50 / p90 / p99)",
                "Per case: the median, the p50-p90 band, p99 (nearest-rank) and the full range of the raw "
                "samples. Rows marked ! were measured under contention or noise.", encode_png(fig))


MEMORY_KINDS = ("own (per backend)", "GPU process (NVML)", "process peak RSS")


def _memory(row: ResultRow) -> tuple[str, float] | None:
    m = row.memory
    for kind, value in zip(MEMORY_KINDS, (m.backend_mb, m.gpu_process_mb, m.process_mb), strict=True):
        if value is not None:
            return kind, value
    return None


def peak_memory(rows: Sequence[ResultRow]) -> Plot | None:
    bars = [(row, figure) for row in _ok(rows) if (figure := _memory(row)) is not None][:MAX_ROWS]
    if not bars:
        return None
    fig = _row_figure(len(bars))
    ax = _row_axis(fig, [row for row, _ in bars], [_label(row) for row, _ in bars])
    palette = dict(zip(MEMORY_KINDS, ("tab:blue", "tab:orange", "tab:gray"), strict=True))
    kinds_seen: dict[str, None] = {}
    for position, (_, (kind, value)) in enumerate(bars):
        ax.barh(position, value, color=palette[kind], label=kind if kind not in kinds_seen else None)
        kinds_seen[kind] = None
        ax.text(value, position, f" {value:,.0f}", va="center", fontsize=7)
    ax.set_xlabel("memory (MB)")
    ax.set_xlim(0, max(value for _, (_, value) in bars) * 1.12)
    fig.legend(fontsize=8, loc="outside upper center", ncols=3, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    return Plot("memory", "Memory per backend",
                "Per case: the backend's own footprint when measured (CPU: RSS growth from its prepare + "
                "peak growth during its timed calls; GPU: torch allocator bytes it holds + graph pools + one "
                "call's peak), comparable across the runtimes of a group; otherwise a process-wide figure, "
                "named, which includes every backend the process measured.", encode_png(fig))


def all_plots(rows: Sequence[ResultRow]) -> list[Plot]:
    """Every plot the run has data for, in report order."""
    makers = (latency_vs_batch, throughput_vs_depth, speedup_over_eager, latency_distribution, peak_memory)
    return [plot for make in makers if (plot := make(rows)) is not None]
