"""Numerical parity: every row against an fp64 reference of the same model on a fixed, seeded parity
batch (separate from the timing input), judged "no worse than eager in the same dtype".

The verdict, in one table (THRESHOLDS):
- eager itself (the yardstick) passes when its logits' cosine to the reference is >= `eager_min_cosine`
  and everything is finite;
- any other row passes when its error is at most `max_err_ratio` x eager's error in the same dtype
  (rel-L2 ratio, as PyTorch's dynamo `same()` does with RMSE), or when its rel-L2 is under the dtype's
  floor (the rounding of the output format itself), and everything is finite.
A NaN or Inf anywhere fails, whatever the ratio."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from resbench.results import Parity

SQNR_CAP_DB = 300.0  # an exact match (fp64 vs fp64) would be +inf dB; JSON has no inf


@dataclass(frozen=True)
class Threshold:
    max_err_ratio: float     # pass if rel_l2 <= this x eager's rel_l2 in the same dtype
    rel_l2_floor: float      # ... or if rel_l2 <= this (about one unit of output rounding)
    eager_min_cosine: float  # the eager row itself (OpenVINO's per-dtype cosine thresholds)


THRESHOLDS: dict[str, Threshold] = {
    "fp32": Threshold(max_err_ratio=2.0, rel_l2_floor=1e-5, eager_min_cosine=0.999),
    "tf32": Threshold(max_err_ratio=3.0, rel_l2_floor=1e-3, eager_min_cosine=0.995),
    "fp16": Threshold(max_err_ratio=3.0, rel_l2_floor=1e-3, eager_min_cosine=0.995),
    "bf16": Threshold(max_err_ratio=3.0, rel_l2_floor=8e-3, eager_min_cosine=0.99),
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


def error_metrics(output: torch.Tensor, reference: torch.Tensor) -> ErrorMetrics:
    """Compare logits [n, classes] to the reference, in fp64."""
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} != reference shape {tuple(reference.shape)}")
    y = output.detach().to("cpu", torch.float64)
    ref = reference.detach().to("cpu", torch.float64)
    finite = bool(torch.isfinite(y).all())
    if not finite:
        nan = math.nan
        return ErrorMetrics(nan, nan, nan, nan, _top1(y, ref), _top5(y, ref), False)
    diff = y - ref
    err_norm = float(diff.norm())
    ref_norm = float(ref.norm())
    rel_l2 = err_norm / ref_norm if ref_norm > 0 else (0.0 if err_norm == 0 else math.inf)
    cosine = float(torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0))
    sqnr = SQNR_CAP_DB if err_norm == 0 else min(SQNR_CAP_DB, 20 * math.log10(ref_norm / err_norm))
    return ErrorMetrics(rel_l2, float(diff.abs().max()), cosine, sqnr, _top1(y, ref), _top5(y, ref), True)


def _top1(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.argmax(dim=1) == ref.argmax(dim=1)).double().mean())


def _top5(y: torch.Tensor, ref: torch.Tensor) -> float:
    k = min(5, y.shape[1])
    mine, theirs = y.topk(k, dim=1).indices, ref.topk(k, dim=1).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(mine, theirs, strict=True)]
    return sum(overlap) / len(overlap)


def verdict(metrics: ErrorMetrics, dtype: str, eager_rel_l2: float | None, *, is_eager: bool,
            reference: str = "fp64") -> Parity:
    """Apply THRESHOLDS. `eager_rel_l2` is eager's error in the same dtype (None when eager failed)."""
    t = THRESHOLDS[dtype]
    ratio = None
    if not is_eager and eager_rel_l2 is not None and metrics.finite:
        ratio = metrics.rel_l2 / eager_rel_l2 if eager_rel_l2 > 0 else (1.0 if metrics.rel_l2 == 0 else math.inf)
    if not metrics.finite:
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
        err_ratio=ratio, passed=passed, rule=rule,
    )


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
