"""Summary statistics on samples whose answers are known by hand."""

from __future__ import annotations

import math
import random

import pytest

from resbench.stats import median, median_ci, median_ci_ranks, nearest_rank, rel_ci_half_width, summarize


def test_known_samples() -> None:
    s = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.n, s.median, s.mean, s.min, s.max) == (5, 3.0, 3.0, 1.0, 5.0)
    assert s.stdev == pytest.approx(math.sqrt(2.5))  # sample stdev, ddof=1
    assert s.cv == pytest.approx(math.sqrt(2.5) / 3.0)
    assert s.ci_median == (1.0, 5.0)  # n=5 cannot reach 95%: the full range


def test_even_median_averages_the_middle_two() -> None:
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5


def test_nearest_rank_percentiles_on_1_to_100() -> None:
    data = [float(i) for i in range(1, 101)]
    assert nearest_rank(data, 50) == 50.0
    assert nearest_rank(data, 90) == 90.0
    assert nearest_rank(data, 99) == 99.0
    assert nearest_rank(data, 100) == 100.0
    s = summarize(list(reversed(data)))
    assert (s.p90, s.p95, s.p99) == (90.0, 95.0, 99.0)


def test_nearest_rank_with_few_samples_is_the_max() -> None:
    assert nearest_rank([1.0, 2.0, 3.0], 99) == 3.0
    assert nearest_rank([1.0, 2.0, 3.0], 34) == 2.0  # ceil(0.34 * 3) = 2nd


@pytest.mark.parametrize("n, ranks", [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)), (100, (40, 61))])
def test_median_ci_ranks_match_binomial_tables(n: int, ranks: tuple[int, int]) -> None:
    # Published distribution-free 95% CI ranks for the median (e.g. Conover, Practical Nonparametric Stats).
    assert median_ci_ranks(n) == ranks


def test_median_ci_normal_approximation_for_large_n() -> None:
    lo, hi = median_ci_ranks(10_000)
    assert (lo, hi) == (4902, 5099)


def test_median_ci_covers_the_true_median_about_95_percent() -> None:
    rng = random.Random(1)
    hits = 0
    trials = 400
    for _ in range(trials):
        samples = sorted(rng.lognormvariate(0.0, 0.5) for _ in range(40))
        lo, hi = median_ci(samples)
        hits += lo <= 1.0 <= hi  # lognormal(0, s) has median exp(0) = 1
    assert 0.92 <= hits / trials <= 0.995


def test_rel_ci_half_width_shrinks_with_more_samples() -> None:
    rng = random.Random(2)
    few = [rng.gauss(10, 1) for _ in range(20)]
    many = few + [rng.gauss(10, 1) for _ in range(2000)]
    assert rel_ci_half_width(many) < rel_ci_half_width(few)
    assert rel_ci_half_width([1.0]) == math.inf


def test_summarize_rejects_empty() -> None:
    with pytest.raises(ValueError):
        summarize([])
