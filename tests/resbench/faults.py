"""Models that fault on purpose, and helpers that run `resbench run` on them, for the isolation, resume,
runner and bad-input tests (model spec `python:faults:NAME`, with this folder on PYTHONPATH).

`faulty` is a tiny conv net that computes normally except at three batch sizes, where its forward:
- ABORT_BATCH: calls os.abort() -> the worker dies with SIGABRT -> `crashed`;
- HOG_BATCH: allocates as many bytes as the worker's whole address-space cap -> the allocator fails ->
  `oom`. It refuses (RuntimeError -> `failed`) when no cap of at most MAX_CAP is set, so a broken cap can
  never make it eat the machine;
- SLEEP_BATCH: sleeps SLEEP_S, far past any test's case_timeout_s -> `timeout`.
The runner itself calls the model at other batch sizes, which the fault sizes avoid: the weight
calibration (batch 2, models/random_init.py) and the parity reference (every parity sample at once: the
tests use 4). In a suite with batch_sizes [1, ABORT_BATCH, HOG_BATCH, SLEEP_BATCH] the batch-1 group is
measured normally and each other group meets its fault in the first call of its first backend.

With FAULTS_ONCE_DIR set, the abort and the hang happen once per folder (the first call at their batch
size leaves a marker file there first), so the worker that retries the rest of the group measures the
group's other backends normally."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

ABORT_BATCH = 3
HOG_BATCH = 5
SLEEP_BATCH = 6
SLEEP_S = 600.0
ABORT_MESSAGE = "faults.Faulty: aborting on purpose"
MAX_CAP = 16 << 30


class Tiny(nn.Module):
    """conv-BN-ReLU, pooling, a classifier: milliseconds per call on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


class Faulty(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if batch == ABORT_BATCH and first_time("abort"):
            print(ABORT_MESSAGE, file=sys.stderr, flush=True)  # a crash's last words reach its row
            os.abort()
        if batch == HOG_BATCH:
            allocate_whole_cap()
        if batch == SLEEP_BATCH and first_time("sleep"):
            time.sleep(SLEEP_S)
        return super().forward(x)


def first_time(fault: str) -> bool:
    """True the first time `fault` is asked for under FAULTS_ONCE_DIR (always without it)."""
    folder = os.environ.get("FAULTS_ONCE_DIR")
    if not folder:
        return True
    try:
        Path(folder, fault).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def allocate_whole_cap() -> torch.Tensor:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > MAX_CAP:
        raise RuntimeError("faults.Faulty refuses to allocate without a memory cap (RESBENCH_WORKER_MEMORY_MB)")
    return torch.ones(soft, dtype=torch.uint8)  # the whole cap: cannot fit next to torch itself


def faulty() -> nn.Module:
    return Faulty()


def tiny() -> nn.Module:
    """The same net without faults, for runs that must succeed."""
    return Tiny()


# ------------------------------------------------------------------------------------------------ helpers

FAULTS_DIR = Path(__file__).resolve().parent
REPO = FAULTS_DIR.parent.parent
# Short timing: every measured case takes well under a second on a loaded 2-core CI machine.
FAST_TIMING = {"warmup_s": 0.02, "min_iters": 5, "min_time_s": 0.05, "max_time_s": 0.3, "target_rel_ci": 0.5,
               "rounds": 2, "case_timeout_s": 120}


def suite_dict(**fields: Any) -> dict[str, Any]:
    """A CPU suite of the fault-free tiny model at batch 1, with `fields` replacing its keys."""
    suite = {"name": "faults", "device": "cpu", "models": ["python:faults:tiny"], "backends": ["eager"],
             "batch_sizes": [1], "dtypes": ["fp32"], "image_size": 32, "timing": dict(FAST_TIMING),
             "parity": {"samples": 4}}
    timing = fields.pop("timing", {})
    suite.update(fields)
    suite["timing"].update(timing)
    return suite


def write_suite(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(suite_dict(**fields), sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `resbench` subprocesses: this folder importable (python:faults:...)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAULTS_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def resbench(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 240,
             **popen: Any) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m resbench.cli ...`) and wait for it."""
    return subprocess.run([sys.executable, "-m", "resbench.cli", *map(str, args)], capture_output=True,
                          text=True, env=env or cli_env(), timeout=timeout, cwd=REPO, **popen)


def run_main(monkeypatch, capsys, *args: str | Path) -> tuple[int, list[str]]:
    """`resbench ARGS` in this process, as a user runs it (cli.main, its exit-code mapping included): the
    exit code and the lines on stderr. (Imports inside: workers import this module for its models.)"""
    import pytest

    from resbench.cli import main

    monkeypatch.setattr(sys, "argv", ["resbench", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(code: int, lines: list[str], fragment: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
