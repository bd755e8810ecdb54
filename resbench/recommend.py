"""Runtime recommendation: per (model, batch), which runtime to deploy, and why every other one lost.

A runtime is one row of a (model, batch) group: a backend with its options in one dtype. For each group:
1. Exclusion: a row that did not run (skipped, failed, oom, timeout, crashed), fails parity, or breaks a
   constraint (--max-p99-ms, --max-memory-gb, --min-cosine) is excluded, with that reason.
2. Pareto frontier over the remaining rows: p99 latency (lower), throughput (higher), memory (lower),
   prepare/build time (lower) and parity error rel-L2 (lower). A row is dominated when another is at
   least as good on every dimension and better on one. A dimension some row lacks is left out (and said).
3. Recommendation: the frontier row best on the objective (latency: lowest p99; throughput: highest
   images/s). Rows within NEAR_TIE of that best are treated as equal on the objective (run-to-run noise
   is a few percent); among them the cheapest to prepare wins, then the leanest in memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from resbench.compare import memory_figure
from resbench.errors import UsageError, one_of
from resbench.results import ResultRow, RunFile

if TYPE_CHECKING:
    from rich.console import Console

Objective = Literal["latency", "throughput"]
OBJECTIVES: tuple[str, ...] = ("latency", "throughput")
DTYPES: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16")
NEAR_TIE = 0.03   # objective values within 3% of the best count as a tie (typical run-to-run spread)
MISSING_WHY = {"memory": "no per-backend allocator peak for every runtime (process-wide figures include "
                         "every backend measured in the same process)"}


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


@dataclass(frozen=True)
class Dimension:
    name: str
    unit: str
    lower_is_better: bool

    def value(self, row: ResultRow) -> float | None:
        if self.name == "p99":
            return row.latency_ms.p99 if row.latency_ms else None
        if self.name == "throughput":
            return row.throughput_ips
        if self.name == "memory":
            return row.memory.peak_allocated_mb   # per backend; process-wide figures include the others
        if self.name == "prepare":
            return row.prepare_s
        if self.name == "rel_l2":
            return row.parity.rel_l2 if row.parity is not None else None
        raise KeyError(self.name)

    def better(self, a: float, b: float) -> bool:
        return a < b if self.lower_is_better else a > b


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("p99", "ms", True),
    Dimension("throughput", "img/s", False),
    Dimension("memory", "MB", True),
    Dimension("prepare", "s", True),
    Dimension("rel_l2", "", True),
)


@dataclass(frozen=True)
class Runtime:
    row: ResultRow
    role: Literal["recommended", "frontier", "dominated", "excluded"]
    reason: str

    @property
    def label(self) -> str:
        return f"{self.row.backend_label} {self.row.dtype}"


@dataclass(frozen=True)
class GroupRecommendation:
    model: str
    batch_size: int
    image_size: int
    timing_mode: str
    runtimes: tuple[Runtime, ...]          # recommended first, then frontier, dominated, excluded
    dimensions: tuple[str, ...]            # the Pareto dimensions used
    notes: tuple[str, ...] = ()
    device: str | None = None              # set when the run spans device models: each is recommended apart

    @property
    def recommended(self) -> Runtime | None:
        return next((r for r in self.runtimes if r.role == "recommended"), None)

    @property
    def title(self) -> str:
        extra = f", {self.image_size}px" if self.image_size != 224 else ""
        on = f" on {self.device}" if self.device else ""
        return f"{self.model}, batch {self.batch_size}{extra} ({self.timing_mode} timing){on}"


@dataclass(frozen=True)
class Recommendation:
    constraints: Constraints
    groups: tuple[GroupRecommendation, ...]


# ------------------------------------------------------------------------------------------ the logic


def _fmt(dim: Dimension, value: float) -> str:
    if dim.name == "rel_l2":
        return f"rel-L2 {value:.2e}"
    if dim.name == "throughput":
        return f"{value:,.0f} img/s"
    if dim.name == "memory":
        return f"{value:,.0f} MB"
    if dim.name == "prepare":
        return f"prepare {value:.2f} s"
    return f"p99 {value:.3f} ms"


def constraint_memory(row: ResultRow) -> tuple[str, float] | None:
    """The memory figure checked against --max-memory-gb: the backend's allocator peak when recorded,
    else the process-wide figure (an upper bound: it includes the other backends of the process)."""
    if row.memory.peak_allocated_mb is not None:
        return "peak_allocated_mb", row.memory.peak_allocated_mb
    return memory_figure(row)


def exclusion_reason(row: ResultRow, constraints: Constraints) -> str | None:
    """Why `row` cannot be recommended at all, or None."""
    if row.status != "ok":
        return f"{row.status}: {row.reason or 'no reason recorded'}"
    if row.latency_ms is None or row.throughput_ips is None:
        return "no latency measured"
    if row.parity is not None and not row.parity.passed:
        return f"fails parity ({row.parity.rule})"
    if constraints.max_p99_ms is not None and row.latency_ms.p99 > constraints.max_p99_ms:
        return f"p99 {row.latency_ms.p99:.3f} ms > --max-p99-ms {constraints.max_p99_ms:g}"
    if constraints.max_memory_gb is not None:
        figure = constraint_memory(row)
        if figure is None:
            return "memory not measured; --max-memory-gb cannot be checked"
        if figure[1] / 1024.0 > constraints.max_memory_gb:
            return (f"memory {figure[1] / 1024.0:.2f} GB ({figure[0]}) "
                    f"> --max-memory-gb {constraints.max_memory_gb:g}")
    if constraints.min_cosine is not None:
        if row.parity is None:
            return "no parity metrics; --min-cosine cannot be checked"
        if row.parity.cosine < constraints.min_cosine:
            return f"cosine {row.parity.cosine:.6f} < --min-cosine {constraints.min_cosine:g}"
    return None


def _dominates(a: ResultRow, b: ResultRow, dims: Sequence[Dimension]) -> bool:
    values = [(d, d.value(a), d.value(b)) for d in dims]
    return (all(not d.better(vb, va) for d, va, vb in values)
            and any(d.better(va, vb) for d, va, vb in values))


def _worse_on(row: ResultRow, other: ResultRow, dims: Sequence[Dimension]) -> str:
    return ", ".join(f"{_fmt(d, d.value(row))} vs {_fmt(d, d.value(other))}"
                     for d in dims if d.better(d.value(other), d.value(row)))


def _objective_value(row: ResultRow, objective: Objective) -> float:
    return row.latency_ms.p99 if objective == "latency" else row.throughput_ips  # type: ignore[union-attr,return-value]


def _objective_text(row: ResultRow, objective: Objective) -> str:
    return (f"p99 {row.latency_ms.p99:.3f} ms" if objective == "latency"  # type: ignore[union-attr]
            else f"{row.throughput_ips:,.0f} img/s")


def recommend_group(rows: Sequence[ResultRow], constraints: Constraints) -> GroupRecommendation:
    """Judge the rows of one (model, batch, image size, timing mode) group."""
    first = rows[0]
    objective = constraints.objective
    reasons = [(row, exclusion_reason(row, constraints)) for row in rows]
    excluded = [(row, reason) for row, reason in reasons if reason is not None]
    feasible = [row for row, reason in reasons if reason is None]
    dims = [d for d in DIMENSIONS if feasible and all(d.value(row) is not None for row in feasible)]
    notes = [f"{d.name} not compared: {MISSING_WHY.get(d.name, 'not recorded for every runtime')}"
             for d in DIMENSIONS if d not in dims and feasible]
    frontier = [row for row in feasible if not any(_dominates(other, row, dims) for other in feasible)]
    runtimes: list[Runtime] = []
    if frontier:
        sign = 1.0 if objective == "latency" else -1.0
        best_value = min(sign * _objective_value(row, objective) for row in frontier) * sign
        near = [row for row in frontier
                if abs(_objective_value(row, objective) / best_value - 1.0) <= NEAR_TIE]
        memory_dim = next((d for d in dims if d.name == "memory"), None)
        use_prepare = any(d.name == "prepare" for d in dims)

        def tie_key(row: ResultRow) -> tuple[float, float, float]:
            prepare = row.prepare_s if use_prepare else 0.0
            memory = memory_dim.value(row) if memory_dim is not None else 0.0
            return (prepare or 0.0, memory or 0.0, sign * _objective_value(row, objective))

        chosen = min(near, key=tie_key)
        best_row = min(frontier, key=lambda row: sign * _objective_value(row, objective))
        word = "lowest p99" if objective == "latency" else "highest throughput"
        if chosen is best_row or _objective_value(chosen, objective) == _objective_value(best_row, objective):
            value = (f"{chosen.latency_ms.p99:.3f} ms" if objective == "latency"  # type: ignore[union-attr]
                     else f"{chosen.throughput_ips:,.0f} img/s")
            plural = "s" if len(feasible) != 1 else ""
            why = f"{word} ({value}) of the {len(feasible)} runtime{plural} meeting the constraints"
        else:
            cheaper = []
            if (chosen.prepare_s is not None and best_row.prepare_s is not None
                    and chosen.prepare_s < best_row.prepare_s):
                cheaper.append(f"prepares in {chosen.prepare_s:.2f} s vs {best_row.prepare_s:.2f} s")
            if memory_dim is not None and memory_dim.better(memory_dim.value(chosen),
                                                            memory_dim.value(best_row)):
                cheaper.append(f"{_fmt(memory_dim, memory_dim.value(chosen))} vs "
                               f"{_fmt(memory_dim, memory_dim.value(best_row))}")
            why = (f"within {NEAR_TIE:.0%} of the {word} ({best_row.backend_label} {best_row.dtype}: "
                   f"{_objective_text(best_row, objective)} vs {_objective_text(chosen, objective)}) and "
                   + (" and ".join(cheaper) or "cheaper to run"))
        runtimes.append(Runtime(chosen, "recommended", why))
        for row in frontier:
            if row is chosen:
                continue
            gain = ", ".join(_fmt(d, d.value(row)) for d in dims if d.better(d.value(row), d.value(chosen)))
            loss = _objective_value(row, objective) / _objective_value(chosen, objective) - 1.0
            runtimes.append(Runtime(row, "frontier",
                                    f"Pareto-optimal, but {_objective_text(row, objective)} "
                                    f"({loss:+.1%} vs the recommendation); "
                                    f"better on: {gain or 'nothing decisive'}"))
        for row in feasible:
            if any(row is member for member in frontier):
                continue
            dominator = chosen if _dominates(chosen, row, dims) else next(
                other for other in frontier if _dominates(other, row, dims))
            runtimes.append(Runtime(row, "dominated",
                                    f"dominated by {dominator.backend_label} {dominator.dtype}: "
                                    f"{_worse_on(row, dominator, dims) or 'no better on any dimension'}"))
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
    rows = _only(list(run.rows), "batch_size", constraints.batch, "--batch", "batch sizes")
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


# ------------------------------------------------------------------------------------------ rendering


def _cell(value: float | None, digits: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return format(value, digits)


def _memory_cell(memory: tuple[str, float] | None) -> str:
    if memory is None:
        return "—"
    suffix = {"peak_allocated_mb": "", "gpu_process_mb": " (proc)", "process_mb": " (RSS)"}[memory[0]]
    return f"{memory[1]:,.0f}{suffix}"


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


_ROLE_STYLE = {"recommended": "bold green", "frontier": "cyan", "dominated": "", "excluded": "dim"}


def print_recommendation(recommendation: Recommendation, console: Console) -> None:
    """One rich table per (model, batch) group: every runtime, its figures, its role and the reason."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"resbench recommend — {_constraints_line(recommendation.constraints)}", highlight=False,
                  markup=False)
    for group in recommendation.groups:
        chosen = group.recommended
        verdict = f"recommend {chosen.label}" if chosen else "no runtime meets the constraints"
        table = Table(title=escape(f"{group.title}: {verdict}"), title_justify="left",
                      caption=(f"Pareto over: {', '.join(group.dimensions)}" if group.dimensions else None),
                      caption_justify="left")
        for header, justify in (("runtime", "left"), ("role", "left"), ("p99 ms", "right"),
                                ("median ms", "right"), ("img/s", "right"), ("memory MB", "right"),
                                ("prepare s", "right"), ("cosine", "right"), ("why", "left")):
            table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for runtime in group.runtimes:
            row = runtime.row
            memory = constraint_memory(row)
            style = _ROLE_STYLE[runtime.role]
            role = f"[{style}]{runtime.role}[/]" if style else runtime.role
            table.add_row(
                escape(runtime.label), role,
                _cell(row.latency_ms.p99 if row.latency_ms else None, ".3f"),
                _cell(row.latency_ms.median if row.latency_ms else None, ".3f"),
                _cell(row.throughput_ips, ",.1f"),
                _memory_cell(memory),
                _cell(row.prepare_s, ".2f"),
                _cell(row.parity.cosine if row.parity else None, ".6f"),
                escape(runtime.reason),
            )
        console.print(table)
        for note in group.notes:
            console.print(f"  note: {note}", highlight=False, markup=False)
