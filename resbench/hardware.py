"""Peak arithmetic rates (dense, no sparsity) per GPU and precision, with their sources, for achieved
TFLOP/s -> % of peak. Spec figures, not measured ceilings: an H200 measured ~790 TFLOP/s in a bf16
matmul (~80% of its 989 spec; ../shared/notes/anchors.md), so a well-fused network tops out well below
100% here. Devices not in the table get no % of peak (None), never a guessed one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeakRates:
    match: tuple[str, ...]           # lower-case substrings of torch.cuda.get_device_name()
    tflops: dict[str, float]         # run precision -> dense TFLOP/s
    source: str


_HOPPER_SXM = {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}
PEAKS: tuple[PeakRates, ...] = (
    PeakRates(("h200",), _HOPPER_SXM,
              "NVIDIA H200 Tensor Core GPU datasheet (SXM, dense; same GH100 compute as H100 SXM)"),
    PeakRates(("h100 80gb hbm3", "h100 sxm"), _HOPPER_SXM, "NVIDIA H100 Tensor Core GPU datasheet (SXM, dense)"),
    PeakRates(("h100",), {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
              "NVIDIA H100 Tensor Core GPU datasheet (PCIe, dense)"),
    PeakRates(("a100",), {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
              "NVIDIA A100 Tensor Core GPU datasheet (dense)"),
    PeakRates(("l4",), {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
              "NVIDIA L4 Tensor Core GPU datasheet (dense)"),
)


def peak_tflops(device_name: str, dtype: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, source) for a device and run precision; (None, why) when unknown."""
    lowered = device_name.lower()
    for entry in PEAKS:
        if any(m in lowered for m in entry.match):
            return entry.tflops.get(dtype), entry.source
    return None, f"no peak rate known for {device_name!r} (resbench/hardware.py)"


def achieved(gflops_per_image: float, batch_size: int, median_ms: float, device_name: str,
             dtype: str) -> tuple[float, float | None, str]:
    """(achieved TFLOP/s, % of peak or None, peak source) from analytic FLOPs and the median latency."""
    tflops = gflops_per_image * batch_size / (median_ms * 1e-3) / 1e3
    peak, source = peak_tflops(device_name, dtype)
    return tflops, (100.0 * tflops / peak if peak else None), source
