"""`resbench compare` on serving rows: one LoadGen figure a side, matched by (model, runtime, dtype,
image size, memory format, scenario).

A serving row stores LoadGen's summary figures, not raw samples, so there is no rank test or bootstrap
CI: the scenario's figure of merit (single-stream: p90 latency; server: the QPS that held the bound, or
the completed QPS at a fixed target; offline: samples/s) is judged against the --fail-on median threshold
(5%) as SLOWER / FASTER / SAME, for information; it does not fail the gate on its own, because one
short LoadGen run a side cannot tell a 5% change from noise. What does fail the gate:
- a Server p99 bound that held in the baseline and is missed in the candidate;
- (as for every row) ok in the baseline and not ok in the candidate (BROKEN)."""

from __future__ import annotations

import math

from resbench.compare import DEFAULT_THRESHOLDS, CaseComparison, MetricVerdict, Verdict
from resbench.report.tables import fmt, markdown_table
from resbench.results import ResultRow

LOWER_IS_BETTER = {"single-stream": True, "server": False, "offline": False}
NO_CI = "one LoadGen figure a side: judged by the threshold alone, not gated"
RULE = ("Serving: one LoadGen figure a side (single-stream p90, server peak or completed QPS, offline samples/s) "
        "judged by the median threshold alone, shown but not gated; a Server p99 bound held -> missed fails.")


def figure(row: ResultRow) -> tuple[str, float | None]:
    """The scenario's figure of merit: (name, value)."""
    serving = row.serving
    if serving is None:
        return "", None
    if serving.scenario == "server" and serving.peak is not None:
        return "peak QPS", serving.peak.peak_qps
    return serving.headline


def compare_serving(identity: tuple, base: ResultRow, cand: ResultRow,
                    thresholds: dict[str, float]) -> CaseComparison:
    """Both rows ok (compare_case has judged every other status)."""
    name, base_value = figure(base)
    _, cand_value = figure(cand)
    min_effect = thresholds.get("median", DEFAULT_THRESHOLDS["median"])
    failures, notes = [], []
    if base_value and cand_value:
        lower = LOWER_IS_BETTER.get(base.scenario or "", True)
        delta = cand_value / base_value - 1.0 if lower else base_value / cand_value - 1.0  # > 0: worse
        verdict = (Verdict.SLOWER if delta >= min_effect else Verdict.FASTER if delta <= -min_effect
                   else Verdict.SAME)
    else:
        delta, verdict = math.nan, Verdict.AMBIGUOUS
        notes.append(f"{name} missing on a side ({base_value} -> {cand_value})")
    if base.serving.bound_held and cand.serving.bound_held is False:
        failures.append(f"server p99 bound {cand.serving.latency_bound_ms:g} ms held -> MISSED "
                        f"(p99 {cand.serving.latency_ms.p99:.3g} ms at {cand.serving.target_qps:,.4g} QPS)")
        verdict = Verdict.SLOWER
    if base.serving.result != cand.serving.result:
        notes.append(f"LoadGen {base.serving.result} -> {cand.serving.result}")
    metric = MetricVerdict(name, base_value or math.nan, cand_value or math.nan, delta, None, None, min_effect,
                           False, verdict, NO_CI)
    return CaseComparison(identity, base, cand, verdict, (metric,), notes=tuple(notes),
                          failures=tuple(failures))


# ------------------------------------------------------------------------------------------ rendering

HEADERS = ["case", "figure", "baseline", "candidate", "Δ (worse > 0)", "verdict", "notes"]


def rows_of(comparison) -> list[list[str]]:
    from resbench.compare import case_label

    out = []
    for case in comparison.cases:
        if case.row.scenario is None:
            continue
        if not case.metrics:
            base = case.base.status if case.base is not None else "—"
            cand = case.cand.status if case.cand is not None else "—"
            out.append([case_label(case.identity), "—", base, cand, "—", case.verdict.value, "; ".join(case.notes)])
            continue
        metric = case.metrics[0]
        out.append([case_label(case.identity), metric.metric, fmt(metric.base_ms, ",.4g"), fmt(metric.cand_ms, ",.4g"),
                    fmt(metric.delta, "+.1%"), case.verdict.value, "; ".join([*case.regressions, *case.notes])])
    return out


def render_table(comparison):
    """The serving cases of a comparison as a rich Table, or None when it has none."""
    from rich.markup import escape
    from rich.table import Table

    body = rows_of(comparison)
    if not body:
        return None
    table = Table(title="serving (MLPerf LoadGen)", title_justify="left", caption=RULE, caption_justify="left")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for cells in body:
        table.add_row(*(escape(cell) for cell in cells))
    return table


def markdown_lines(comparison) -> list[str]:
    body = rows_of(comparison)
    if not body:
        return []
    lines = ["#### Serving (MLPerf LoadGen)", "",
             *markdown_table(HEADERS, ([cell.replace("|", "\\|") for cell in cells] for cells in body))]
    return [*lines, "", RULE, ""]
