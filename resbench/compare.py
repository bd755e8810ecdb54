"""The regression gate: two run files in, one verdict per case out, and an exit code.

Cases are matched by identity (model, backend and options, batch, dtype, image size, memory format,
timing mode). Each timing verdict is decided from the raw samples, never from the stored medians:

- Δ = stat(candidate) / stat(baseline) - 1, where stat is the median (or a nearest-rank percentile);
- a 99% percentile-bootstrap CI of Δ (10,000 resamples per side, drawn exactly from the order-statistic
  distribution, seeded from the case identity so a verdict never changes between invocations);
- a two-sided Mann-Whitney U test on the two sample sets (median only; exact for small samples without
  ties, normal approximation with tie and continuity correction otherwise), significant when
  p < alpha = 0.002 / m, m = the number of cases compared (Bonferroni: at most a 0.2% chance that a
  comparison of two equal runs flags any case, however many cases the suite has).

| verdict   | rule (min_effect = the --fail-on percentage, 5% for the median by default)                   |
|-----------|----------------------------------------------------------------------------------------------|
| SLOWER    | p < alpha and Δ >= +min_effect and CI low > 0 (and the same verdict in SM-clock cycles)      |
| FASTER    | p < alpha and Δ <= -min_effect and CI high < 0 (and the same in cycles)                      |
| SAME      | the whole CI inside (-min_effect, +min_effect)                                                |
| AMBIGUOUS | anything else; also: < 7 samples a side, a throttled row, time and cycle verdicts disagreeing |

Percentile gates (p90/p95/p99) use the bootstrap CI as their test (no rank test: Mann-Whitney tests a
shift of the whole distribution, not of a tail) and need >= 5 samples beyond the percentile on each side
(p99: 500 samples). Exit code: 1 when any gated metric is SLOWER, a case broke (ran in the baseline, not
in the candidate), parity went from pass to fail, or memory grew past `memory:N%`; otherwise 0. Input
and usage errors raise ResbenchError (exit 2), so a missing baseline is never a pass."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from resbench.errors import RunFileError, UsageError, one_of
from resbench.results import ResultRow, RunFile
from resbench.stats import median as sorted_median
from resbench.stats import nearest_rank

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# ------------------------------------------------------------------------------------------ the rules

P_THRESHOLD = 0.002                 # asv's significance level, here for the whole comparison (Bonferroni)
CI_LEVEL = 0.99                     # coverage of the bootstrap CI of Δ
BOOTSTRAP_RESAMPLES = 10_000
MIN_SAMPLES = 7                     # smallest n a side at which an exact two-sided U test reaches p < 0.002
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


class Verdict(str, Enum):
    SAME = "SAME"
    FASTER = "FASTER"
    SLOWER = "SLOWER"
    AMBIGUOUS = "AMBIGUOUS"
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


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties averaged, and the size of every tie group."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    boundaries = np.flatnonzero(np.diff(ordered)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    group_rank = (starts + ends + 1) / 2.0      # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks, ends - starts


def _exact_u_distribution(n1: int, n2: int) -> np.ndarray:
    """Counts of every U in 0..n1*n2 when the ranks are a random permutation (no ties): the coefficients of
    the Gaussian binomial [n1+n2 choose n1]_q, built as prod_i (1 - q^(n2+i)) / (1 - q^i)."""
    counts = np.zeros(n1 * n2 + 1, dtype=np.int64)
    counts[0] = 1
    for i in range(1, n1 + 1):
        shift = n2 + i
        multiplied = counts.copy()
        multiplied[shift:] -= counts[:-shift]
        for k in range(i, len(multiplied)):      # divide by (1 - q^i): b[k] = a[k] + b[k - i]
            multiplied[k] += multiplied[k - i]
        counts = multiplied
    return counts


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (scipy.stats.mannwhitneyu, method='auto', agrees)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranks, ties = _average_ranks(np.concatenate((a, b)))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    has_ties = bool((ties > 1).any())
    if not has_ties and max(n1, n2) <= 8:
        counts = _exact_u_distribution(n1, n2)
        total = float(counts.sum())
        k = int(round(u1))
        p_low, p_high = counts[: k + 1].sum() / total, counts[k:].sum() / total
        return float(min(1.0, 2.0 * min(p_low, p_high)))
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = float((ties.astype(float) ** 3 - ties).sum()) / (n * (n - 1))
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:
        return 1.0
    z = max(0.0, abs(u1 - mu) - 0.5) / math.sqrt(variance)
    return float(min(1.0, math.erfc(z / math.sqrt(2.0))))


def statistic(samples: Sequence[float], metric: str) -> float:
    """The median (two middle samples averaged for even n) or a nearest-rank percentile, as stats.py."""
    ordered = sorted(samples)
    if metric == "median":
        return sorted_median(ordered)
    return nearest_rank(ordered, float(metric[1:]))


def _bootstrap_statistic(ordered: np.ndarray, metric: str, resamples: int,
                         rng: np.random.Generator) -> np.ndarray:
    """`resamples` draws of the statistic of a with-replacement resample of `ordered`, drawn exactly.

    The r-th smallest of n uniform indices into the sorted samples is floor(n * V) with V ~ Beta(r, n+1-r)
    (floor is monotone), so the statistic of a resample costs O(1) instead of O(n)."""
    n = len(ordered)
    if metric == "median":
        k = (n + 1) // 2 if n % 2 else n // 2
        lower = rng.beta(k, n + 1 - k, size=resamples)
        low_value = ordered[np.minimum((lower * n).astype(np.int64), n - 1)]
        if n % 2:
            return low_value
        upper = lower + (1.0 - lower) * rng.beta(1, n - k, size=resamples)
        return 0.5 * (low_value + ordered[np.minimum((upper * n).astype(np.int64), n - 1)])
    rank = max(1, math.ceil(float(metric[1:]) / 100.0 * n))
    draws = rng.beta(rank, n + 1 - rank, size=resamples)
    return ordered[np.minimum((draws * n).astype(np.int64), n - 1)]


def bootstrap_delta_ci(base: Sequence[float], cand: Sequence[float], metric: str, seed: int,
                       level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap CI of stat(cand)/stat(base) - 1, resampling each side independently."""
    rng = np.random.default_rng(seed)
    b = _bootstrap_statistic(np.sort(np.asarray(base, dtype=float)), metric, resamples, rng)
    c = _bootstrap_statistic(np.sort(np.asarray(cand, dtype=float)), metric, resamples, rng)
    deltas = c / b - 1.0
    alpha = 1.0 - level
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


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


Decision = tuple[Verdict, float, tuple[float, float] | None, float | None, str]


def decide(base: Sequence[float], cand: Sequence[float], metric: str, min_effect: float, seed: int,
           alpha: float = P_THRESHOLD) -> Decision:
    """(verdict, Δ, CI, p, reason) for one metric from two raw sample sets; `alpha` is the rank test's
    significance level (already divided by the number of cases)."""
    n_base, n_cand = len(base), len(cand)
    if min(n_base, n_cand) == 0:
        return Verdict.AMBIGUOUS, math.nan, None, None, "no raw samples stored"
    base_stat, cand_stat = statistic(base, metric), statistic(cand, metric)
    delta = cand_stat / base_stat - 1.0 if base_stat > 0 else math.nan
    if not math.isfinite(delta):
        return Verdict.AMBIGUOUS, delta, None, None, "baseline statistic is not positive"
    if min(n_base, n_cand) < MIN_SAMPLES:
        return (Verdict.AMBIGUOUS, delta, None, None,
                f"too few samples (n={n_base} vs {n_cand}; need >= {MIN_SAMPLES} a side)")
    if metric != "median":
        tail = 1.0 - float(metric[1:]) / 100.0
        need = math.ceil(MIN_TAIL_SAMPLES / tail - 1e-9)
        if min(n_base, n_cand) < need:
            return (Verdict.AMBIGUOUS, delta, None, None,
                    f"too few samples for {metric} (n={n_base} vs {n_cand}; need >= {need} a side)")
    ci = bootstrap_delta_ci(base, cand, metric, seed)
    p_value = mann_whitney_u(base, cand) if metric == "median" else None
    significant = p_value is None or p_value < alpha
    if significant and delta >= min_effect and ci[0] > 0:
        return Verdict.SLOWER, delta, ci, p_value, ""
    if significant and delta <= -min_effect and ci[1] < 0:
        return Verdict.FASTER, delta, ci, p_value, ""
    if -min_effect < ci[0] and ci[1] < min_effect:
        return Verdict.SAME, delta, ci, p_value, ""
    if p_value is not None and not significant and abs(delta) >= min_effect:
        reason = f"not significant (p={p_value:.2g} >= alpha {alpha:.2g})"
    else:
        reason = f"CI [{ci[0]:+.1%}, {ci[1]:+.1%}] crosses ±{min_effect:.0%}"
    return Verdict.AMBIGUOUS, delta, ci, p_value, reason


def _sm_clock(row: ResultRow) -> float | None:
    """The median SM clock (MHz) recorded for a row, or None without clock telemetry."""
    clocks = row.telemetry.get("sm_clock_mhz")
    if not isinstance(clocks, list):
        return None
    values = [float(c) for c in clocks if isinstance(c, int | float) and not isinstance(c, bool) and c > 0]
    return sorted_median(sorted(values)) if values else None


def compare_metric(base: ResultRow, cand: ResultRow, metric: str, min_effect: float,
                   gated: bool, alpha: float = P_THRESHOLD) -> MetricVerdict:
    identity = base.identity
    verdict, delta, ci, p_value, reason = decide(base.samples_ms, cand.samples_ms, metric, min_effect,
                                                 _seed(identity, metric), alpha)
    base_ms = statistic(base.samples_ms, metric) if base.samples_ms else math.nan
    cand_ms = statistic(cand.samples_ms, metric) if cand.samples_ms else math.nan
    throttled = [side for side, row in (("baseline", base), ("candidate", cand))
                 if row.telemetry.get("throttled")]
    if throttled:
        verdict, reason = Verdict.AMBIGUOUS, f"{' and '.join(throttled)} throttled"
    elif verdict is not Verdict.AMBIGUOUS:
        clock_base, clock_cand = _sm_clock(base), _sm_clock(cand)
        if clock_base is not None and clock_cand is not None:
            cycles_verdict = decide([s * clock_base for s in base.samples_ms],
                                    [s * clock_cand for s in cand.samples_ms], metric, min_effect,
                                    _seed(identity, metric), alpha)[0]
            if cycles_verdict is not verdict:
                reason = (f"time says {verdict.value}, SM-clock cycles say {cycles_verdict.value} "
                          f"(clock {clock_base:.0f} -> {clock_cand:.0f} MHz)")
                verdict = Verdict.AMBIGUOUS
    if verdict is Verdict.FASTER and cand.parity is not None and not cand.parity.passed:
        verdict, reason = Verdict.AMBIGUOUS, "candidate fails parity; its speedup is not reported"
    return MetricVerdict(metric, base_ms, cand_ms, delta, ci, p_value, min_effect, gated, verdict, reason)


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
        return why


def _parity_change(base: ResultRow, cand: ResultRow) -> str | None:
    if base.parity is None or cand.parity is None or base.parity.passed == cand.parity.passed:
        return None
    return "pass -> FAIL" if base.parity.passed else "fail -> pass"


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
    metrics = [compare_metric(base, cand, "median", thresholds.get("median", DEFAULT_THRESHOLDS["median"]),
                              gated="median" in thresholds, alpha=alpha)]
    metrics += [compare_metric(base, cand, m, thresholds[m], gated=True, alpha=alpha)
                for m in TIMING_METRICS[1:] if m in thresholds]
    gated_slower = any(m.gated and m.verdict is Verdict.SLOWER for m in metrics)
    verdict = Verdict.SLOWER if gated_slower else metrics[0].verdict
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
        if key.split(".")[0] in VOLATILE_ENV_KEYS | PER_MACHINE_ENV_KEYS:
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

    @property
    def regressed(self) -> list[CaseComparison]:
        return [c for c in self.cases if c.regressions]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.cases)

    @property
    def summary(self) -> str:
        """One line: the gate's result and the verdict counts."""
        regressed = self.regressed
        head = (f"FAIL: {len(regressed)} regression{'s' if len(regressed) != 1 else ''} "
                f"({', '.join(case_label(c.identity) for c in regressed)})" if regressed else "PASS")
        counts = ", ".join(f"{self.count(v)} {v.value}" for v in Verdict if self.count(v))
        return f"{head} — {counts}" if counts else head


def compare_runs(base: RunFile, cand: RunFile, thresholds: dict[str, float] | None = None,
                 base_name: str = "baseline", cand_name: str = "candidate") -> Comparison:
    """Match the runs' cases by identity and judge each. Raises RunFileError when no case matches."""
    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    unknown = set(thresholds) - set(GATE_METRICS)
    if unknown:
        raise UsageError(f"unknown gate metric {sorted(unknown)[0]!r}; {one_of(GATE_METRICS)}")
    for name, run in ((base_name, base), (cand_name, cand)):
        refuse_mixed_devices(name, run)
    base_rows = {row.identity: row for row in base.rows}
    cand_rows = {row.identity: row for row in cand.rows}
    if not set(base_rows) & set(cand_rows):
        raise RunFileError(f"{base_name} ({len(base_rows)} cases) and {cand_name} ({len(cand_rows)} cases) "
                           f"share "
                           f"no case (model, backend, batch, dtype, image size, memory format, timing mode); "
                           f"nothing to compare")
    order = list(base_rows) + [key for key in cand_rows if key not in base_rows]
    compared = sum(1 for key in order if key in base_rows and key in cand_rows
                   and base_rows[key].status == "ok" and cand_rows[key].status == "ok")
    alpha = P_THRESHOLD / max(1, compared)
    cases = tuple(compare_case(base_rows.get(key), cand_rows.get(key), thresholds, alpha) for key in order)
    warnings = []
    duplicates = len(base.rows) - len(base_rows), len(cand.rows) - len(cand_rows)
    for name, count in zip((base_name, cand_name), duplicates, strict=True):
        if count:
            warnings.append(f"{name} has {count} duplicate case(s); the last of each is compared")
    return Comparison(base_name, cand_name, cases, thresholds, alpha,
                      tuple(environment_differences(base, cand)), tuple(warnings))


def refuse_mixed_devices(name: str, run: RunFile) -> None:
    """A run measured on several GPU models (a Ray cluster of mixed nodes) is not one baseline: refuse it."""
    devices = run.devices()
    if len(devices) > 1:
        counts = ", ".join(f"{device}: {count} cases" for device, count in sorted(devices.items()))
        raise RunFileError(f"{name} was measured on {len(devices)} device models ({counts}); a gate compares one "
                           f"at a time: split it with `resbench merge {name} --only-device NAME --out PART.json`")


def compare_files(base_path: str, cand_path: str, fail_on: Sequence[str] = ()) -> Comparison:
    """`resbench compare`: load both files (a missing or unreadable one is an error, exit 2) and compare."""
    thresholds = thresholds_from_specs(fail_on)
    base = RunFile.load(base_path)
    cand = RunFile.load(cand_path)
    return compare_runs(base, cand, thresholds, base_name=str(base_path), cand_name=str(cand_path))


# ------------------------------------------------------------------------------------------ rendering


def case_label(identity: tuple) -> str:
    """`resnet50 compile[mode=max-autotune] b32 bf16` (+ image size, format, mode when not the defaults)."""
    model, backend, batch, dtype, image_size, memory_format, timing_mode = identity
    parts = [model, backend, f"b{batch}", dtype]
    if image_size != 224:
        parts.append(f"{image_size}px")
    if memory_format != "channels_last":
        parts.append(memory_format)
    if timing_mode != "device":
        parts.append(timing_mode)
    return " ".join(str(p) for p in parts)


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.1%}"


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
                 _pct(primary.delta), _ci(primary.ci), _p(primary.p_value)]
    by_metric = {m.metric: m for m in case.metrics}
    for metric in extra_metrics:
        m = by_metric.get(metric)
        cells.append("—" if m is None else f"{_pct(m.delta)} {m.verdict.value}")
    parity = case.parity_change or ("pass" if row.parity is not None and row.parity.passed else
                                    "FAIL" if row.parity is not None else "—")
    notes = list(case.regressions) + [n for n in case.notes]
    return [case_label(case.identity), *cells, case.verdict.value, _memory_cell(case.memory), parity,
            "; ".join(notes)]


def _headers(comparison: Comparison) -> tuple[list[str], list[str]]:
    extra = [m for m in TIMING_METRICS[1:] if m in comparison.thresholds]
    headers = ["case", "base median ms", "cand median ms", "Δ median", "99% CI of Δ", "p (U test)",
               *[f"Δ {m}" for m in extra], "verdict", "Δ memory", "parity", "notes"]
    return headers, extra


def _rules_line(comparison: Comparison) -> str:
    gates = ", ".join(f"{metric}:{fraction:.0%}" for metric, fraction in comparison.thresholds.items())
    return (f"Gates: {gates}. SLOWER = Mann-Whitney U p < {comparison.alpha:.2g} ({P_THRESHOLD} / cases "
            f"compared) and Δ ≥ threshold and the {CI_LEVEL:.0%} bootstrap CI of Δ above 0; SAME = the whole "
            f"CI within ±threshold; AMBIGUOUS otherwise. Verdicts come from the raw samples.")


_VERDICT_STYLE = {Verdict.SLOWER: "bold red", Verdict.BROKEN: "bold red", Verdict.FASTER: "green",
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
        numeric = header not in ("case", "verdict", "parity", "notes")
        table.add_column(header, justify="right" if numeric else "left",
                         overflow="fold", no_wrap=header == "verdict")
    for case in comparison.cases:
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
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---:" if h not in ("case", "verdict", "parity", "notes") else "---"
                                 for h in headers) + "|")
    for case in comparison.cases:
        cells = [_md_escape(c) for c in _cells(case, extra)]
        index = headers.index("verdict")
        if case.verdict in (Verdict.SLOWER, Verdict.BROKEN):
            cells[index] = f"**{cells[index]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _rules_line(comparison), ""]
    return "\n".join(lines)
