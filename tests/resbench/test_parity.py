"""Parity metrics on constructed outputs, and the verdict table."""

from __future__ import annotations

import math

import pytest
import torch

from resbench.parity import (
    SQNR_CAP_DB,
    THRESHOLDS,
    describe_mismatch,
    error_metrics,
    in_batches,
    parity_images,
    verdict,
)


def logits(seed: int = 0, n: int = 8, classes: int = 1000) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4


def test_exact_match() -> None:
    ref = logits()
    m = error_metrics(ref.clone(), ref)
    assert (m.rel_l2, m.max_abs, m.top1_agree, m.top5_overlap, m.sqnr_db) == (0.0, 0.0, 1.0, 1.0, SQNR_CAP_DB)
    assert m.cosine == pytest.approx(1.0)


def test_known_relative_error_and_sqnr() -> None:
    ref = logits()
    noisy = ref * 1.01  # relative error exactly 1%: SQNR = 40 dB
    m = error_metrics(noisy, ref)
    assert m.rel_l2 == pytest.approx(0.01)
    assert m.sqnr_db == pytest.approx(40.0)
    assert m.max_abs == pytest.approx(float(ref.abs().max()) * 0.01)
    assert m.cosine == pytest.approx(1.0)  # scaling keeps direction
    assert m.top1_agree == 1.0


def test_top1_and_top5_on_constructed_rankings() -> None:
    ref = torch.tensor([[5.0, 4, 3, 2, 1, 0, -1], [0, 1, 2, 3, 4, 5, 6]], dtype=torch.float64)
    swapped = ref.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]      # top-1 changes, top-5 set unchanged
    swapped[1, [2, 0]] = torch.tensor([-5.0, 2], dtype=torch.float64)  # row 1: index 2 leaves the top 5, index 0 enters
    m = error_metrics(swapped, ref)
    assert m.top1_agree == 0.5
    assert m.top5_overlap == pytest.approx((5 / 5 + 4 / 5) / 2)


def test_opposite_sign_gives_negative_cosine() -> None:
    ref = logits()
    assert error_metrics(-ref, ref).cosine == pytest.approx(-1.0)


def test_non_finite_output_fails_whatever_the_ratio() -> None:
    ref = logits()
    bad = ref.clone()
    bad[0, 0] = math.nan
    m = error_metrics(bad, ref)
    assert not m.finite
    p = verdict(m, "fp16", eager_rel_l2=1.0, is_eager=False)
    assert not p.passed and "NaN" in p.rule


def test_verdict_ratio_rule() -> None:
    ref = logits()
    eager_err = 0.004
    ok = verdict(error_metrics(ref * (1 + 0.011), ref), "fp16", eager_err, is_eager=False)  # ratio 2.75 <= 3
    bad = verdict(error_metrics(ref * (1 + 0.013), ref), "fp16", eager_err, is_eager=False)  # ratio 3.25 > 3
    assert ok.passed and ok.err_ratio == pytest.approx(2.75)
    assert not bad.passed and "err_ratio 3.25 > 3" in bad.rule


def test_verdict_floor_rule_passes_tiny_errors_even_against_exact_eager() -> None:
    ref = logits()
    p = verdict(error_metrics(ref * (1 + 5e-4), ref), "fp16", eager_rel_l2=0.0, is_eager=False)
    assert p.passed and "floor" in p.rule


def test_fp32_is_stricter_than_fp16() -> None:
    assert THRESHOLDS["fp32"].max_err_ratio < THRESHOLDS["fp16"].max_err_ratio
    assert THRESHOLDS["fp32"].rel_l2_floor < THRESHOLDS["fp16"].rel_l2_floor < THRESHOLDS["bf16"].rel_l2_floor


def test_eager_row_is_judged_by_cosine() -> None:
    ref = logits()
    good = verdict(error_metrics(ref + 0.01 * logits(1), ref), "bf16", None, is_eager=True)
    bad = verdict(error_metrics(logits(2), ref), "bf16", None, is_eager=True)
    assert good.passed and good.err_ratio is None
    assert not bad.passed and "eager baseline" in bad.rule


def test_parity_batch_is_seeded_and_distinct_from_seed_change() -> None:
    assert torch.equal(parity_images(4, 32, 0), parity_images(4, 32, 0))
    assert not torch.equal(parity_images(4, 32, 0), parity_images(4, 32, 1))


def test_in_batches_pads_cyclically_to_static_shapes() -> None:
    images = torch.arange(5.0).view(5, 1, 1, 1)
    chunks = in_batches(images, 2)
    assert [c.shape[0] for c in chunks] == [2, 2, 2]
    assert torch.cat(chunks).flatten().tolist() == [0, 1, 2, 3, 4, 0]
    big = in_batches(images, 8)
    assert len(big) == 1 and big[0].flatten().tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_describe_mismatch_counts_and_shows_values() -> None:
    expected = torch.zeros(3, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    actual[0, 0] = math.nan
    text = describe_mismatch(actual, expected, atol=1e-3, rtol=0)
    assert "2 of 9 elements differ" in text and "NaN: 1 actual" in text and "at (1, 2): actual 0.5" in text
