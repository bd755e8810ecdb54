"""Plot layout rules that a screenshot showed broken: tick labels on every panel (log axes over narrow
ranges had none), plots that have nothing to show are left out, doubtful rows are marked."""

from __future__ import annotations

import math

import pytest

from resbench.report.plots import _label, latency_vs_batch, log_ticks, throughput_vs_depth


@pytest.mark.parametrize("low, high", [(13.0, 31.0), (30.1, 30.9), (4.0, 150.0), (0.05, 0.09), (5.0, 1300.0),
                                       (21.0, 45.0), (0.8, 1.1)])
def test_every_log_axis_range_gets_at_least_two_ticks_inside_it(low, high):
    ticks = log_ticks(low, high)
    assert len(ticks) >= 2 and all(low <= t <= high for t in ticks), ticks
    if math.log10(high / low) > 1.2:   # wide: 1-2-5 per decade, nothing else
        assert all(f"{t:g}"[0] in "125" for t in ticks)


def test_plots_without_a_second_point_are_left_out(factory):
    one_batch = factory.make_run([factory.make_row("resnet50", backend, 1) for backend in ("eager", "compile")])
    assert latency_vs_batch(one_batch.rows) is None and throughput_vs_depth(one_batch.rows) is None
    two = factory.make_run([factory.make_row(model, "eager", batch) for model in ("resnet18", "resnet50")
                            for batch in (1, 8)])
    assert latency_vs_batch(two.rows) is not None and throughput_vs_depth(two.rows) is not None


def test_doubtful_rows_are_labelled(factory):
    busy = factory.make_row("resnet50", "eager", 1, warnings=["machine busy: other processes used 1.7 of 2 cores"])
    assert _label(busy) == "! resnet50 eager b1 fp32"
    assert _label(factory.make_row("resnet50", "eager", 1)) == "resnet50 eager b1 fp32"
