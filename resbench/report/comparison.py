"""`resbench compare` rendered: the terminal table, the one-line result, and Markdown for PR comments and
CI step summaries. The verdicts themselves come from resbench/compare.py; serving cases have their own
table (resbench/serving/compare.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from resbench.compare import (
    CI_LEVEL,
    P_THRESHOLD,
    TIMING_METRICS,
    CaseComparison,
    Comparison,
    MemoryDelta,
    Verdict,
    case_label,
)
from resbench.report.tables import fmt, markdown_table

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "—" if ci is None else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]"


def _p(p_value: float | None) -> str:
    if p_value is None:
        return "—"
    return f"{p_value:.1e}" if p_value < 0.001 else f"{p_value:.3f}"


def _memory_cell(memory: MemoryDelta | None) -> str:
    if memory is None:
        return "—"
    flag = " ✗" if memory.regressed else ""
    return f"{memory.delta:+.1%}{flag}"


def _cells(case: CaseComparison, extra_metrics: Sequence[str]) -> list[str]:
    primary = case.primary
    row = case.row
    if primary is None:
        base = f"{case.base.status}" if case.base is not None else "—"
        cand = f"{case.cand.status}" if case.cand is not None else "—"
        cells = [base, cand, "—", "—", "—"]
    else:
        base_n, cand_n = len(case.base.samples_ms), len(case.cand.samples_ms)  # type: ignore[union-attr]
        cells = [f"{_ms(primary.base_ms)} (n={base_n})", f"{_ms(primary.cand_ms)} (n={cand_n})",
                 fmt(primary.delta, "+.1%"), _ci(primary.ci), _p(primary.p_value)]
    by_metric = {m.metric: m for m in case.metrics}
    for metric in extra_metrics:
        m = by_metric.get(metric)
        cells.append("—" if m is None else f"{fmt(m.delta, '+.1%')} {m.verdict.value}")
    parity = case.parity_change or ("pass" if row.parity is not None and row.parity.passed else
                                    "FAIL" if row.parity is not None else "—")
    notes = list(case.regressions) + [n for n in case.notes]
    return [case_label(case.identity), *cells, case.verdict.value, _memory_cell(case.memory), parity,
            "; ".join(notes)]


TEXT_COLUMNS = ("case", "verdict", "parity", "notes")   # left-aligned; every other column is a number


def _headers(comparison: Comparison) -> tuple[list[str], list[str]]:
    extra = [m for m in TIMING_METRICS[1:] if m in comparison.thresholds]
    headers = ["case", "base median ms", "cand median ms", "Δ median", "99% CI of Δ", "p (U test)",
               *[f"Δ {m}" for m in extra], "verdict", "Δ memory", "parity", "notes"]
    return headers, extra


def _rules_line(comparison: Comparison) -> str:
    gates = ", ".join(f"{metric}:{fraction:.0%}" for metric, fraction in comparison.thresholds.items())
    insufficient = ("passes under --allow-insufficient" if comparison.allow_insufficient
                    else "fails the gate")
    return (f"Gates: {gates}. SLOWER = Mann-Whitney U p < {comparison.alpha:.2g} ({P_THRESHOLD} / cases "
            f"compared) and Δ ≥ threshold and the {CI_LEVEL:.0%} bootstrap CI of Δ above 0, or every candidate "
            f"sample slower than every baseline sample by more than the threshold; SAME = the whole CI within "
            f"±threshold; INSUFFICIENT = too few samples for the test to reach p < {comparison.alpha:.2g}, or a "
            f"baseline measured under contention that the candidate is not SLOWER than ({insufficient}); "
            f"AMBIGUOUS otherwise. Verdicts come from the raw samples.")


_VERDICT_STYLE = {Verdict.SLOWER: "bold red", Verdict.BROKEN: "bold red", Verdict.INSUFFICIENT: "bold magenta",
                  Verdict.FASTER: "green",
                  Verdict.FIXED: "green", Verdict.SAME: "", Verdict.AMBIGUOUS: "yellow",
                  Verdict.MISSING: "yellow", Verdict.NEW: "cyan", Verdict.NOT_RUN: "dim"}


def render_table(comparison: Comparison) -> Table:
    """The comparison as a rich Table (one row per case)."""
    from rich.markup import escape
    from rich.table import Table

    headers, extra = _headers(comparison)
    table = Table(title=escape(f"resbench compare: {comparison.base_name} -> {comparison.cand_name}"),
                  caption=_rules_line(comparison), caption_justify="left")
    for header in headers:
        table.add_column(header, justify="left" if header in TEXT_COLUMNS else "right",
                         overflow="fold", no_wrap=header == "verdict")
    for case in comparison.cases:
        if case.row.scenario is not None:  # serving cases: their own table (serving/compare.py)
            continue
        cells = [escape(cell) for cell in _cells(case, extra)]   # backend labels look like markup: eager[a=b]
        style = _VERDICT_STYLE[case.verdict]
        index = headers.index("verdict")
        cells[index] = f"[{style}]{cells[index]}[/]" if style else cells[index]
        table.add_row(*cells)
    return table


def print_comparison(comparison: Comparison, console: Console) -> None:
    """The terminal output of `resbench compare`: environment warnings, the table, the one-line result."""
    from rich.markup import escape

    for line in comparison.env_differences:
        console.print(f"[yellow]warning:[/] environments differ: {escape(line)}", highlight=False)
    for line in comparison.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    console.print(render_table(comparison))
    from resbench.serving.compare import render_table as serving_table

    if (serving := serving_table(comparison)) is not None:
        console.print(serving)
    style = "bold red" if comparison.exit_code else "bold green"
    console.print(f"[{style}]{escape(comparison.summary)}[/]", highlight=False)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison) -> str:
    """Compact Markdown for PR comments and CI step summaries."""
    headers, extra = _headers(comparison)
    icon = "❌" if comparison.exit_code else "✅"
    lines = [f"### {icon} resbench compare: {_md_escape(comparison.summary)}", "",
             f"Baseline `{comparison.base_name}`, candidate `{comparison.cand_name}`.", ""]
    if comparison.env_differences:
        lines.append("> **Warning: the environments differ** — timings may not be comparable:")
        lines += [f"> - {_md_escape(line)}" for line in comparison.env_differences]
        lines.append("")
    for line in comparison.warnings:
        lines += [f"> Warning: {_md_escape(line)}", ""]
    body = []
    for case in comparison.cases:
        if case.row.scenario is not None:  # serving cases: their own table
            continue
        cells = [_md_escape(c) for c in _cells(case, extra)]
        index = headers.index("verdict")
        if case.verdict in (Verdict.SLOWER, Verdict.BROKEN, Verdict.INSUFFICIENT):
            cells[index] = f"**{cells[index]}**"
        body.append(cells)
    lines += markdown_table(headers, body, [h for h in headers if h not in TEXT_COLUMNS])
    from resbench.serving.compare import markdown_lines as serving_markdown

    lines += ["", *serving_markdown(comparison), _rules_line(comparison), ""]
    return "\n".join(lines)
