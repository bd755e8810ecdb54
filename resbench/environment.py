"""The environment fingerprint written into every run file: versions, device, driver, git state, time.
`resbench compare` warns when two runs' fingerprints differ (GPU, driver, versions)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import resbench

# Every runtime an extra installs (pyproject.toml; tests/resbench/test_environment.py checks), plus the model zoos:
# `merge` refuses runs whose versions differ and `compare` warns, so each must be recorded.
OPTIONAL_PACKAGES = ("triton", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "openvino", "torchao",
                     "tensorrt", "torch-tensorrt", "mlcommons-loadgen", "ray", "torchvision", "timm", "nvidia-ml-py")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(resbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_name()


def device_memory_bytes(device: str) -> int:
    """Memory of this machine's device of that kind: the current GPU's, or the host's RAM."""
    if device == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    import psutil

    return psutil.virtual_memory().total


def fingerprint(device: str) -> dict[str, Any]:
    sha = _git("rev-parse", "HEAD")
    env: dict[str, Any] = {
        "resbench": resbench.__version__,
        "git_sha": sha,
        # tracked files only: the run's own output (a run file written into the checkout) is untracked
        # and says nothing about the code that measured it
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if sha else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_type": device,
        "device": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": {p: v for p in OPTIONAL_PACKAGES if (v := _version(p)) is not None},
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({
            "gpu_count": torch.cuda.device_count(),
            "sm_count": props.multi_processor_count,
            "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
        })
    env.update(_gpu_details(device))
    return env


def _gpu_details(device: str) -> dict[str, Any]:
    """Driver, power limit, ECC, MIG and persistence mode from NVML; 'not available' without it."""
    if device != "cuda":
        return {"nvml": "not available: CPU run (NVML reports GPUs only)"}
    try:
        from resbench import telemetry

        return telemetry.gpu_environment()
    except Exception as exc:  # NVML missing or failing must never fail a run
        return {"nvml": f"not available: {exc}"}
