"""The regression gate: two run files in, one verdict per case out, and an exit code.

Cases are matched by identity (model, backend and options, batch, dtype, image size, memory format,
timing mode). Each timing verdict is decided from the raw samples, never from the stored medians (run
files are validated on load: every sample is a finite, positive number of milliseconds):

- Δ = stat(candidate) / stat(baseline) - 1, where stat is the median (or a nearest-rank percentile);
- a 99% percentile-bootstrap CI of Δ (scipy.stats.bootstrap, 10,000 resamples of each side independently,
  seeded from the case identity so a verdict never changes between invocations);
- a two-sided Mann-Whitney U test on the two sample sets (scipy.stats.mannwhitneyu; median only),
  significant when p < alpha = 0.002 / m, m = the number of cases compared (Bonferroni: at most a 0.2%
  chance that a comparison of two equal runs flags any case, however many cases the suite has).

| verdict      | rule (min_effect = the --fail-on percentage, 5% for the median by default)                |
|--------------|-------------------------------------------------------------------------------------------|
| SLOWER       | every candidate sample > every baseline sample x (1 + min_effect), at any n; or p < alpha  |
|              | and Δ >= +min_effect and CI low > 0 (and the same verdict in SM-clock cycles)              |
| FASTER       | the mirror image (and the same in cycles)                                                  |
| INSUFFICIENT | too few samples for any verdict: the rank test cannot reach p < alpha at these n (or a     |
|              | percentile has < 5 samples beyond it), or a baseline measured under contention that the    |
|              | candidate does not beat by SLOWER; fails the gate unless --allow-insufficient             |
| SAME         | the whole CI inside (-min_effect, +min_effect)                                             |
| AMBIGUOUS    | anything else; also: a throttled row, time and cycle verdicts disagreeing                  |

Percentile gates (p90/p95/p99) use the bootstrap CI as their test (no rank test: Mann-Whitney tests a
shift of the whole distribution, not of a tail) and need >= 5 samples beyond the percentile on each side
(p99: 500 samples). Exit code: 1 when any gated metric is SLOWER or INSUFFICIENT (unless allowed), a case
broke (ran in the baseline, not in the candidate), parity went from pass to fail, or memory grew past
`memory:N%`; otherwise 0. Input and usage errors raise ResbenchError (exit 2), so a missing baseline is
never a pass.

A baseline row measured under contention (`system.contended`: other processes took its cores, or held its
GPU) was slowed by them, so a regression can hide behind it: a candidate reading SAME, FASTER or AMBIGUOUS
against it is not judged (INSUFFICIENT, the reason in its notes). Contention only slows a measurement, so
a SLOWER verdict stands (failing is safe: rerun), and a busy candidate that still reads SAME or FASTER
against a quiet baseline is at least that fast: it is judged as usual."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from resbench.errors import RunFileError, UsageError, one_of
from resbench.results import ResultRow, RunFile
from resbench.stats import median as sorted_median
from resbench.stats import nearest_rank
from resbench.system import is_contention_warning

# ------------------------------------------------------------------------------------------ the rules

P_THRESHOLD = 0.002                 # asv's significance level, here for the whole comparison (Bonferroni)
CI_LEVEL = 0.99                     # coverage of the bootstrap CI of Δ
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_MAX_SAMPLES = 2_000       # larger sides are thinned to this many order statistics (_thinned)
BOOTSTRAP_BATCH_VALUES = 4_000_000  # resampled values held at once per side (32 MB of float64)
MIN_TAIL_SAMPLES = 5                # samples beyond a percentile, per side, before a percentile gate decides
DEFAULT_THRESHOLDS: dict[str, float] = {"median": 0.05}   # asv's default min_effect (asv #456)
TIMING_METRICS: tuple[str, ...] = ("median", "p90", "p95", "p99")
GATE_METRICS: tuple[str, ...] = (*TIMING_METRICS, "memory")
MEMORY_KINDS: tuple[str, ...] = ("gpu_process_mb", "peak_allocated_mb", "process_mb")   # preference order
# Environment keys that differ between any two runs and say nothing about the machine or the stack.
VOLATILE_ENV_KEYS = frozenset({"created", "git_sha", "git_dirty", "git_branch", "resbench", "argv", "command",
                               "started", "finished", "duration_s", "run_id", "pid", "out", "suite_path"})
# Per-machine detail of Ray runs and merged shards (node ids, each file's time): the top-level keys hold
# the machines' common values (ray_cluster.py, merge.py), which are compared.
PER_MACHINE_ENV_KEYS = frozenset({"nodes", "merged_from"})
# The load probe at a run's start (load average, other processes' cores): a moment, not the machine, and
# different in any two runs; each row carries its own contention record (`system`).
VOLATILE_ENV_PREFIXES: tuple[str, ...] = ("system.at_start.",)


class Verdict(str, Enum):
    SAME = "SAME"
    FASTER = "FASTER"
    SLOWER = "SLOWER"
    AMBIGUOUS = "AMBIGUOUS"
    INSUFFICIENT = "INSUFFICIENT"  # too few samples for any verdict: fails the gate (--allow-insufficient)
    BROKEN = "BROKEN"          # ok in the baseline, not ok (failed, oom, skipped...) in the candidate
    FIXED = "FIXED"            # not ok in the baseline, ok in the candidate
    NOT_RUN = "NOT_RUN"        # not ok on both sides
    MISSING = "MISSING"        # in the baseline only
    NEW = "NEW"                # in the candidate only


# ------------------------------------------------------------------------------------------ --fail-on

_FAIL_ON = re.compile(r"^\s*([a-z0-9]+)\s*:\s*([0-9]*\.?[0-9]+)\s*%\s*$")


def parse_fail_on(spec: str) -> tuple[str, float]:
    """`median:5%` -> ("median", 0.05). Raises UsageError naming the bad spec and the allowed metrics."""
    match = _FAIL_ON.match(spec)
    if match is None:
        raise UsageError(f"--fail-on {spec!r} is not METRIC:PERCENT% (e.g. median:5%); "
                         f"METRIC is {one_of(GATE_METRICS)}")
    metric, percent = match.group(1), float(match.group(2))
    if metric not in GATE_METRICS:
        raise UsageError(f"--fail-on {spec!r}: unknown metric {metric!r}; {one_of(GATE_METRICS)}")
    if not 0 < percent < 1000:
        raise UsageError(f"--fail-on {spec!r}: the percentage must be > 0 and < 1000 (got {percent:g}%)")
    return metric, percent / 100.0


def thresholds_from_specs(specs: Sequence[str]) -> dict[str, float]:
    """The gate's thresholds: median:5% unless overridden, plus every --fail-on given."""
    given: dict[str, float] = {}
    for spec in specs:
        metric, fraction = parse_fail_on(spec)
        if metric in given:
            raise UsageError(f"--fail-on {spec!r}: metric {metric!r} is given twice; give each metric once")
        given[metric] = fraction
    return {**DEFAULT_THRESHOLDS, **given}


# ------------------------------------------------------------------------------------------ statistics


def statistic(samples: Sequence[float], metric: str) -> float:
    """The median (two middle samples averaged for even n) or a nearest-rank percentile, as stats.py."""
    ordered = sorted(samples)
    if metric == "median":
        return sorted_median(ordered)
    return nearest_rank(ordered, float(metric[1:]))


def _statistic_along(values: np.ndarray, metric: str, axis: int = -1) -> np.ndarray:
    """`statistic` of every slice along `axis` (numpy's inverted_cdf percentile is the nearest rank)."""
    if metric == "median":
        return np.median(values, axis=axis)
    return np.percentile(values, float(metric[1:]), axis=axis, method="inverted_cdf")


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test: scipy.stats.mannwhitneyu, method 'auto' (exact when a
    side has <= 8 samples and there are no ties, else the normal approximation with tie and continuity
    correction)."""
    from scipy.stats import mannwhitneyu

    if len(x) == 0 or len(y) == 0:
        return 1.0
    return float(mannwhitneyu(x, y, alternative="two-sided", method="auto").pvalue)


@functools.lru_cache(maxsize=4096)
def smallest_p_value(n_base: int, n_cand: int) -> float:
    """The smallest two-sided p-value the U test can give for these sample sizes (complete separation,
    no ties). When even that is >= alpha, no data of these sizes can show a difference: INSUFFICIENT.
    Sides beyond 1,000 samples are counted as 1,000 (p only falls with n; the test is then decisive)."""
    a, b = min(n_base, 1000), min(n_cand, 1000)
    return mann_whitney_u(np.arange(a, dtype=float), np.arange(a, a + b, dtype=float))


def _thinned(ordered: np.ndarray, limit: int = BOOTSTRAP_MAX_SAMPLES) -> np.ndarray:
    """At most `limit` evenly spaced order statistics of sorted samples (all of them when n <= limit).

    Bootstrapping n samples costs O(resamples x n): 35 s for 100,000 samples a side on 2 cores. The
    thinned set has the same distribution at a coarser grain, so its bootstrap CI is that of a
    `limit`-sample run: wider than the full set's, never narrower (a conservative gate)."""
    n = len(ordered)
    if n <= limit:
        return ordered
    return ordered[((np.arange(limit) + 0.5) * n / limit).astype(np.int64)]


def bootstrap_delta_ci(base: Sequence[float], cand: Sequence[float], metric: str, seed: int,
                       level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap CI of stat(cand)/stat(base) - 1, resampling each side independently
    (scipy.stats.bootstrap, seeded so that a verdict never changes between invocations)."""
    from scipy.stats import bootstrap

    b = _thinned(np.sort(np.asarray(base, dtype=float)))
    c = _thinned(np.sort(np.asarray(cand, dtype=float)))

    def delta(base_resample: np.ndarray, cand_resample: np.ndarray, axis: int = -1) -> np.ndarray:
        return _statistic_along(cand_resample, metric, axis) / _statistic_along(base_resample, metric, axis) - 1.0

    batch = max(1, BOOTSTRAP_BATCH_VALUES // max(len(b), len(c)))   # bounds memory: batch x n floats a side
    result = bootstrap((b, c), delta, n_resamples=resamples, batch=batch, vectorized=True, paired=False,
                       confidence_level=level, method="percentile", **_seeded(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _seeded(seed: int) -> dict[str, np.random.Generator]:
    """scipy >= 1.15 takes `rng`; older releases `random_state`."""
    import inspect

    from scipy.stats import bootstrap

    name = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


# ------------------------------------------------------------------------------------------ one metric


@dataclass(frozen=True)
class MetricVerdict:
    metric: str                          # median | p90 | p95 | p99
    base_ms: float
    cand_ms: float
    delta: float                         # cand / base - 1
    ci: tuple[float, float] | None       # 99% CI of delta
    p_value: float | None                # Mann-Whitney U (median only)
    min_effect: float
    gated: bool                          # a --fail-on threshold applies (a SLOWER verdict fails the gate)
    verdict: Verdict
    reason: str = ""                     # why, for anything but a clean decision


def _seed(identity: tuple, metric: str) -> int:
    """One seed per case and metric, shared by the time and cycle decisions: with equal clocks on both
    sides the two bootstrap CIs are then identical and cannot disagree by resampling noise."""
    return zlib.crc32(repr((identity, metric)).encode())


@dataclass(frozen=True)
class Decision:
    """One metric's verdict from two raw sample sets, before telemetry (throttling, clocks) is consulted."""

    verdict: Verdict
    delta: float                         # cand / base - 1
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    reason: str = ""
    separated: bool = False              # decided by complete separation beyond the threshold


def _separation(base: Sequence[float], cand: Sequence[float], min_effect: float) -> Verdict | None:
    """SLOWER when every candidate sample is slower than every baseline sample by more than min_effect
    (FASTER for the mirror image): no test is needed to see it, and no sample count excuses passing it."""
    if min(cand) > max(base) * (1.0 + min_effect):
        return Verdict.SLOWER
    if max(cand) < min(base) * (1.0 - min_effect):
        return Verdict.FASTER
    return None


def decide(base: Sequence[float], cand: Sequence[float], metric: str, min_effect: float, seed: int,
           alpha: float = P_THRESHOLD) -> Decision:
    """The verdict for one metric from two raw sample sets (positive and finite: results.py checks them
    on load); `alpha` is the rank test's significance level (already divided by the number of cases)."""
    n_base, n_cand = len(base), len(cand)
    if min(n_base, n_cand) == 0:
        return Decision(Verdict.INSUFFICIENT, math.nan, reason="no raw samples stored")
    delta = statistic(cand, metric) / statistic(base, metric) - 1.0
    separated = _separation(base, cand, min_effect)
    separation = ""
    if separated is not None:
        side = "slower" if separated is Verdict.SLOWER else "faster"
        separation = (f"every candidate sample is more than {min_effect:.0%} {side} than every baseline sample "
                      f"(n={n_base} vs {n_cand})")
    floor = smallest_p_value(n_base, n_cand) if metric == "median" else 0.0
    too_few = ""
    if floor >= alpha:
        too_few = (f"too few samples to decide (n={n_base} vs {n_cand}): the rank test cannot reach "
                   f"p < {alpha:.2g} with so few (its smallest p is {floor:.2g})")
    elif metric != "median":
        tail = 1.0 - float(metric[1:]) / 100.0
        need = math.ceil(MIN_TAIL_SAMPLES / tail - 1e-9)
        if min(n_base, n_cand) < need:
            too_few = f"too few samples for {metric} (n={n_base} vs {n_cand}; need >= {need} a side)"
    if too_few:
        if separated is not None:
            return Decision(separated, delta, reason=separation, separated=True)
        return Decision(Verdict.INSUFFICIENT, delta, reason=too_few)
    ci = bootstrap_delta_ci(base, cand, metric, seed)
    p_value = mann_whitney_u(base, cand) if metric == "median" else None
    significant = p_value is None or p_value < alpha
    if significant and delta >= min_effect and ci[0] > 0:
        verdict, reason = Verdict.SLOWER, ""
    elif significant and delta <= -min_effect and ci[1] < 0:
        verdict, reason = Verdict.FASTER, ""
    elif -min_effect < ci[0] and ci[1] < min_effect:
        verdict, reason = Verdict.SAME, ""
    elif p_value is not None and not significant and abs(delta) >= min_effect:
        verdict, reason = Verdict.AMBIGUOUS, f"not significant (p={p_value:.2g} >= alpha {alpha:.2g})"
    else:
        verdict, reason = Verdict.AMBIGUOUS, f"CI [{ci[0]:+.1%}, {ci[1]:+.1%}] crosses ±{min_effect:.0%}"
    if separated is not None and verdict is not separated:   # the separation decides
        verdict, reason = separated, separation
    return Decision(verdict, delta, ci, p_value, reason, separated=separated is not None)


def _sm_clock(row: ResultRow) -> float | None:
    """The median SM clock (MHz) recorded for a row (telemetry.summarize: `{min, median, max}`), or None
    without clock telemetry."""
    clocks = row.telemetry.get("sm_clock_mhz")
    median = clocks.get("median") if isinstance(clocks, dict) else None
    if not isinstance(median, int | float) or isinstance(median, bool) or not median > 0:
        return None
    return float(median)


def compare_metric(base: ResultRow, cand: ResultRow, metric: str, min_effect: float,
                   gated: bool, alpha: float = P_THRESHOLD) -> MetricVerdict:
    identity = base.identity
    decision = decide(base.samples_ms, cand.samples_ms, metric, min_effect, _seed(identity, metric), alpha)
    verdict, reason = decision.verdict, decision.reason
    base_ms = statistic(base.samples_ms, metric) if base.samples_ms else math.nan
    cand_ms = statistic(cand.samples_ms, metric) if cand.samples_ms else math.nan
    throttled = [side for side, row in (("baseline", base), ("candidate", cand))
                 if row.telemetry.get("throttled")]
    if decision.separated:
        # Decisive whatever the telemetry says (a candidate slower in every sample must never pass); what
        # the telemetry saw goes into the reason. A one-off clock drop is what the CI workflow's rerun in
        # the reverse order filters out.
        clock_base, clock_cand = _sm_clock(base), _sm_clock(cand)
        seen = [f"{' and '.join(throttled)} throttled"] if throttled else []
        if clock_base is not None and clock_cand is not None and abs(clock_cand / clock_base - 1) > 0.02:
            seen.append(f"SM clock {clock_base:.0f} -> {clock_cand:.0f} MHz")
        if seen:
            reason = "; ".join([*([reason] if reason else []), f"note: {', '.join(seen)}"])
    elif verdict is Verdict.INSUFFICIENT:
        pass
    elif throttled:
        verdict, reason = Verdict.AMBIGUOUS, f"{' and '.join(throttled)} throttled"
    elif verdict is not Verdict.AMBIGUOUS:
        clock_base, clock_cand = _sm_clock(base), _sm_clock(cand)
        if clock_base is not None and clock_cand is not None:
            cycles_verdict = decide([s * clock_base for s in base.samples_ms],
                                    [s * clock_cand for s in cand.samples_ms], metric, min_effect,
                                    _seed(identity, metric), alpha).verdict
            if cycles_verdict is not verdict:
                reason = (f"time says {verdict.value}, SM-clock cycles say {cycles_verdict.value} "
                          f"(clock {clock_base:.0f} -> {clock_cand:.0f} MHz)")
                verdict = Verdict.AMBIGUOUS
    if verdict is Verdict.FASTER and cand.parity is not None and not cand.parity.passed:
        verdict, reason = Verdict.AMBIGUOUS, "candidate fails parity; its speedup is not reported"
    return MetricVerdict(metric, base_ms, cand_ms, decision.delta, decision.ci, decision.p_value, min_effect,
                         gated, verdict, reason)


# ------------------------------------------------------------------------------------------ one case


def memory_figure(row: ResultRow, kind: str | None = None) -> tuple[str, float] | None:
    """(kind, MB) of a row's memory: NVML process GPU memory, else the allocator peak, else process RSS."""
    for candidate in (kind,) if kind else MEMORY_KINDS:
        value = getattr(row.memory, candidate)
        if value is not None and value > 0:
            return candidate, float(value)
    return None


@dataclass(frozen=True)
class MemoryDelta:
    kind: str
    base_mb: float
    cand_mb: float
    threshold: float | None              # set when gated by --fail-on memory:N%

    @property
    def delta(self) -> float:
        return self.cand_mb / self.base_mb - 1.0

    @property
    def regressed(self) -> bool:
        return self.threshold is not None and self.delta > self.threshold


def memory_delta(base: ResultRow, cand: ResultRow, threshold: float | None) -> MemoryDelta | None:
    """The same kind of memory figure on both sides (the first kind both rows have), or None."""
    for kind in MEMORY_KINDS:
        b, c = memory_figure(base, kind), memory_figure(cand, kind)
        if b is not None and c is not None:
            return MemoryDelta(kind, b[1], c[1], threshold)
    return None


@dataclass(frozen=True)
class CaseComparison:
    identity: tuple
    base: ResultRow | None
    cand: ResultRow | None
    verdict: Verdict
    metrics: tuple[MetricVerdict, ...] = ()
    memory: MemoryDelta | None = None
    parity_change: str | None = None     # "pass -> FAIL" | "fail -> pass"
    notes: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()       # other reasons it fails the gate (serving: a bound held -> missed)
    unjudged: str | None = None          # why the gate cannot judge it beyond its metrics (a busy baseline)

    @property
    def row(self) -> ResultRow:
        return self.cand or self.base  # type: ignore[return-value]

    @property
    def primary(self) -> MetricVerdict | None:
        return next((m for m in self.metrics if m.metric == "median"), None)

    @property
    def parity_regressed(self) -> bool:
        return self.parity_change == "pass -> FAIL"

    @property
    def regressions(self) -> list[str]:
        """Why this case fails the gate (empty when it does not)."""
        why = []
        if self.verdict is Verdict.BROKEN:
            why.append(f"{self.cand.status if self.cand else 'gone'} in the candidate")
        why += [f"{m.metric} {m.delta:+.1%} (SLOWER, threshold {m.min_effect:.0%})"
                for m in self.metrics if m.gated and m.verdict is Verdict.SLOWER]
        if self.memory is not None and self.memory.regressed:
            memory = self.memory
            why.append(f"memory {memory.delta:+.1%} ({memory.kind}, threshold {memory.threshold:.0%})")
        if self.parity_regressed:
            why.append("parity pass -> FAIL")
        return why + list(self.failures)

    @property
    def undecided(self) -> list[str]:
        """Gated metrics with too few samples for any verdict (INSUFFICIENT): they fail the gate unless
        --allow-insufficient."""
        undecided = [f"{m.metric}: too few samples to judge (INSUFFICIENT)" for m in self.metrics
                     if m.gated and m.verdict is Verdict.INSUFFICIENT]
        return undecided + ([self.unjudged] if self.unjudged else [])


def _parity_change(base: ResultRow, cand: ResultRow) -> str | None:
    if base.parity is None or cand.parity is None or base.parity.passed == cand.parity.passed:
        return None
    return "pass -> FAIL" if base.parity.passed else "fail -> pass"


def busy_baseline(case: CaseComparison) -> CaseComparison:
    """A case whose baseline row was measured under contention is not judged unless it regressed
    (module docstring): INSUFFICIENT, with the baseline's contention warning as the reason."""
    base = case.base
    if base is None or case.cand is None or base.status != "ok" or not base.system.get("contended") \
            or case.regressions:
        return case
    warning = next((w for w in base.warnings if is_contention_warning(w)), "contended")
    reason = (f"baseline measured under contention ({warning}): a regression could hide behind its slowed "
              f"samples; measure the baseline on a quiet machine (--wait-idle, --strict)")
    return dataclasses.replace(case, verdict=Verdict.INSUFFICIENT, notes=(*case.notes, reason), unjudged=reason)


def compare_case(base: ResultRow | None, cand: ResultRow | None, thresholds: dict[str, float],
                 alpha: float = P_THRESHOLD) -> CaseComparison:
    identity = (base or cand).identity  # type: ignore[union-attr]
    if cand is None:
        return CaseComparison(identity, base, None, Verdict.MISSING)
    if base is None:
        return CaseComparison(identity, None, cand, Verdict.NEW)
    if base.status != "ok" or cand.status != "ok":
        if base.status == "ok":
            verdict, note = Verdict.BROKEN, f"candidate {cand.status}: {cand.reason or 'no reason given'}"
        elif cand.status == "ok":
            verdict, note = Verdict.FIXED, f"baseline was {base.status}: {base.reason or 'no reason given'}"
        else:
            verdict = Verdict.NOT_RUN
            note = f"{base.status} -> {cand.status}: {cand.reason or 'no reason given'}"
        return CaseComparison(identity, base, cand, verdict, notes=(note,))
    if base.scenario is not None:  # a serving row: LoadGen's figures, no raw samples
        from resbench.serving.compare import compare_serving

        return compare_serving(identity, base, cand, thresholds)
    metrics = [compare_metric(base, cand, "median", thresholds.get("median", DEFAULT_THRESHOLDS["median"]),
                              gated="median" in thresholds, alpha=alpha)]
    metrics += [compare_metric(base, cand, m, thresholds[m], gated=True, alpha=alpha)
                for m in TIMING_METRICS[1:] if m in thresholds]
    gated = [m.verdict for m in metrics if m.gated]
    verdict = next((v for v in (Verdict.SLOWER, Verdict.INSUFFICIENT) if v in gated), metrics[0].verdict)
    notes = tuple(m.reason if m.metric == "median" else f"{m.metric}: {m.reason}"
                  for m in metrics if m.reason)
    return CaseComparison(identity, base, cand, verdict, tuple(metrics),
                          memory_delta(base, cand, thresholds.get("memory")), _parity_change(base, cand),
                          notes)


# ------------------------------------------------------------------------------------------ two runs


def environment_differences(base: RunFile, cand: RunFile) -> list[str]:
    """One line per environment key (GPU, driver, versions, ...) whose value differs between the runs."""
    flat_base, flat_cand = _flatten(base.env), _flatten(cand.env)
    lines = []
    for key in sorted(set(flat_base) | set(flat_cand)):
        if key.split(".")[0] in VOLATILE_ENV_KEYS | PER_MACHINE_ENV_KEYS or key.startswith(VOLATILE_ENV_PREFIXES):
            continue
        b, c = flat_base.get(key, "(absent)"), flat_cand.get(key, "(absent)")
        if b != c:
            lines.append(f"{key}: {b} -> {c}")
    return lines


def _flatten(env: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in env.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class Comparison:
    base_name: str
    cand_name: str
    cases: tuple[CaseComparison, ...]
    thresholds: dict[str, float]
    alpha: float = P_THRESHOLD           # the rank test's per-case level: P_THRESHOLD / cases compared
    env_differences: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    allow_insufficient: bool = False     # --allow-insufficient: INSUFFICIENT cases do not fail the gate

    @property
    def regressed(self) -> list[CaseComparison]:
        return [c for c in self.cases if c.regressions]

    @property
    def insufficient(self) -> list[CaseComparison]:
        """Cases the gate could not judge (too few samples) and that are not regressions anyway."""
        return [c for c in self.cases if c.undecided and not c.regressions]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed or (self.insufficient and not self.allow_insufficient) else 0

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.cases)

    @property
    def summary(self) -> str:
        """One line: the gate's result and the verdict counts."""
        regressed, insufficient = self.regressed, self.insufficient
        parts = []
        if regressed:
            parts.append(f"{len(regressed)} regression{'s' if len(regressed) != 1 else ''} "
                         f"({', '.join(case_label(c.identity) for c in regressed)})")
        if insufficient and not self.allow_insufficient:
            why = ("with too few samples to judge" if not any(c.unjudged for c in insufficient)
                   else "it cannot judge (too few samples, or a baseline measured under contention)")
            parts.append(f"{len(insufficient)} case{'s' if len(insufficient) != 1 else ''} {why} "
                         f"({', '.join(case_label(c.identity) for c in insufficient)}; "
                         f"--allow-insufficient accepts them)")
        if parts:
            head = "FAIL: " + ", ".join(parts)
        elif insufficient:
            head = f"PASS ({len(insufficient)} INSUFFICIENT allowed by --allow-insufficient)"
        else:
            head = "PASS"
        counts = ", ".join(f"{self.count(v)} {v.value}" for v in Verdict if self.count(v))
        return f"{head} — {counts}" if counts else head


def compare_runs(base: RunFile, cand: RunFile, thresholds: dict[str, float] | None = None,
                 base_name: str = "baseline", cand_name: str = "candidate", *,
                 allow_insufficient: bool = False) -> Comparison:
    """Match the runs' cases by identity and judge each. Raises RunFileError when no case matches."""
    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    unknown = set(thresholds) - set(GATE_METRICS)
    if unknown:
        raise UsageError(f"unknown gate metric {sorted(unknown)[0]!r}; {one_of(GATE_METRICS)}")
    for name, run in ((base_name, base), (cand_name, cand)):
        refuse_mixed_devices(name, run)
    refuse_another_device(base, cand, base_name, cand_name)
    base_rows = {row.identity: row for row in base.rows}
    cand_rows = {row.identity: row for row in cand.rows}
    if not set(base_rows) & set(cand_rows):
        raise RunFileError(f"{base_name} ({len(base_rows)} cases) and {cand_name} ({len(cand_rows)} cases) "
                           f"share "
                           f"no case (model, backend, batch, dtype, image size, memory format, timing mode); "
                           f"nothing to compare")
    order = list(base_rows) + [key for key in cand_rows if key not in base_rows]
    compared = sum(1 for key in order if key in base_rows and key in cand_rows and base_rows[key].scenario is None
                   and base_rows[key].status == "ok" and cand_rows[key].status == "ok")
    alpha = P_THRESHOLD / max(1, compared)
    cases = tuple(busy_baseline(compare_case(base_rows.get(key), cand_rows.get(key), thresholds, alpha))
                  for key in order)
    warnings = []
    duplicates = len(base.rows) - len(base_rows), len(cand.rows) - len(cand_rows)
    for name, count in zip((base_name, cand_name), duplicates, strict=True):
        if count:
            warnings.append(f"{name} has {count} duplicate case(s); the last of each is compared")
    for name, run in ((base_name, base), (cand_name, cand)):
        if partial := [row.label for row in run.rows if row.partial]:
            shown_labels = ", ".join(partial[:3]) + (f" and {len(partial) - 3} more" if len(partial) > 3 else "")
            warnings.append(f"{name} has {len(partial)} partial row(s), measured in fewer repetitions than its "
                            f"--repeat asked (the run stopped: {shown_labels}); they are compared on the "
                            f"repetitions measured")
    return Comparison(base_name, cand_name, cases, thresholds, alpha,
                      tuple(environment_differences(base, cand)), tuple(warnings), allow_insufficient)


def refuse_mixed_devices(name: str, run: RunFile) -> None:
    """A run measured on several GPU models (a Ray cluster of mixed nodes) is not one baseline: refuse it."""
    devices = run.devices()
    if len(devices) > 1:
        counts = ", ".join(f"{device}: {count} cases" for device, count in sorted(devices.items()))
        raise RunFileError(f"{name} was measured on {len(devices)} device models ({counts}); a gate compares one "
                           f"at a time: split it with `resbench merge {name} --only-device NAME --out PART.json`")


def refuse_another_device(base: RunFile, cand: RunFile, base_name: str, cand_name: str) -> None:
    """Runs measured on different device models (a CPU run against a GPU run, an H100 against an H200) differ
    by the hardware, not by the change under test: the gate cannot judge them, so it refuses (it used to
    warn "environments differ" and could still PASS)."""
    base_devices, cand_devices = set(base.devices()), set(cand.devices())  # one each: refuse_mixed_devices
    if base_devices and cand_devices and base_devices != cand_devices:
        (base_device,), (cand_device,) = base_devices, cand_devices
        raise RunFileError(f"{base_name} was measured on {base_device!r} and {cand_name} on {cand_device!r}; a "
                           f"gate compares runs of one device model: measure both on the same one")


def compare_files(base_path: str, cand_path: str, fail_on: Sequence[str] = (), *,
                  allow_insufficient: bool = False) -> Comparison:
    """`resbench compare`: load both files (a missing or unreadable one is an error, exit 2) and compare."""
    thresholds = thresholds_from_specs(fail_on)
    base = RunFile.load(base_path)
    cand = RunFile.load(cand_path)
    if os.path.samefile(base_path, cand_path):   # it read PASS: a gate that judged nothing
        raise UsageError(f"baseline {base_path!r} and candidate {cand_path!r} are the same file; compare two runs")
    return compare_runs(base, cand, thresholds, base_name=str(base_path), cand_name=str(cand_path),
                        allow_insufficient=allow_insufficient)


def case_label(identity: tuple) -> str:
    """`resnet50 compile[mode=max-autotune] b32 bf16` (+ image size, format, mode when not the defaults);
    a serving case: `resnet50 eager fp32 server`."""
    model, backend, batch, dtype, image_size, memory_format, timing_mode, *scenario = identity
    parts = [model, backend, f"b{batch}", dtype] if not scenario else [model, backend, dtype, scenario[0]]
    if image_size != 224:
        parts.append(f"{image_size}px")
    if memory_format != "channels_last":
        parts.append(memory_format)
    if timing_mode not in ("device", None):
        parts.append(timing_mode)
    return " ".join(str(p) for p in parts)
