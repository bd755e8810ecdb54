"""Runtime recommendation: per (model, batch), which runtime to deploy, and why every other one lost.

A runtime is one row of a (model, batch) group: a backend with its options in one dtype. For each group:
1. Exclusion: a row that did not run (skipped, failed, oom, timeout, crashed), fails parity, or breaks a
   constraint (--max-p99-ms on its p99, --max-memory-gb on its per-backend memory, --min-cosine) is
   excluded, with that reason. --max-memory-gb judges only the per-backend figure (`memory.backend_mb`,
   comparable across runtimes); a row without one is not judged by it, and the group says so.
2. Ranking on the objective, with the median's distribution-free 95% CI: `latency` ranks on the median
   latency, `throughput` on images/s (batch / median). p99 is shown, never ranked on: with tens of
   samples it is the slowest sample or two, and says more about the machine than the runtime.
3. A tie, not a winner, when the best runtime's median CI overlaps another's: those runtimes are
   statistically indistinguishable; they are listed cheapest to prepare first.
4. Pareto frontier over the others: median latency (better only when the CIs are apart), per-backend
   memory, prepare/build time, parity rel-L2. A dimension some row lacks is left out (and said).
5. Doubt: rows whose warnings make their timing doubtful (noise, contention, throttling: doubts.py) are
   marked; when one is recommended or tied while a clean runtime meets the constraints, its reason says
   so and names the best clean runtime.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from resbench.doubts import doubts, is_clean
from resbench.dtypes import DTYPE_NAMES, is_quantized
from resbench.errors import UsageError, one_of
from resbench.report.tables import fmt, status_reason
from resbench.results import ResultRow, RunFile

if TYPE_CHECKING:
    from rich.console import Console

Objective = Literal["latency", "throughput"]
OBJECTIVES: tuple[str, ...] = ("latency", "throughput")
DTYPES: tuple[str, ...] = DTYPE_NAMES
MISSING_WHY = {"memory": "no per-backend memory figure for every runtime (process-wide figures include "
                         "every backend measured in the same process)"}
Role = Literal["recommended", "tied", "frontier", "dominated", "excluded"]


@dataclass(frozen=True)
class Constraints:
    batch: int | None = None
    dtype: str | None = None
    max_p99_ms: float | None = None
    max_memory_gb: float | None = None
    min_cosine: float | None = None
    objective: Objective = "latency"

    def check(self) -> None:
        """Raise UsageError for a value no run could satisfy (bad dtype, objective, non-positive limit)."""
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r} is not allowed; {one_of(OBJECTIVES)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r} is not allowed; {one_of(DTYPES)}")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch {self.batch} is not allowed; a batch size is an integer >= 1")
        for flag, value in (("--max-p99-ms", self.max_p99_ms), ("--max-memory-gb", self.max_memory_gb)):
            if value is not None and not value > 0:
                raise UsageError(f"{flag} {value} is not allowed; it must be > 0")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise UsageError(f"--min-cosine {self.min_cosine} is not allowed; a cosine lies in [-1, 1]")


Interval = tuple[float, float]


@dataclass(frozen=True)
class Dimension:
    name: str
    unit: str
    lower_is_better: bool

    def interval(self, row: ResultRow) -> Interval | None:
        """The row's value as an interval: the median's 95% CI for latency, a point otherwise."""
        if self.name == "median":
            return tuple(row.latency_ms.ci_median) if row.latency_ms else None  # type: ignore[return-value]
        value = {"memory": row.memory.backend_mb, "prepare": row.prepare_s,
                 "rel_l2": row.parity.rel_l2 if row.parity is not None else None}[self.name]
        return (value, value) if value is not None else None

    def better(self, a: ResultRow, b: ResultRow) -> bool:
        """a is better than b on this dimension: for latency, only when the CIs do not overlap."""
        (a_lo, a_hi), (b_lo, b_hi) = self.interval(a), self.interval(b)  # type: ignore[misc]
        return a_hi < b_lo if self.lower_is_better else a_lo > b_hi

    def text(self, row: ResultRow) -> str:
        if self.name == "median":
            return f"median {row.latency_ms.median:.3f} ms"  # type: ignore[union-attr]
        value = self.interval(row)[0]  # type: ignore[index]
        return {"memory": f"memory {value:,.0f} MB", "prepare": f"prepare {value:.2f} s",
                "rel_l2": f"rel-L2 {value:.2e}"}[self.name]


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("median", "ms", True),
    Dimension("memory", "MB", True),
    Dimension("prepare", "s", True),
    Dimension("rel_l2", "", True),
)


@dataclass(frozen=True)
class Runtime:
    row: ResultRow
    role: Role
    reason: str

    @property
    def label(self) -> str:
        return f"{self.row.backend_label} {self.row.dtype}"

    @property
    def doubts(self) -> list[str]:
        return doubts(self.row)


@dataclass(frozen=True)
class GroupRecommendation:
    model: str
    batch_size: int
    image_size: int
    timing_mode: str
    runtimes: tuple[Runtime, ...]          # recommended or tied first, then frontier, dominated, excluded
    dimensions: tuple[str, ...]            # the Pareto dimensions used
    notes: tuple[str, ...] = ()
    device: str | None = None              # set when the run spans device models: each is recommended apart

    @property
    def recommended(self) -> Runtime | None:
        """The winner; None when nothing meets the constraints or the best runtimes are tied."""
        return next((r for r in self.runtimes if r.role == "recommended"), None)

    @property
    def tied(self) -> tuple[Runtime, ...]:
        return tuple(r for r in self.runtimes if r.role == "tied")

    @property
    def title(self) -> str:
        extra = f", {self.image_size}px" if self.image_size != 224 else ""
        on = f" on {self.device}" if self.device else ""
        return f"{self.model}, batch {self.batch_size}{extra} ({self.timing_mode} timing){on}"

    @property
    def verdict(self) -> str:
        if self.recommended is not None:
            return f"recommend {self.recommended.label}"
        if self.tied:
            return f"tie: {' = '.join(r.label for r in self.tied)} (statistically indistinguishable)"
        return "no runtime meets the constraints"


@dataclass(frozen=True)
class Recommendation:
    constraints: Constraints
    groups: tuple[GroupRecommendation, ...]


# ------------------------------------------------------------------------------------------ the logic


def median_text(row: ResultRow) -> str:
    """'6.300 ms (95% CI 6.250-6.350)'"""
    lat = row.latency_ms
    return f"{lat.median:.3f} ms (95% CI {lat.ci_median[0]:.3f}-{lat.ci_median[1]:.3f})"  # type: ignore[union-attr]


def _objective_text(row: ResultRow, objective: Objective) -> str:
    lat = row.latency_ms
    if objective == "latency":
        return f"median {lat.median:.3f} ms, p99 {lat.p99:.3f} ms"  # type: ignore[union-attr]
    return f"{row.throughput_ips:,.0f} img/s (median {lat.median:.3f} ms)"  # type: ignore[union-attr]


def exclusion_reason(row: ResultRow, constraints: Constraints) -> str | None:
    """Why `row` cannot be recommended at all, or None."""
    if row.status != "ok":
        return status_reason(row)
    if row.latency_ms is None or row.throughput_ips is None:
        return "no latency measured"
    if row.parity is not None and not row.parity.passed:
        return f"fails parity ({row.parity.rule})"
    if constraints.max_p99_ms is not None and row.latency_ms.p99 > constraints.max_p99_ms:
        return f"p99 {row.latency_ms.p99:.3f} ms > --max-p99-ms {constraints.max_p99_ms:g}"
    if over := memory_exclusion(row, constraints.max_memory_gb):
        return over
    if constraints.min_cosine is not None:
        if row.parity is None:
            return "no parity metrics; --min-cosine cannot be checked"
        if row.parity.cosine < constraints.min_cosine:
            return f"cosine {row.parity.cosine:.6f} < --min-cosine {constraints.min_cosine:g}"
    return None


def _dominates(a: ResultRow, b: ResultRow, dims: Sequence[Dimension]) -> bool:
    return not any(d.better(b, a) for d in dims) and any(d.better(a, b) for d in dims)


def _worse_on(row: ResultRow, other: ResultRow, dims: Sequence[Dimension]) -> str:
    return ", ".join(f"{d.text(row)} vs {d.text(other).split(' ', 1)[1]}" for d in dims if d.better(other, row))


def _objective_value(row: ResultRow, objective: Objective) -> float:
    """Lower is better: the median, or minus images/s."""
    return row.latency_ms.median if objective == "latency" else -row.throughput_ips  # type: ignore[union-attr,operator]


def _overlap(a: ResultRow, b: ResultRow) -> bool:
    (a_lo, a_hi), (b_lo, b_hi) = a.latency_ms.ci_median, b.latency_ms.ci_median  # type: ignore[union-attr]
    return a_lo <= b_hi and b_lo <= a_hi


def _cheapness(row: ResultRow) -> tuple[float, float, float]:
    return (row.prepare_s if row.prepare_s is not None else math.inf,
            row.memory.backend_mb if row.memory.backend_mb is not None else math.inf,
            row.latency_ms.median)  # type: ignore[union-attr]


def _caution(row: ResultRow, clean: list[ResultRow], constraints: Constraints) -> str:
    """What a pick's reason must add: '; caution: measured with warnings (busy, noisy); the best clean
    runtime is eager fp32 (...)' and '; --max-memory-gb not checked: ...', or ''."""
    text = ""
    tags = doubts(row)
    if tags:
        text = f"; caution: measured with warnings ({', '.join(tags)})"
        if clean:
            best = min(clean, key=lambda r: _objective_value(r, constraints.objective))
            text += (f"; the best clean runtime is {best.backend_label} {best.dtype} "
                     f"({_objective_text(best, constraints.objective)})")
    if constraints.max_memory_gb is not None and row.memory.backend_mb is None:
        text += "; --max-memory-gb not checked: no per-backend memory figure"
    return text


def memory_exclusion(row: ResultRow, max_memory_gb: float | None) -> str | None:
    """Why --max-memory-gb excludes `row` (its own memory, `memory.backend_mb`, over the limit), or None;
    a row without the figure is not excluded (callers note it). For latency and serving rows alike."""
    backend_mb = row.memory.backend_mb
    if max_memory_gb is None or backend_mb is None or backend_mb / 1024.0 <= max_memory_gb:
        return None
    return f"memory {backend_mb / 1024.0:.2f} GB (backend_mb) > --max-memory-gb {max_memory_gb:g}"


def recommend_group(rows: Sequence[ResultRow], constraints: Constraints) -> GroupRecommendation:
    """Judge the rows of one (model, batch, image size, timing mode) group."""
    first = rows[0]
    objective = constraints.objective
    reasons = [(row, exclusion_reason(row, constraints)) for row in rows]
    excluded = [(row, reason) for row, reason in reasons if reason is not None]
    feasible = [row for row, reason in reasons if reason is None]
    dims = [d for d in DIMENSIONS if feasible and all(d.interval(row) is not None for row in feasible)]
    notes = [f"{d.name} not compared: {MISSING_WHY.get(d.name, 'not recorded for every runtime')}"
             for d in DIMENSIONS if d not in dims and feasible]
    unchecked = [row for row in feasible if row.memory.backend_mb is None]
    if constraints.max_memory_gb is not None and unchecked:
        notes.append("--max-memory-gb not checked for " + ", ".join(f"{r.backend_label} {r.dtype}" for r in unchecked)
                     + ": no per-backend memory figure (process-wide figures include every backend of the "
                       "process; on a GPU, runtimes that allocate outside torch's allocator have none)")
    runtimes: list[Runtime] = []
    if feasible:
        clean = [row for row in feasible if is_clean(row)]
        best = min(feasible, key=lambda row: _objective_value(row, objective))
        tie = sorted((row for row in feasible if _overlap(row, best)), key=_cheapness)
        word = "lowest median latency" if objective == "latency" else "highest throughput"
        if len(tie) == 1:
            others = len(feasible) - 1
            why = (f"{word}: {_objective_text(best, objective)}; " +
                   (f"ahead of the other {others} runtimes" if others > 1 else "ahead of the other runtime"
                    if others else "the only runtime meeting the constraints") +
                   (" meeting the constraints, beyond the 95% CIs" if others else ""))
            runtimes.append(Runtime(best, "recommended", why + _caution(best, clean, constraints)))
        else:
            for index, row in enumerate(tie):
                peers = ", ".join(f"{r.backend_label} {r.dtype} {r.latency_ms.median:.3f} ms"  # type: ignore[union-attr]
                                  for r in tie if r is not row)
                why = (f"statistically indistinguishable: median {median_text(row)} vs {peers}; "
                       "the 95% CIs overlap")
                if index == 0 and row.prepare_s is not None and tie[1].prepare_s is not None \
                        and row.prepare_s < tie[1].prepare_s:
                    why += f"; cheapest to prepare ({row.prepare_s:.2f} s)"
                runtimes.append(Runtime(row, "tied", why + _caution(row, clean, constraints)))
        ranked = [row for row in feasible if not any(row is t for t in tie)]
        frontier = [row for row in ranked if not any(_dominates(other, row, dims) for other in feasible)]
        for row in frontier:
            gain = ", ".join(d.text(row) for d in dims if d.better(row, best))
            if objective == "latency":
                loss = f"{row.latency_ms.median / best.latency_ms.median - 1.0:+.1%}"  # type: ignore[union-attr]
            else:
                loss = f"{row.throughput_ips / best.throughput_ips - 1.0:+.1%}"  # type: ignore[operator]
            runtimes.append(Runtime(row, "frontier",
                                    f"Pareto-optimal, but {_objective_text(row, objective)} ({loss} vs "
                                    f"{best.backend_label} {best.dtype}, 95% CIs apart); "
                                    f"better on: {gain or 'nothing decisive'}"))
        for row in ranked:
            if any(row is member for member in frontier):
                continue
            dominator = next(other for other in [*tie, *frontier, *feasible] if _dominates(other, row, dims))
            runtimes.append(Runtime(row, "dominated",
                                    f"dominated by {dominator.backend_label} {dominator.dtype}: "
                                    f"{_worse_on(row, dominator, dims) or 'no better on any dimension'}"))
        if len(clean) < len(feasible):
            notes.append("runtimes with entries under 'doubts' were measured under contention, noise or throttling; "
                         "rerun on a quiet machine (resbench run --wait-idle SECONDS) before trusting their ranking")
    runtimes += [Runtime(row, "excluded", reason) for row, reason in excluded]
    return GroupRecommendation(first.model, first.batch_size, first.image_size, first.timing_mode,
                               tuple(runtimes), tuple(d.name for d in dims), tuple(notes))


def _only(rows: list[ResultRow], field: str, wanted: object, flag: str, plural: str) -> list[ResultRow]:
    """The rows whose `field` is `wanted` (all rows when it is None); none is a one-line usage error."""
    if wanted is None:
        return rows
    kept = [row for row in rows if getattr(row, field) == wanted]
    if not kept:
        present = sorted({getattr(row, field) for row in rows})
        raise UsageError(f"{flag} {wanted} matches no case in the run; {plural} in it: "
                         f"{', '.join(map(str, present)) or '(none)'}")
    return kept


def recommend(run: RunFile, constraints: Constraints) -> Recommendation:
    """Group the run's rows by (model, batch, image size, timing mode) and recommend per group."""
    constraints.check()
    latency = [row for row in run.rows if row.scenario is None]  # serving rows: --scenario (serving/recommend.py)
    if not latency:   # an empty run (an empty shard) printed a bare title and exit 0, as if it had judged
        raise UsageError(f"the run holds no latency rows, so there is nothing to recommend from ({len(run.rows)} "
                         f"rows; serving rows: --scenario)")
    rows = _only(latency, "batch_size", constraints.batch, "--batch", "batch sizes")
    rows = _only(rows, "dtype", constraints.dtype, "--dtype", "dtypes")
    # A run across GPU models (a mixed Ray cluster) is split: runtimes measured on different GPUs never
    # compete in one group.
    split = len(run.devices()) > 1
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        device = run.device_of(row) if split else None
        groups.setdefault((device, row.model, row.batch_size, row.image_size, row.timing_mode), []).append(row)
    return Recommendation(constraints, tuple(dataclasses.replace(recommend_group(g, constraints), device=key[0])
                                             for key, g in groups.items()))


def recommend_file(path: str, constraints: Constraints) -> Recommendation:
    """`resbench recommend`: load the run file (missing or invalid: RunFileError, exit 2) and recommend."""
    constraints.check()
    return recommend(RunFile.load(path), constraints)


# ------------------------------------------------------------------------------ the int8 trade-off


def quantized_tradeoffs(rows: Sequence[ResultRow]) -> tuple[str, ...]:
    """One line per measured int8 row of a (model, batch) group: what quantizing gains (its median
    speed-up over the fastest float row that passes parity) and what it costs (its parity verdict)."""
    measured = [row for row in rows if row.status == "ok" and row.latency_ms is not None]
    floats = [row for row in measured if not is_quantized(row.dtype) and (row.parity is None or row.parity.passed)]
    baseline = min(floats, key=lambda row: row.latency_ms.median, default=None)  # type: ignore[union-attr]
    lines = []
    for row in measured:
        if not is_quantized(row.dtype):
            continue
        median = row.latency_ms.median  # type: ignore[union-attr]
        if baseline is None:
            speed = f"median {median:.3f} ms (no float row passing parity to compare with)"
        else:
            base = baseline.latency_ms.median  # type: ignore[union-attr]
            speed = (f"{base / median:.2f}x the speed of the fastest float row, {baseline.backend_label} "
                     f"{baseline.dtype} (median {median:.3f} ms vs {base:.3f} ms)")
        verdict = ("parity not checked" if row.parity is None else
                   f"parity {'pass' if row.parity.passed else 'FAIL'}: {row.parity.rule}")
        lines.append(f"{row.backend_label} {row.dtype}: {speed}; {verdict}")
    return tuple(lines)


# ------------------------------------------------------------------------------------------ rendering


def _median_cell(row: ResultRow) -> str:
    """'6.300 ±0.050' (the median's 95% CI half-width)."""
    if row.latency_ms is None:
        return "—"
    low, high = row.latency_ms.ci_median
    return f"{row.latency_ms.median:.3f} ±{(high - low) / 2:.3f}"


def _constraints_line(constraints: Constraints) -> str:
    parts = [f"objective: {constraints.objective}"]
    for name, value in (("batch", constraints.batch), ("dtype", constraints.dtype),
                        ("max p99", f"{constraints.max_p99_ms:g} ms" if constraints.max_p99_ms else None),
                        ("max memory",
                         f"{constraints.max_memory_gb:g} GB" if constraints.max_memory_gb else None),
                        ("min cosine", constraints.min_cosine)):
        if value is not None:
            parts.append(f"{name}: {value}")
    return "; ".join(parts)


_ROLE_STYLE = {"recommended": "bold green", "tied": "bold yellow", "frontier": "cyan", "dominated": "",
               "excluded": "dim"}


def print_recommendation(recommendation: Recommendation, console: Console) -> None:
    """One rich table per (model, batch) group: every runtime, its figures, its role and the reason."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"resbench recommend — {_constraints_line(recommendation.constraints)}", highlight=False,
                  markup=False)
    for group in recommendation.groups:
        table = Table(title=escape(f"{group.title}: {group.verdict}"), title_justify="left",
                      caption=(f"Pareto over: {', '.join(group.dimensions)}" if group.dimensions else None),
                      caption_justify="left")
        for header, justify in (("runtime", "left"), ("role", "left"), ("median ms ±CI", "right"),
                                ("p99 ms", "right"), ("img/s", "right"), ("memory MB", "right"),
                                ("prepare s", "right"), ("cosine", "right"), ("doubts", "left"),
                                ("why", "left")):
            table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for runtime in group.runtimes:
            row = runtime.row
            style = _ROLE_STYLE[runtime.role]
            role = f"[{style}]{runtime.role}[/]" if style else runtime.role
            doubt = ", ".join(runtime.doubts) if row.status == "ok" else ""
            table.add_row(
                escape(runtime.label), role, _median_cell(row),
                fmt(row.latency_ms.p99 if row.latency_ms else None, ".3f"),
                fmt(row.throughput_ips, ",.1f"),
                fmt(row.memory.backend_mb, ",.0f"),
                fmt(row.prepare_s, ".2f"),
                fmt(row.parity.cosine if row.parity else None, ".6f"),
                f"[yellow]{escape(doubt)}[/]" if doubt else "",
                escape(runtime.reason),
            )
        console.print(table)
        for note in group.notes:
            console.print(f"  note: {note}", highlight=False, markup=False)
        for line in quantized_tradeoffs([runtime.row for runtime in group.runtimes]):
            console.print(f"  int8 trade-off: {line}", highlight=False, markup=False)
