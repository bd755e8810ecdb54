"""Numerical parity: every row against an fp64 reference of the same model on a fixed, seeded parity
batch (separate from the timing input), judged "no worse than eager in the same dtype".

The verdict, in one table (THRESHOLDS):
- eager itself (the yardstick) passes when its logits' cosine to the reference is >= `eager_min_cosine`
  and everything is finite;
- any other row passes when its error is at most `max_err_ratio` x eager's error in the same dtype
  (rel-L2 ratio, as PyTorch's dynamo `same()` does with RMSE), or when its rel-L2 is under the dtype's
  floor (the rounding of the output format itself), and everything is finite.
A NaN or Inf anywhere fails, whatever the ratio.

Quantized rows (int8) have no eager in their dtype. They pass when they agree with the reference on
top-1 (`min_top1_agree`), top-5 (`min_top5_overlap`) and cosine (`min_cosine`): what a deployed int8
ResNet keeps (published ResNet-50 int8 top-1 drops are 0.2-0.45 points). Or, second clause, when their
rel-L2 is at most `max_err_ratio` x the error of the *int8 yardstick*: the same model in fp64 with only
its weights rounded to int8 per output channel, the error no per-channel int8 model can avoid. Why two
clauses: seeded random weights make deep ResNets amplify rounding (fp32's error on ResNet-50 at 128 px is
350x the unit roundoff; its weights rounded to int8 alone give cosine 0.989 at 224 px, 0.953 at 64 px), so
the absolute thresholds alone would fail every correct int8 ResNet-50 without a checkpoint, while a broken
quantization (calibrated on [0, 1] pixels, no normalisation) is 2.4-27x the yardstick on ResNet-18/50
(docs/parity.md has the table)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from resbench.dtypes import is_quantized, torch_dtype
from resbench.results import Parity

SQNR_CAP_DB = 300.0  # an exact match (fp64 vs fp64) would be +inf dB; JSON has no inf


@dataclass(frozen=True)
class Threshold:
    max_err_ratio: float             # pass if rel_l2 <= this x the yardstick's rel_l2 (eager's, same dtype)
    rel_l2_floor: float | None       # ... or if rel_l2 <= this (about one unit of output rounding)
    eager_min_cosine: float | None   # the eager row itself (OpenVINO's per-dtype cosine thresholds)
    # quantized precisions: agreement with the reference that passes on its own
    min_top1_agree: float | None = None
    min_top5_overlap: float | None = None
    min_cosine: float | None = None

    @property
    def quantized(self) -> bool:
        return self.min_cosine is not None


THRESHOLDS: dict[str, Threshold] = {
    "fp32": Threshold(max_err_ratio=2.0, rel_l2_floor=1e-5, eager_min_cosine=0.999),
    "tf32": Threshold(max_err_ratio=3.0, rel_l2_floor=1e-3, eager_min_cosine=0.995),
    "fp16": Threshold(max_err_ratio=3.0, rel_l2_floor=1e-3, eager_min_cosine=0.995),
    "bf16": Threshold(max_err_ratio=3.0, rel_l2_floor=8e-3, eager_min_cosine=0.99),
    # int8: correct MinMax QDQ on random-weight ResNet-18 (32-224 px): top-1 13-16/16, top-5 >= 0.91, cosine
    # >= 0.998, 1.6-1.7x the yardstick; calibrated on [0, 1] pixels: top-1 0-11/16, cosine <= 0.86, 14-27x.
    # ResNet-50 (correct): 1.2-1.3x the yardstick; calibrated on [0, 1] pixels 2.4-5.6x.
    "int8": Threshold(max_err_ratio=2.0, rel_l2_floor=None, eager_min_cosine=None,
                      min_top1_agree=0.75, min_top5_overlap=0.8, min_cosine=0.99),
}


@dataclass(frozen=True)
class ErrorMetrics:
    rel_l2: float
    max_abs: float
    cosine: float
    sqnr_db: float
    top1_agree: float
    top5_overlap: float
    finite: bool
    images: int = 0  # how many images the metrics are over (top-1 agreement is a fraction of them)


def error_metrics(output: torch.Tensor, reference: torch.Tensor) -> ErrorMetrics:
    """Compare logits [n, classes] to the reference, in fp64."""
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} != reference shape {tuple(reference.shape)}")
    y = output.detach().to("cpu", torch.float64)
    ref = reference.detach().to("cpu", torch.float64)
    finite = bool(torch.isfinite(y).all())
    if not finite:
        nan = math.nan
        return ErrorMetrics(nan, nan, nan, nan, _top1(y, ref), _top5(y, ref), False, y.shape[0])
    diff = y - ref
    err_norm = float(diff.norm())
    ref_norm = float(ref.norm())
    rel_l2 = err_norm / ref_norm if ref_norm > 0 else (0.0 if err_norm == 0 else math.inf)
    cosine = float(torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0))
    sqnr = SQNR_CAP_DB if err_norm == 0 else min(SQNR_CAP_DB, 20 * math.log10(ref_norm / err_norm))
    return ErrorMetrics(rel_l2, float(diff.abs().max()), cosine, sqnr, _top1(y, ref), _top5(y, ref), True,
                        y.shape[0])


def _top1(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.argmax(dim=1) == ref.argmax(dim=1)).double().mean())


def _top5(y: torch.Tensor, ref: torch.Tensor) -> float:
    k = min(5, y.shape[1])
    mine, theirs = y.topk(k, dim=1).indices, ref.topk(k, dim=1).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(mine, theirs, strict=True)]
    return sum(overlap) / len(overlap)


def verdict(metrics: ErrorMetrics, dtype: str, eager_rel_l2: float | None, *, is_eager: bool,
            reference: str = "fp64") -> Parity:
    """Apply THRESHOLDS. `eager_rel_l2` is the yardstick's error: eager's in the same dtype, or for a
    quantized dtype the int8 yardstick's (`yardstick`); None when it could not be computed."""
    t = THRESHOLDS[dtype]
    ratio = None
    if not is_eager and eager_rel_l2 is not None and metrics.finite:
        ratio = metrics.rel_l2 / eager_rel_l2 if eager_rel_l2 > 0 else (1.0 if metrics.rel_l2 == 0 else math.inf)
    if t.quantized:
        passed, rule = _quantized_rule(metrics, dtype, ratio, t)
    elif not metrics.finite:
        passed, rule = False, "non-finite values (NaN/Inf) in the output"
    elif is_eager:
        passed = metrics.cosine >= t.eager_min_cosine
        rule = f"eager baseline: cosine {metrics.cosine:.6f} {'>=' if passed else '<'} {t.eager_min_cosine}"
    elif metrics.rel_l2 <= t.rel_l2_floor:
        passed, rule = True, f"rel_l2 {metrics.rel_l2:.3g} <= {dtype} floor {t.rel_l2_floor:g}"
    elif ratio is not None and ratio <= t.max_err_ratio:
        passed, rule = True, f"err_ratio {ratio:.3g} <= {t.max_err_ratio:g}"
    elif ratio is None:
        passed, rule = False, (f"rel_l2 {metrics.rel_l2:.3g} > {dtype} floor {t.rel_l2_floor:g} and no eager "
                               f"error to compare with")
    else:
        passed, rule = False, (f"err_ratio {ratio:.3g} > {t.max_err_ratio:g} and rel_l2 {metrics.rel_l2:.3g} > "
                               f"{dtype} floor {t.rel_l2_floor:g}")
    return Parity(
        reference=reference, rel_l2=metrics.rel_l2, max_abs=metrics.max_abs, cosine=metrics.cosine,
        sqnr_db=metrics.sqnr_db, top1_agree=metrics.top1_agree, top5_overlap=metrics.top5_overlap,
        err_ratio=ratio, passed=passed, rule=rule, images=metrics.images or None,
    )


def _quantized_rule(metrics: ErrorMetrics, dtype: str, ratio: float | None, t: Threshold) -> tuple[bool, str]:
    """A quantized row: absolute agreement with the reference, else the int8-yardstick ratio (see the
    module docstring). The rule reads as a sentence: 'int8 agrees on top-1 for 15/16 images, ...'."""
    n = metrics.images
    agreed = round(metrics.top1_agree * n)
    needed = math.ceil(t.min_top1_agree * n - 1e-9)
    said = (f"{dtype} agrees on top-1 for {agreed}/{n} images, top-5 overlap {metrics.top5_overlap:.2f}, "
            f"cosine {metrics.cosine:.4f}")
    if not metrics.finite:
        return False, f"{dtype} FAILS: non-finite values (NaN/Inf) in the output; top-1 {agreed}/{n} images"
    misses = [text for missed, text in (
        (agreed < needed, f"top-1 {agreed}/{n} < {needed}/{n}"),
        (metrics.top5_overlap < t.min_top5_overlap, f"top-5 {metrics.top5_overlap:.2f} < {t.min_top5_overlap:g}"),
        (metrics.cosine < t.min_cosine, f"cosine {metrics.cosine:.4f} < {t.min_cosine:g}"),
    ) if missed]
    if not misses:
        return True, said
    yardstick = (f"{ratio:.2f}x the error of int8 weight rounding alone" if ratio is not None
                 else "no int8 yardstick to compare with")
    if ratio is not None and ratio <= t.max_err_ratio:
        return True, (f"{said}: below the thresholds ({'; '.join(misses)}), but {yardstick} (<= "
                      f"{t.max_err_ratio:g}): the model amplifies rounding, the quantization is sound")
    limit = f" (> {t.max_err_ratio:g})" if ratio is not None else ""
    return False, f"{dtype} FAILS: {said[len(dtype) + 1:]} ({'; '.join(misses)}); {yardstick}{limit}"


def yardstick(model: torch.nn.Module, dtype: str) -> tuple[torch.nn.Module, torch.dtype]:
    """What a row's err_ratio divides by, as (a private copy of the model, the dtype to feed it): eager in
    the same dtype; for int8, which has no eager, `int8_weight_rounded` in fp64."""
    if is_quantized(dtype):
        return int8_weight_rounded(model), torch.float64
    return copy.deepcopy(model).to(dtype=torch_dtype(dtype)), torch_dtype(dtype)


@torch.no_grad()
def int8_weight_rounded(model: torch.nn.Module) -> torch.nn.Module:
    """The int8 yardstick: an fp64 copy of `model` whose conv and linear weights are rounded to int8 per
    output channel (symmetric, scale = max|w| / 127; activations untouched). Rounding per output channel
    commutes with BatchNorm folding (a per-output-channel scale), so this is the weight error of every
    per-channel int8 model of these weights, whichever runtime folded them."""
    rounded = copy.deepcopy(model).double()
    for module in rounded.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            weight = module.weight
            scale = (weight.abs().flatten(1).amax(dim=1) / 127).clamp_min(torch.finfo(torch.float64).tiny)
            scale = scale.view(-1, *([1] * (weight.dim() - 1)))
            weight.copy_(torch.round(weight / scale).clamp(-127, 127) * scale)
    return rounded


def describe_mismatch(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                      limit: int = 5) -> str:
    """A verbose, numbers-first mismatch report for test assertions: count, first indices, both values,
    and NaN/Inf counted separately."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~torch.isclose(a, e, atol=atol, rtol=rtol, equal_nan=False)
    lines = [f"{int(bad.sum())} of {bad.numel()} elements differ (atol={atol:g}, rtol={rtol:g}); "
             f"NaN: {int(torch.isnan(a).sum())} actual / {int(torch.isnan(e).sum())} expected; "
             f"Inf: {int(torch.isinf(a).sum())} / {int(torch.isinf(e).sum())}; "
             f"max abs diff {float((a - e).abs().nan_to_num(nan=math.inf).max()):.4g}"]
    for idx in bad.nonzero()[:limit].tolist():
        lines.append(f"  at {tuple(idx)}: actual {float(a[tuple(idx)]):.6g}, expected {float(e[tuple(idx)]):.6g}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ parity batch


def parity_images(samples: int, image_size: int, seed: int) -> torch.Tensor:
    """The fixed parity batch: seeded N(0, 1) images (what a normalised ImageNet batch looks like), fp32."""
    generator = torch.Generator().manual_seed(10_000 + seed)  # never the timing input's seed
    return torch.randn(samples, 3, image_size, image_size, generator=generator)


def in_batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split `images` into chunks of exactly `batch_size` (static-shape backends accept nothing else),
    repeating images cyclically to fill the last chunk; callers keep the first len(images) outputs."""
    n = images.shape[0]
    chunks = max(1, math.ceil(n / batch_size))
    index = torch.arange(chunks * batch_size) % n
    return list(images[index].split(batch_size))


@torch.no_grad()
def run_on_parity_batch(fn, images: torch.Tensor, batch_size: int, dtype: torch.dtype,
                        memory_format: torch.memory_format, device: torch.device) -> torch.Tensor:
    """fn's logits on every parity image, fed in the case's batch shape, as fp64 on the CPU."""
    outputs = []
    for chunk in in_batches(images, batch_size):
        x = chunk.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
        outputs.append(fn(x).detach().to("cpu", torch.float64).clone())
    return torch.cat(outputs)[: images.shape[0]]
