"""GPU telemetry through NVML (pynvml from nvidia-ml-py). Without a GPU or NVML every function degrades
to "not available" and nothing fails (nvmlInit raises NVMLError_LibraryNotFound on CPU-only hosts)."""

from __future__ import annotations

import functools
from typing import Any


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


def _handle(index: int = 0):
    return _nvml().nvmlDeviceGetHandleByIndex(index)


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def gpu_environment(index: int = 0) -> dict[str, Any]:
    """Driver, power limit, ECC, MIG and persistence mode, clocks defaults."""
    ok, reason = available()
    if not ok:
        return {"nvml": f"not available: {reason}"}
    nv = _nvml()
    h = _handle(index)
    power_limit = _safe(nv.nvmlDeviceGetPowerManagementLimit, h)
    ecc = _safe(nv.nvmlDeviceGetEccMode, h)
    mig = _safe(nv.nvmlDeviceGetMigMode, h)
    return {
        "nvml": "available",
        "driver": _safe(nv.nvmlSystemGetDriverVersion),
        "gpu_uuid": _safe(nv.nvmlDeviceGetUUID, h),
        "power_limit_w": power_limit / 1000 if power_limit else None,
        "ecc_enabled": bool(ecc[0]) if ecc else None,
        "mig_enabled": bool(mig[0]) if mig else None,
        "persistence_mode": _safe(nv.nvmlDeviceGetPersistenceMode, h),
        "sm_clock_default_mhz": _safe(nv.nvmlDeviceGetDefaultApplicationsClock, h, nv.NVML_CLOCK_SM),
        "sm_clock_max_mhz": _safe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
        "mem_clock_max_mhz": _safe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
    }
