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
    int8_weight_rounded,
    parity_images,
    verdict,
    yardstick,
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


# ------------------------------------------------------------------------------------------------ int8


def _flip_top1(ref: torch.Tensor, images: int) -> torch.Tensor:
    """`ref` with the top-1 class of the first `images` rows demoted below the runner-up."""
    out = ref.clone()
    for i in range(images):
        top2 = out[i].topk(2).indices
        out[i, top2[0]] = out[i, top2[1]] - 0.5
    return out


def test_int8_row_passes_on_agreement_and_says_so_in_a_sentence() -> None:
    ref = logits(n=16)
    p = verdict(error_metrics(_flip_top1(ref, 1), ref), "int8", eager_rel_l2=None, is_eager=False)
    assert p.passed and p.images == 16 and p.top1_text == "15/16"
    assert p.rule.startswith("int8 agrees on top-1 for 15/16 images, top-5 overlap ")
    assert p.rule.endswith(f"cosine {p.cosine:.4f}")


def test_int8_row_below_the_thresholds_fails_unless_its_error_is_int8_rounding_itself() -> None:
    ref = logits(n=16)
    bad = _flip_top1(ref, 6)  # 10/16 < 12/16
    metrics = error_metrics(bad, ref)
    failed = verdict(metrics, "int8", eager_rel_l2=metrics.rel_l2 / 5, is_eager=False)
    assert not failed.passed and failed.err_ratio == pytest.approx(5.0)
    assert failed.rule.startswith("int8 FAILS: agrees on top-1 for 10/16 images")
    assert "top-1 10/16 < 12/16" in failed.rule and "5.00x the error of int8 weight rounding alone (> 2)" in failed.rule
    sound = verdict(metrics, "int8", eager_rel_l2=metrics.rel_l2 / 1.5, is_eager=False)
    assert sound.passed and "1.50x the error of int8 weight rounding alone" in sound.rule
    assert "below the thresholds (top-1 10/16 < 12/16)" in sound.rule


def test_int8_thresholds_live_in_the_one_table() -> None:
    t = THRESHOLDS["int8"]
    assert t.quantized and not THRESHOLDS["fp32"].quantized
    assert (t.min_top1_agree, t.min_top5_overlap, t.min_cosine, t.max_err_ratio) == (0.75, 0.8, 0.99, 2.0)


def test_int8_non_finite_output_fails() -> None:
    ref = logits(n=4)
    bad = ref.clone()
    bad[1, 3] = math.inf
    p = verdict(error_metrics(bad, ref), "int8", eager_rel_l2=0.01, is_eager=False)
    assert not p.passed and "non-finite" in p.rule


def test_int8_yardstick_rounds_weights_per_output_channel_and_nothing_else() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    with torch.no_grad():
        model[0].weight[0] *= 100  # a channel 100x wider than the others: per channel keeps the rest exact-ish
    rounded = int8_weight_rounded(model)
    for original, copy in ((model[0], rounded[0]), (model[3], rounded[3])):
        w, q = original.weight.double(), copy.weight
        scale = w.abs().flatten(1).amax(dim=1) / 127
        steps = q / scale.view(-1, *[1] * (w.dim() - 1))
        assert q.dtype == torch.float64
        assert torch.allclose(steps, steps.round(), atol=1e-9)  # on each channel's int8 grid
        assert ((q - w).abs().flatten(1).amax(dim=1) <= scale / 2 + 1e-12).all()
        assert torch.equal(copy.bias, original.bias.double())  # biases and BN untouched
    assert torch.equal(rounded[1].running_var, model[1].running_var.double())
    assert model[0].weight.dtype == torch.float32  # the original is not modified
    module, dtype = yardstick(model, "int8")
    assert dtype == torch.float64 and isinstance(module[0], torch.nn.Conv2d)
    module, dtype = yardstick(model, "bf16")
    assert dtype == torch.bfloat16 and module[0].weight.dtype == torch.bfloat16
