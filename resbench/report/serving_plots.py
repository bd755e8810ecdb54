"""The serving report's plot: p99 latency against the QPS a runtime completed, one line per runtime.

Each point of a line is one LoadGen Server run (the peak search's probes, or the one run at target_qps):
filled when its p99 held the bound, hollow when it missed. The horizontal line is the bound; a dotted
vertical line in the runtime's colour is its Offline samples/s (what it completes with no latency limit),
and a cross its SingleStream figure (one sample at a time). A runtime any of whose rows is doubtful
(doubts.py: contention, throttling) is labelled with a leading "!", as the latency plots label theirs.
Matplotlib on the Agg canvas, no pyplot."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from resbench.doubts import doubts
from resbench.report.plots import Plot, encode_png
from resbench.results import ResultRow

PANEL = (7.0, 4.0)
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
PLAIN_2_5 = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")


def _server_points(row: ResultRow) -> list[tuple[float, float, bool]]:
    """(completed QPS, p99 ms, held) of every Server run behind a row, in QPS order."""
    serving = row.serving
    if serving is None:
        return []
    if serving.peak is not None:
        points = [(p.completed_qps, p.p99_ms, p.held) for p in serving.peak.probes]
    else:
        points = [(serving.samples_per_s, serving.latency_ms.p99, bool(serving.bound_held))]
    return sorted((q, p, held) for q, p, held in points if q and p)


def latency_vs_qps(rows: Sequence[ResultRow]) -> Plot | None:
    ok = [row for row in rows if row.status == "ok" and row.serving is not None]
    panels: dict[tuple[str, str], list[ResultRow]] = {}
    for row in ok:
        panels.setdefault((row.model, row.dtype), []).append(row)
    if not panels:
        return None
    fig = Figure(figsize=(PANEL[0] * min(2, len(panels)), PANEL[1] * -(-len(panels) // 2)), layout="constrained")
    columns = min(2, len(panels))
    for number, ((model, dtype), members) in enumerate(panels.items(), start=1):
        axis = fig.add_subplot(-(-len(panels) // columns), columns, number)
        bounds = set()  # this panel's Server bounds only
        runtimes: dict[str, dict[str, ResultRow]] = {}
        for row in members:
            runtimes.setdefault(row.backend_label, {})[row.scenario] = row
        for index, (runtime, by_scenario) in enumerate(runtimes.items()):
            color = f"C{index % 10}"
            label = ("! " if any(doubts(row) for row in by_scenario.values()) else "") + runtime
            server = by_scenario.get("server")
            points = _server_points(server) if server is not None else []
            if points:
                axis.plot([q for q, _, _ in points], [p for _, p, _ in points], color=color, label=label)
                for qps, p99, held in points:
                    axis.plot(qps, p99, "o", color=color, markerfacecolor=color if held else "white")
                bounds.add(server.serving.latency_bound_ms)
            offline = by_scenario.get("offline")
            if offline is not None and offline.serving.samples_per_s:
                axis.axvline(offline.serving.samples_per_s, color=color, linestyle=":", linewidth=1,
                             label=None if points else label)
            single = by_scenario.get("single-stream")
            if single is not None and single.serving.samples_per_s and single.serving.latency_ms.p99:
                axis.plot(single.serving.samples_per_s, single.serving.latency_ms.p99, "x", color=color,
                          label=None if points or offline is not None else label)
        for bound in sorted(b for b in bounds if b):
            axis.axhline(bound, color="0.3", linestyle="--", linewidth=1)
            axis.annotate(f"p99 bound {bound:g} ms", (0.01, bound), xycoords=("axes fraction", "data"),
                          fontsize=7, va="bottom", color="0.3")
        axis.set_xscale("log")
        axis.set_yscale("log")
        for side in (axis.xaxis, axis.yaxis):  # plain numbers: 1, 2, 5, 10, 20, 50...
            side.set_major_formatter(PLAIN)
            side.set_minor_formatter(PLAIN_2_5)
        axis.set_xlabel("completed QPS (samples/s)")
        axis.set_ylabel("p99 latency (ms)")
        axis.set_title(f"{model} · {dtype}", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # off the data
    return Plot("serving-latency-qps", "Serving: p99 latency vs QPS",
                "Per runtime, LoadGen Server runs: p99 latency (issue to completion) against the QPS it "
                "completed; filled points held the p99 bound (dashed), hollow ones missed it. Dotted "
                "vertical: the Offline samples/s; cross: SingleStream. A leading '!': measured under contention "
                "or throttling (the row's warnings).", encode_png(fig))
