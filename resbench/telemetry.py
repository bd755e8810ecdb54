"""GPU telemetry through NVML (pynvml from nvidia-ml-py): the GPU's settings for the run file's
environment, and clock / power / temperature / throttle samples taken while each case is measured.

Without a GPU or NVML every function degrades to "not available" and nothing fails (nvmlInit raises
NVMLError_LibraryNotFound on CPU-only hosts).

Per case (measurement.md 4.6): a `Monitor` thread samples every SAMPLE_PERIOD_S while a group runs and
tags each sample with the backend being measured at the time; the runner also takes one sample at the
end of every measurement slice. A slice during which the SM clock fell below LOW_CLOCK_FRACTION of the
default clock is discarded (timing.py), and a row is flagged (`telemetry.throttled`, plus a warning)
when a thermal or hardware slowdown was active or the SM clock was low while it was measured. Samples taken
while NVML reports the GPU idle are not judged: an idle GPU lowers its clock by design.

The software power cap is reported apart (`telemetry.power_capped`, `power_cap_samples`), not as throttling:
an H200 running a large batch sits at its power limit by design (that is its sustained speed, and what a
deployment gets), so counting it as throttling would flag most heavy rows and make the compare gate call
them ambiguous (notes/gpu-audit.md, item 14). Clocks the cap pulls below 75% of the default still count as
low clocks."""

from __future__ import annotations

import functools
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SAMPLE_PERIOD_S = 0.05      # nvbench polls at a similar rate; one NVML query costs ~0.1 ms
LOW_CLOCK_FRACTION = 0.75   # nvbench: samples below 75% of the default SM clock are throttled

# Clock-event ("throttle") reason bits, from nvml.h (identical in the older ThrottleReasons names).
GPU_IDLE = 0x1
REASON_NAMES: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that mean the GPU ran slower than it was asked to (the others are idleness, settings, and the
# power cap, reported apart: POWER_CAP_BITS).
THROTTLE_BITS = 0x8 | 0x20 | 0x40 | 0x80
POWER_CAP_BITS = 0x4


@functools.cache
def _nvml():
    """The initialised pynvml module, or raise RuntimeError saying why it is not available."""
    try:
        import pynvml
    except ImportError as exc:
        raise RuntimeError(f"pynvml not installed ({exc}); pip install nvidia-ml-py") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise RuntimeError(f"NVML not available ({exc})") from None
    return pynvml


def available() -> tuple[bool, str]:
    try:
        _nvml()
        return True, ""
    except RuntimeError as exc:
        return False, str(exc)


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:  # NVML raises NVMLError_NotSupported & co. per query; a missing figure is None
        return None


def _handle(torch_index: int = 0):
    """The NVML handle of torch's CUDA device `torch_index` (matched by UUID, so CUDA_VISIBLE_DEVICES
    reordering cannot point telemetry at another GPU); NVML index `torch_index` when no UUID is known."""
    nv = _nvml()
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(torch_index).uuid)
        return nv.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    except Exception:  # older torch without .uuid, or a UUID form NVML does not take
        return nv.nvmlDeviceGetHandleByIndex(torch_index)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def gpu_environment(torch_index: int = 0) -> dict[str, Any]:
    """Driver, power limit, ECC, MIG and persistence mode, default and current clocks."""
    ok, reason = available()
    if not ok:
        return {"nvml": f"not available: {reason}"}
    nv = _nvml()
    try:
        h = _handle(torch_index)
    except Exception as exc:
        return {"nvml": f"not available: no NVML handle for CUDA device {torch_index} ({exc})"}
    power_limit = _safe(nv.nvmlDeviceGetPowerManagementLimit, h)
    enforced = _safe(nv.nvmlDeviceGetEnforcedPowerLimit, h)
    default_limit = _safe(nv.nvmlDeviceGetPowerManagementDefaultLimit, h)
    ecc = _safe(nv.nvmlDeviceGetEccMode, h)
    mig = _safe(nv.nvmlDeviceGetMigMode, h)
    persistence = _safe(nv.nvmlDeviceGetPersistenceMode, h)
    sm_default = _safe(nv.nvmlDeviceGetDefaultApplicationsClock, h, nv.NVML_CLOCK_SM)
    sm_app = _safe(nv.nvmlDeviceGetApplicationsClock, h, nv.NVML_CLOCK_SM)
    return {
        "nvml": "available",
        "driver": _text(_safe(nv.nvmlSystemGetDriverVersion)),
        "gpu_name": _text(_safe(nv.nvmlDeviceGetName, h)),
        "gpu_uuid": _text(_safe(nv.nvmlDeviceGetUUID, h)),
        "power_limit_w": power_limit / 1000 if power_limit else None,
        "power_limit_enforced_w": enforced / 1000 if enforced else None,
        "power_limit_default_w": default_limit / 1000 if default_limit else None,
        "ecc_enabled": bool(ecc[0]) if ecc else None,
        "mig_enabled": bool(mig[0]) if mig else None,
        "persistence_mode": bool(persistence) if persistence is not None else None,
        "sm_clock_default_mhz": sm_default,
        "sm_clock_applications_mhz": sm_app,
        # applications clocks set away from the default mean someone pinned them (nvidia-smi -ac / -lgc)
        "clocks_pinned": (sm_app != sm_default) if sm_app and sm_default else None,
        "sm_clock_max_mhz": _safe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
        "mem_clock_max_mhz": _safe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
        "temperature_c": _safe(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
    }


# ------------------------------------------------------------------------------------- samples, summary


@dataclass(frozen=True)
class ClockSample:
    """One NVML reading. `label` is the backend being measured when it was taken (None between slices)."""

    t: float                       # time.perf_counter()
    sm_mhz: float | None
    mem_mhz: float | None
    power_w: float | None
    temperature_c: float | None
    reasons: int | None            # clock-event reason bitmask
    label: str | None = None


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASON_NAMES.items() if mask & bit]


def is_low_clock(sample: ClockSample, default_sm_mhz: float | None) -> bool:
    """SM clock below LOW_CLOCK_FRACTION of the default while the GPU was not idle."""
    if sample.sm_mhz is None or not default_sm_mhz:
        return False
    idle = sample.reasons is not None and bool(sample.reasons & GPU_IDLE)
    return not idle and sample.sm_mhz < LOW_CLOCK_FRACTION * default_sm_mhz


def _spread(values: Sequence[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"min": min(present), "median": statistics.median(present), "max": max(present)}


def summarize(samples: Sequence[ClockSample], default_sm_mhz: float | None) -> dict[str, Any]:
    """A row's `telemetry` from the samples taken while it was measured (a pure function)."""
    if not samples:
        return {"status": "no samples: the measurement was shorter than one NVML reading"}
    masks = [s.reasons for s in samples if s.reasons is not None]
    seen = 0
    for mask in masks:
        seen |= mask
    throttle_mask = seen & THROTTLE_BITS
    low = [s for s in samples if is_low_clock(s, default_sm_mhz)]
    capped = [mask for mask in masks if mask & POWER_CAP_BITS]
    return {
        "status": "ok",
        "samples": len(samples),
        "sm_clock_mhz": _spread([s.sm_mhz for s in samples]),
        "sm_clock_default_mhz": default_sm_mhz,
        "mem_clock_mhz": _spread([s.mem_mhz for s in samples]),
        "power_w": _spread([s.power_w for s in samples]),
        "temperature_c": _spread([s.temperature_c for s in samples]),
        "reasons": reason_names(seen),
        "throttle_reasons": reason_names(throttle_mask),
        "low_clock_samples": len(low),
        "throttled": bool(throttle_mask) or bool(low),
        "power_capped": bool(capped),
        "power_cap_samples": len(capped),
    }


def warnings_for(summary: dict[str, Any]) -> list[str]:
    """The row's warning when its telemetry says it was measured throttled or at a low SM clock."""
    if not summary.get("throttled"):
        return []
    parts = []
    if summary.get("throttle_reasons"):
        parts.append("throttle reasons " + ", ".join(summary["throttle_reasons"]))
    if summary.get("low_clock_samples"):
        sm, default = summary.get("sm_clock_mhz") or {}, summary.get("sm_clock_default_mhz")
        parts.append(f"SM clock down to {sm.get('min', 0):.0f} MHz in {summary['low_clock_samples']} of "
                     f"{summary['samples']} readings (< {LOW_CLOCK_FRACTION:.0%} of the default {default:.0f} MHz)")
    return ["throttled while measured: " + "; ".join(parts)]


# ------------------------------------------------------------------------------------------ the monitor


class Monitor:
    """Samples one GPU in a background thread while a group runs. On a CPU run, or without NVML, it is
    inert and every summary is {"status": "not available: <reason>"}."""

    def __init__(self, device: str, torch_index: int = 0, period_s: float = SAMPLE_PERIOD_S):
        self.period_s = period_s
        self.samples: list[ClockSample] = []
        self.label: str | None = None
        self.default_sm_mhz: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle = None
        if device != "cuda":
            self.reason = "not available: CPU run (NVML reports GPUs only)"
            return
        ok, why = available()
        if not ok:
            self.reason = f"not available: {why}"
            return
        try:
            self._handle = _handle(torch_index)
        except Exception as exc:
            self.reason = f"not available: no NVML handle for CUDA device {torch_index} ({exc})"
            return
        nv = _nvml()
        self.default_sm_mhz = (_safe(nv.nvmlDeviceGetDefaultApplicationsClock, self._handle, nv.NVML_CLOCK_SM)
                               or _safe(nv.nvmlDeviceGetMaxClockInfo, self._handle, nv.NVML_CLOCK_SM))
        self._reasons = (getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
                         or getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        self.reason = ""

    @property
    def available(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> Monitor:
        if self.available:
            self._thread = threading.Thread(target=self._run, name="resbench-telemetry", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample_now()

    def sample_now(self, label: str | None = None) -> ClockSample | None:
        """Take one reading now (tagged with `label`, or the current label) and keep it."""
        if not self.available:
            return None
        nv, h = _nvml(), self._handle
        power = _safe(nv.nvmlDeviceGetPowerUsage, h)
        sample = ClockSample(
            t=time.perf_counter(),
            sm_mhz=_safe(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
            mem_mhz=_safe(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
            power_w=power / 1000 if power is not None else None,
            temperature_c=_safe(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
            reasons=_safe(self._reasons, h) if self._reasons else None,
            label=label if label is not None else self.label,
        )
        with self._lock:
            self.samples.append(sample)
        return sample

    def slice_ok(self, label: str, t0: float, t1: float) -> bool:
        """timing.measure_interleaved's `accept_slice`: False when the SM clock was low during [t0, t1]."""
        if not self.available:
            return True
        self.sample_now(label)
        with self._lock:
            during = [s for s in self.samples if s.label == label and t0 <= s.t <= t1 + self.period_s]
        return not any(is_low_clock(s, self.default_sm_mhz) for s in during)

    def summary(self, label: str) -> dict[str, Any]:
        """The row's `telemetry` for the backend measured under `label`."""
        if not self.available:
            return {"status": self.reason}
        with self._lock:
            mine = [s for s in self.samples if s.label == label]
        return summarize(mine, self.default_sm_mhz)
