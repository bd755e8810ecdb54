"""The Server peak search (bisection over server_target_qps), against probes with a known capacity."""

from __future__ import annotations

import pytest

from resbench.serving.peak import MAX_PROBES, PRECISION, ProbeOutcome, search


def capacity_probe(capacity: float):
    return lambda qps: qps <= capacity


@pytest.mark.parametrize("capacity, start", [(1000.0, 1000.0 * 1.7), (1000.0, 90.0), (37.0, 400.0), (5e4, 6e4)])
def test_finds_the_capacity_within_the_precision(capacity: float, start: float) -> None:
    peak, probes = search(capacity_probe(capacity), start, max_probes=20)
    assert peak is not None and peak <= capacity
    missed = min(p.target_qps for p in probes if not p.held)
    assert missed > capacity and missed / peak <= 1 + PRECISION


def test_never_runs_more_than_max_probes() -> None:
    peak, probes = search(capacity_probe(1000.0), 1.0)  # ten doublings away
    assert len(probes) == MAX_PROBES
    assert peak == max(p.target_qps for p in probes if p.held)


def test_none_when_nothing_holds() -> None:
    peak, probes = search(lambda qps: False, 100.0)
    assert peak is None
    assert [p.target_qps for p in probes] == [100.0, 50.0, 25.0, 12.5, 6.25, 3.125]


def test_no_halvings_ends_a_search_whose_first_probe_misses_but_not_one_that_holds() -> None:
    assert search(lambda qps: False, 100.0, max_halvings=0) == (None, [ProbeOutcome(100.0, False)])
    peak, probes = search(capacity_probe(250.0), 100.0, max_halvings=0)
    assert peak is not None and peak > 200.0 and len(probes) > 2


def test_a_probe_that_raises_ends_the_search() -> None:
    def probe(qps: float) -> bool:
        raise RuntimeError("runtime broke")

    with pytest.raises(RuntimeError, match="runtime broke"):
        search(probe, 10.0)


def test_start_must_be_positive() -> None:
    with pytest.raises(ValueError, match="start_qps"):
        search(capacity_probe(1.0), 0.0)
