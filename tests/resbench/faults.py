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

With RESBENCH_FAULTS_ONCE_DIR set, the abort and the hang happen once per folder (the first call at their
batch size leaves a marker file there first), so the worker that retries the rest of the group measures the
group's other backends normally. (RESBENCH_*: `--executor ray` passes it on to its tasks.)

Models whose own code fails where resbench checks it before measuring (executors/model_check.py runs
their factory and counts their FLOPs, which calls the forward at batch 1): `abort_on_build`,
`exit_on_build` (SystemExit) and `hang_on_build` fail in the factory; `aborting` aborts in every forward.
With RESBENCH_FAULTS_KILL_PARENT=1, `faulty` also SIGKILLs its parent process at KILL_PARENT_BATCH: under
`--executor ray` that parent is the Ray task, which dies (never set it for local workers: there the
parent is `resbench` itself)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import torch
import yaml
from torch import nn

ABORT_BATCH = 3
HOG_BATCH = 5
SLEEP_BATCH = 6
KILL_PARENT_BATCH = 7
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
        if batch == KILL_PARENT_BATCH and os.environ.get("RESBENCH_FAULTS_KILL_PARENT") == "1":
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(SLEEP_S)  # killed with its parent (PR_SET_PDEATHSIG) long before this ends
        return super().forward(x)


def first_time(fault: str) -> bool:
    """True the first time `fault` is asked for under RESBENCH_FAULTS_ONCE_DIR (always without it)."""
    folder = os.environ.get("RESBENCH_FAULTS_ONCE_DIR")
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


class Aborting(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print(ABORT_MESSAGE, file=sys.stderr, flush=True)
        os.abort()


def aborting() -> nn.Module:
    return Aborting()


def abort_on_build() -> nn.Module:
    print(ABORT_MESSAGE, file=sys.stderr, flush=True)
    os.abort()


def exit_on_build() -> nn.Module:
    raise SystemExit(3)


def hang_on_build() -> nn.Module:
    time.sleep(SLEEP_S)
    return Tiny()


def tiny() -> nn.Module:
    """The same net without faults, for runs that must succeed."""
    return Tiny()


# ------------------------------------------------------------------------------------------------ helpers

FAULTS_DIR = Path(__file__).resolve().parent
REPO = FAULTS_DIR.parent.parent
# Short timing: a case stops at min_iters once min_time_s is measured (a tiny model: ~0.1 s of sampling). max_time_s
# leaves room for min_iters when the machine is loaded: the tiny model's calls took 18-24 ms (median) at load
# average 7-8 on 2 cores, ~0.3 ms on an idle one, and the 0.3 s this once was would have cut a row below the
# min_iters the tests assert after one OpenMP stall of ~0.2 s.
FAST_TIMING = {"warmup_s": 0.02, "min_iters": 5, "min_time_s": 0.05, "max_time_s": 1.0, "target_rel_ci": 0.5,
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


def cpu_cases(**fields: Any) -> list:
    """The cases of `suite_dict(**fields)` on the CPU, the suite validated as a suite file is. (Imports
    inside: workers import this module for its models.)"""
    from resbench.suite import expand, parse_suite

    return expand(parse_suite(yaml.safe_dump(suite_dict(**fields))), "cpu")


def write_suite(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(suite_dict(**fields), sort_keys=False))
    return path


def write_faulty_suite(folder: Path, batch_sizes: list[int], case_timeout_s: float) -> Path:
    """`faulty` at `batch_sizes`, two cheap backends per group (eager, and eager[cuda_graphs=auto]: plain eager
    on CPU), in folder/faults.yaml; also makes folder/once, for RESBENCH_FAULTS_ONCE_DIR."""
    (folder / "once").mkdir()
    return write_suite(folder / "faults.yaml", models=["python:faults:faulty"], batch_sizes=batch_sizes,
                       backends=["eager", {"name": "eager", "cuda_graphs": "auto"}],
                       timing={"case_timeout_s": case_timeout_s})


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `resbench` subprocesses: this folder importable (python:faults:...)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAULTS_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def start_run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`resbench run ...` in its own session, so that a signal to its process group reaches it as a
    terminal's Ctrl-C would."""
    return subprocess.Popen([sys.executable, "-m", "resbench.cli", "run", *map(str, args)], cwd=REPO,
                            env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen, timeout: float = 180) -> list[dict]:
    """The run file's rows once it has at least `count` (the file is replaced atomically, so every read
    sees a whole file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            rows = json.loads(path.read_text())["rows"]
            if len(rows) >= count:
                return rows
        assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {count} row(s) in {path} after {timeout} s")


class Interrupted(NamedTuple):
    rows: list[dict]                  # the run file's rows when it was interrupted
    stderr: str
    processes: list[psutil.Process]   # what the run had started by then (its workers)


def interrupt_after_rows(proc: subprocess.Popen, path: Path, count: int, timeout: float = 180,
                         exit_timeout: float = 60) -> Interrupted:
    """Ctrl-C once the run file at `path` has `count` rows: SIGINT to the run's process group, as a terminal
    sends it; then wait for the run to end (killed if it outlives `exit_timeout`)."""
    try:
        rows = wait_for_rows(path, count, proc, timeout)
        processes = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=exit_timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return Interrupted(rows, stderr, processes)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_gone(processes: list[psutil.Process], timeout: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(processes)


def processes_with_token(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries RESBENCH_TEST_TOKEN=`token` (what the run under test started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RESBENCH_TEST_TOKEN") == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def resbench(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 240,
             **popen: Any) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m resbench.cli ...`) and wait for it."""
    return subprocess.run([sys.executable, "-m", "resbench.cli", *map(str, args)], capture_output=True,
                          text=True, env=env or cli_env(), timeout=timeout, cwd=REPO, **popen)


# timing.case_timeout_s of the fault suites: what a hang costs (one wait of it per hung case) and what every
# healthy case of those suites must stay under. A tiny case's stages took 1.1-1.4 s in all (warm-up alone
# 0.3-0.7 s) at load average 5-7 on 2 cores, under 3x short of the 4 s this once was; 10 s leaves 7x.
CASE_TIMEOUT_S = 10
MODEL_CHECK_TIMEOUT_S = CASE_TIMEOUT_S
FAULTY_MODELS = {  # model -> (status of each of its cases, the start of their reason)
    "python:faults:abort_on_build": ("crashed", "model check: crashed during building model: killed by SIGABRT"),
    "python:faults:exit_on_build": ("failed", "model check: building model: SystemExit: 3"),
    "python:faults:hang_on_build": ("timeout", "model check: timed out during building model: over "
                                               f"timing.case_timeout_s = {MODEL_CHECK_TIMEOUT_S} s"),
    "python:faults:aborting": ("crashed", "model check: crashed during counting FLOPs at 32 px: killed by SIGABRT"),
}


def write_faulty_models_suite(path: Path, models: dict[str, tuple[str, str]]) -> Path:
    """The tiny model and `models` (some of FAULTY_MODELS) at two batch sizes: two groups each (with one,
    the old preflight left the FLOP count to the worker, which hid the parent's exposure)."""
    return write_suite(path, models=["python:faults:tiny", *models], batch_sizes=[1, 2],
                       timing={"case_timeout_s": MODEL_CHECK_TIMEOUT_S})


def assert_faulty_models_rows(run: Any, models: dict[str, tuple[str, str]]) -> None:
    """The tiny model measured at both sizes; every case of `models` with its status and reason."""
    by_model: dict[str, list] = {}
    for row in run.rows:
        by_model.setdefault(row.model, []).append(row)
    assert list(by_model) == ["python:faults:tiny", *models]
    for row in by_model["python:faults:tiny"]:
        assert row.status == "ok" and row.latency_ms.n >= 5 and row.parity.passed, (row.status, row.reason)
    for model, (status, reason) in models.items():
        assert [r.batch_size for r in by_model[model]] == [1, 2]
        for row in by_model[model]:
            assert row.status == status and row.reason.startswith(reason), (model, row.status, row.reason)


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
