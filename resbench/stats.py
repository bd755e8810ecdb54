"""Summary statistics over raw latency samples (milliseconds).

- Percentiles are nearest-rank (trtexec's definition): the smallest sample with at least q% of samples at
  or below it. The median averages the two middle samples for even n.
- The CI of the median is distribution-free: order statistics whose ranks come from the Binomial(n, 1/2)
  distribution (exact for n <= 1000, normal approximation above), so it holds for skewed, multi-modal
  latency distributions where a mean +- t*sd interval does not.
- CV = sample stdev / mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

from resbench.results import LatencyStats

CONFIDENCE = 0.95


def nearest_rank(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100) of already-sorted samples, nearest-rank."""
    n = len(sorted_samples)
    rank = max(1, math.ceil(q / 100.0 * n))
    return sorted_samples[rank - 1]


def median(sorted_samples: Sequence[float]) -> float:
    n = len(sorted_samples)
    mid = n // 2
    return sorted_samples[mid] if n % 2 else 0.5 * (sorted_samples[mid - 1] + sorted_samples[mid])


def _binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """1-based ranks (lo, hi) of the order statistics bounding the median with >= `confidence` coverage.

    Coverage of [x_(lo), x_(hi)] is P(lo <= X < hi) with X ~ Binomial(n, 1/2); lo is the largest rank
    with P(X < lo) <= alpha/2, and hi = n + 1 - lo by symmetry. For n < 6 no pair reaches 95%: the
    interval is then the full range [min, max]."""
    alpha = 1.0 - confidence
    if n <= 1000:
        lo = 0
        while lo + 1 <= n and _binomial_cdf(lo, n) <= alpha / 2:  # P(X <= lo) = P(X < lo + 1)
            lo += 1
        lo = max(lo, 1)
    else:
        z = 1.959963984540054 if confidence == 0.95 else _z(confidence)
        lo = max(1, math.floor(n / 2 - z * math.sqrt(n) / 2))
    return lo, n + 1 - lo


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def median_ci(sorted_samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    lo, hi = median_ci_ranks(len(sorted_samples), confidence)
    return sorted_samples[lo - 1], sorted_samples[hi - 1]


def rel_ci_half_width(samples: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half the width of the median's CI relative to the median (the stopping rule's noise measure)."""
    if len(samples) < 2:
        return math.inf
    ordered = sorted(samples)
    lo, hi = median_ci(ordered, confidence)
    mid = median(ordered)
    return (hi - lo) / 2 / mid if mid > 0 else math.inf


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    if not samples_ms:
        raise ValueError("summarize needs at least one sample")
    ordered = sorted(samples_ms)
    n = len(ordered)
    mean = math.fsum(ordered) / n
    stdev = math.sqrt(math.fsum((x - mean) ** 2 for x in ordered) / (n - 1)) if n > 1 else 0.0
    return LatencyStats(
        n=n,
        median=median(ordered),
        mean=mean,
        stdev=stdev,
        min=ordered[0],
        max=ordered[-1],
        p90=nearest_rank(ordered, 90),
        p95=nearest_rank(ordered, 95),
        p99=nearest_rank(ordered, 99),
        ci_median=median_ci(ordered),
        cv=stdev / mean if mean > 0 else 0.0,
    )
