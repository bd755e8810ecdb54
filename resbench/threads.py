"""The thread policy: one intra-op thread count for every runtime of a run.

A comparison where ONNX Runtime uses every core and torch a different number is not a comparison, and
on a 2-core machine two thread pools that each think they own the machine stall each other for ~500 ms
per call. So the measuring process sets one count before it prepares any backend, and every runtime
reads it from there:

- torch's intra-op pool and OpenMP/MKL in this process: `torch.set_num_threads(n)`;
- Inductor's C++ kernels (torch.compile, AOTInductor on CPU): Inductor bakes `torch.get_num_threads()`
  into each kernel's `omp parallel num_threads(...)` when `config.cpp.threads` is -1 (its default);
- ONNX Runtime: the backend passes `torch.get_num_threads()` as `intra_op_num_threads`;
- any backend with a pool of its own reads `torch.get_num_threads()` at prepare time (OpenVINO's
  `INFERENCE_NUM_THREADS`, ...);
- child processes (Inductor's compile workers, compilers): `OMP_NUM_THREADS`.

The count is the suite's `threads:` or, by default, the number of cores in this process's affinity
mask (`taskset`, cgroup cpusets and container CPU pinning shrink it; `os.cpu_count()` does not see
them). Every row records the count it was measured with."""

from __future__ import annotations

import os
from typing import Any

import torch

from resbench.system import affinity_cores


def default_threads() -> int:
    """Cores in this process's affinity mask."""
    return len(affinity_cores())


def resolve(requested: int | None) -> int:
    return requested if requested is not None else default_threads()


def apply(threads: int) -> int:
    """Set the policy in this process (before any backend prepares); returns the count now in force."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)   # for processes started from here on
    return torch.get_num_threads()


def describe(requested: int | None) -> dict[str, Any]:
    """The policy as the run file's environment records it."""
    return {
        "threads": resolve(requested),
        "source": "suite (threads:)" if requested is not None else "cores in the affinity mask",
        "affinity_cores": affinity_cores(),
        "cpu_count": os.cpu_count(),
        "applies_to": "torch intra-op + OpenMP/MKL, Inductor C++ kernels, ONNX Runtime intra_op_num_threads, "
                      "backends that read torch.get_num_threads()",
    }
