"""`resbench recommend --scenario S`: which runtime to deploy for a LoadGen scenario, and why the others lost.

Per (model, image size), every serving row of the scenario is a candidate runtime (a backend with its
options, in one dtype):
- server: the highest QPS whose p99 held the bound in every Server run at that QPS (the peak search's
  probes and the row's own, full-length run: a peak whose full run missed falls back to the next QPS that
  held), so `--max-p99-ms` tighter than the run's bound still finds the highest QPS that met it; a looser
  one is capped by the run's own bound, which is what LoadGen judged.
- offline: the highest samples/s.
- single-stream: the lowest p90 latency (LoadGen's SingleStream metric); `--max-p99-ms` bounds its p99.
Excluded, with the reason: rows that did not run; a runtime whose latency rows in the same run fail
parity (a fast wrong answer is not a candidate); own memory (`memory.backend_mb`) over --max-memory-gb
(a row without the figure is kept, and a note says so); no run under the bound.
Doubt, as for latency rows (resbench/recommend.py): a row whose LoadGen runs were measured under contention
or throttling (doubts.py) is ranked on its figure but marked, and when it is the pick its reason says so and
names the best clean runtime; a note under the table says to rerun on a quiet machine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from resbench.doubts import doubts
from resbench.errors import UsageError, one_of
from resbench.recommend import memory_exclusion
from resbench.report.tables import status_reason
from resbench.results import ResultRow, RunFile
from resbench.suite import SCENARIOS


@dataclass(frozen=True)
class Candidate:
    row: ResultRow
    value: float | None          # the objective's figure (QPS, samples/s or p90 ms); None: excluded
    reason: str
    p99_ms: float | None = None  # of the run the figure comes from (server: the qualifying run)

    @property
    def label(self) -> str:
        return f"{self.row.backend_label} {self.row.dtype}"

    @property
    def doubts(self) -> list[str]:
        """The row's timing doubts ('busy', 'GPU shared', 'throttled'); none for a row that did not run."""
        return doubts(self.row) if self.row.status == "ok" else []


@dataclass(frozen=True)
class ScenarioGroup:
    model: str
    image_size: int
    scenario: str
    candidates: tuple[Candidate, ...]   # the recommendation first (when any), then by figure, then excluded
    notes: tuple[str, ...] = ()

    @property
    def recommended(self) -> Candidate | None:
        first = self.candidates[0] if self.candidates else None
        return first if first is not None and first.value is not None else None


def _qps_under(row: ResultRow, max_p99_ms: float | None) -> tuple[float | None, float | None, str]:
    """(QPS, its p99, why): the highest target QPS at which every Server run of the row (the peak search's
    probes and the row's own run) met the bound and --max-p99-ms."""
    serving = row.serving
    own_qps = serving.target_qps  # the summary's, rounded; with a search the row's run is at a probe's QPS
    if serving.peak is not None and serving.peak.probes:
        own_qps = serving.peak.peak_qps or min(p.target_qps for p in serving.peak.probes)
    runs = [(own_qps, serving.latency_ms.p99, bool(serving.bound_held))]
    if serving.peak is not None:
        runs += [(p.target_qps, p.p99_ms, p.held) for p in serving.peak.probes]

    def met(p99: float | None, held: bool) -> bool:
        return held and p99 is not None and (max_p99_ms is None or p99 <= max_p99_ms)

    by_qps: dict[float, list[tuple[float | None, bool]]] = {}
    for qps, p99, held in runs:
        if qps:
            by_qps.setdefault(qps, []).append((p99, held))
    fitting = [(qps, max(p99 for p99, _ in results)) for qps, results in by_qps.items()
               if all(met(p99, held) for p99, held in results)]
    if fitting:
        return *max(fitting), ""
    limit = f"p99 <= {max_p99_ms:g} ms and the {serving.latency_bound_ms:g} ms bound" if max_p99_ms else \
        f"the {serving.latency_bound_ms:g} ms p99 bound"
    tried = ", ".join(f"{qps:,.4g} QPS: p99 {p99:.3g} ms" for qps, p99, _ in runs if qps and p99 is not None)
    return None, None, f"no Server run met {limit} ({tried or 'no run'})"


def _judge(row: ResultRow, failing_parity: set[tuple], max_p99_ms: float | None,
           max_memory_gb: float | None = None) -> Candidate:
    if row.status != "ok" or row.serving is None:
        return Candidate(row, None, status_reason(row))
    if (row.model, row.backend_label, row.dtype) in failing_parity:
        return Candidate(row, None, "fails parity in this run's latency rows")
    if over := memory_exclusion(row, max_memory_gb):
        return Candidate(row, None, over)
    serving = row.serving
    if serving.scenario == "server":
        value, p99, why = _qps_under(row, max_p99_ms)
        if value is not None and not serving.bound_held:
            why = (f"{value:,.4g} QPS: the highest held in every run (the row's own run at "
                   f"{serving.target_qps:,.4g} QPS missed)")
        return Candidate(row, value, why or f"{value:,.4g} QPS under the bound", p99)
    if max_p99_ms is not None and (serving.latency_ms.p99 is None or serving.latency_ms.p99 > max_p99_ms):
        return Candidate(row, None, f"p99 {serving.latency_ms.p99} ms > --max-p99-ms {max_p99_ms:g}",
                         serving.latency_ms.p99)
    if serving.scenario == "offline":
        return Candidate(row, serving.samples_per_s, f"{serving.samples_per_s:,.1f} samples/s", serving.latency_ms.p99)
    return Candidate(row, serving.latency_ms.p90, f"p90 {serving.latency_ms.p90:.3f} ms", serving.latency_ms.p99)


def recommend_scenario(run: RunFile, scenario: str, *, dtype: str | None = None,
                       max_p99_ms: float | None = None, max_memory_gb: float | None = None) -> list[ScenarioGroup]:
    if scenario not in SCENARIOS:
        raise UsageError(f"--scenario {scenario!r} is not allowed; {one_of(SCENARIOS)}")
    for flag, value in (("--max-p99-ms", max_p99_ms), ("--max-memory-gb", max_memory_gb)):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} {value} is not allowed; it must be > 0")
    rows = [row for row in run.rows if row.scenario == scenario and (dtype is None or row.dtype == dtype)]
    if not rows:
        present = sorted({row.scenario for row in run.rows if row.scenario})
        raise UsageError(f"--scenario {scenario}{f' --dtype {dtype}' if dtype else ''} matches no serving row in "
                         f"the run; scenarios in it: {', '.join(present) or '(none: the suite has no serving block)'}")
    failing_parity = {(row.model, row.backend_label, row.dtype) for row in run.rows
                      if row.scenario is None and row.parity is not None and not row.parity.passed}
    groups: dict[tuple[str, int], list[Candidate]] = {}
    for row in rows:
        groups.setdefault((row.model, row.image_size), []).append(_judge(row, failing_parity, max_p99_ms,
                                                                        max_memory_gb))
    lower_is_better = scenario == "single-stream"
    out = []
    for (model, image_size), candidates in groups.items():
        ranked = sorted((c for c in candidates if c.value is not None),
                        key=lambda c: c.value if lower_is_better else -c.value)
        excluded = [c for c in candidates if c.value is None]
        notes: tuple[str, ...] = ()
        if any(c.doubts for c in ranked):
            ranked[0] = _with_caution(ranked[0], [c for c in ranked if not c.doubts], scenario)
            notes = (DOUBT_NOTE,)
        unchecked = [c.label for c in ranked if c.row.memory.backend_mb is None]
        if max_memory_gb is not None and unchecked:
            notes += (f"--max-memory-gb not checked for {', '.join(unchecked)}: no per-backend memory figure",)
        out.append(ScenarioGroup(model, image_size, scenario, tuple(ranked + excluded), notes))
    return out


DOUBT_NOTE = ("runtimes with entries under 'doubts' were served under contention or throttling (their LoadGen "
              "figures include whatever else the machine did); rerun on a quiet machine (resbench run "
              "--wait-idle SECONDS, or --strict to fail such rows) before trusting their ranking")


def _with_caution(pick: Candidate, clean: list[Candidate], scenario: str) -> Candidate:
    """The pick, its reason saying when it was measured with doubts and which clean runtime is best."""
    if not pick.doubts:
        return pick
    caution = f"; caution: measured with warnings ({', '.join(pick.doubts)})"
    if clean:
        caution += f"; the best clean runtime is {clean[0].label} ({_figure(clean[0], scenario)})"
    return dataclasses.replace(pick, reason=pick.reason + caution)


def _figure(candidate: Candidate, scenario: str) -> str:
    if candidate.value is None:
        return "—"
    return f"p90 {candidate.value:.3f} ms" if scenario == "single-stream" else f"{candidate.value:,.1f}"


def print_scenario_recommendation(groups: Sequence[ScenarioGroup], console, max_p99_ms: float | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    objective = {"server": "highest QPS under the p99 bound", "offline": "highest samples/s",
                 "single-stream": "lowest p90 latency"}
    for group in groups:
        chosen = group.recommended
        limit = f", p99 <= {max_p99_ms:g} ms" if max_p99_ms else ""
        verdict = f"recommend {chosen.label}" if chosen else "no runtime meets the constraints"
        title = f"{group.model} ({group.image_size}px), {group.scenario}: {objective[group.scenario]}{limit}: {verdict}"
        table = Table(title=escape(title), title_justify="left")
        for header in ("runtime", "role", "figure", "p99 ms", "LoadGen", "doubts", "why"):
            table.add_column(header, overflow="fold")
        for candidate in group.candidates:
            role = ("[bold green]recommended[/]" if candidate is chosen else
                    "ranked" if candidate.value is not None else "[dim]excluded[/]")
            why = candidate.reason
            if candidate.value is not None and chosen is not None and candidate is not chosen:
                gap = candidate.value / chosen.value - 1.0
                why += f" ({gap:+.1%} vs the recommendation)"
            serving = candidate.row.serving
            table.add_row(escape(candidate.label), role, _figure(candidate, group.scenario),
                          "—" if candidate.p99_ms is None else f"{candidate.p99_ms:.3f}",
                          "—" if serving is None else serving.result,
                          f"[yellow]{escape(', '.join(candidate.doubts))}[/]" if candidate.doubts else "",
                          escape(why))
        console.print(table)
        for note in group.notes:
            console.print(f"  note: {note}", highlight=False, markup=False)
