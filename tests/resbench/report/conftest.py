"""Synthetic run files for the report tests: rows built from seeded raw samples, so every rendering is
deterministic. The samples are exact normal quantiles (not RNG draws), so the snapshots do not depend on
numpy's random streams."""

from __future__ import annotations

import os
from pathlib import Path
from statistics import NormalDist

import pytest

from resbench.results import Memory, Parity, ResultRow, RunFile
from resbench.stats import summarize

ENV = {"resbench": "0.1.0", "git_sha": "0123456789abcdef", "git_dirty": False,
       "created": "2025-01-01T00:00:00+00:00", "host": "ci-runner", "os": "Linux-6.1-x86_64",
       "python": "3.11.7", "torch": "2.13.0+cpu", "cuda": None, "device_type": "cpu",
       "device": "Test CPU @ 2.0GHz", "cpu": "Test CPU @ 2.0GHz", "cpu_count": 2,
       "packages": {"triton": "3.9.0"}}
SUITE = {"name": "synthetic", "device": "cpu", "models": [{"name": "resnet18"}, {"name": "resnet50"}],
         "backends": [{"name": "eager", "options": {}}, {"name": "compile", "options": {}}],
         "batch_sizes": [1, 8], "dtypes": ["fp32"], "image_size": 224, "memory_format": "channels_last",
         "timing": {"mode": "device", "warmup_s": 0.5, "min_iters": 20, "min_time_s": 1.0, "max_time_s": 10.0,
                    "target_rel_ci": 0.01, "rounds": 5, "l2": "warm", "case_timeout_s": 900.0},
         "parity": {"reference": "fp64", "samples": 16, "seed": 0}}


def quantile_samples(median_ms: float, cv: float, n: int, skew: int = 0) -> list[float]:
    """n deterministic samples whose median is `median_ms` and spread about `cv`, interleaved (not sorted)
    as a real run's would be; `skew` adds that many slow outliers (x1.5) at the end."""
    normal = NormalDist()
    values = [median_ms * (1 + cv * normal.inv_cdf((i + 0.5) / n)) for i in range(n)]
    order = sorted(range(n), key=lambda i: (i * 7919) % n)
    samples = [values[i] for i in order]
    return samples[: n - skew] + [median_ms * 1.5] * skew


def make_row(model: str = "resnet50", backend: str = "eager", batch: int = 1, dtype: str = "fp32",
             median_ms: float = 10.0, cv: float = 0.02, n: int = 40, status: str = "ok",
             **overrides) -> ResultRow:
    gflops = {"resnet18": 3.63, "resnet50": 8.18}.get(model, 1.0)
    fields = dict(model=model, backend=backend, batch_size=batch, dtype=dtype, image_size=224,
                  memory_format="channels_last", timing_mode="device", device="cpu", status=status,
                  params=11_689_512 if model == "resnet18" else 25_557_032, gflops=gflops)
    if status == "ok":
        samples = overrides.pop("samples_ms", None) or quantile_samples(median_ms, cv, n)
        stats = summarize(samples)
        fields.update(
            samples_ms=samples, latency_ms=stats, throughput_ips=batch / (stats.median * 1e-3),
            tflops=gflops * batch / stats.median, prepare_s=0.01 if backend == "eager" else 30.0,
            first_call_s=0.02, memory=Memory(process_mb=900.0 + 10 * batch, source="process_mb: peak RSS"),
            parity=Parity(reference="fp64", rel_l2=1e-6, max_abs=1e-5, cosine=0.999999, sqnr_db=120.0,
                          top1_agree=1.0, top5_overlap=1.0, err_ratio=None if backend == "eager" else 1.1,
                          passed=True, rule="err_ratio 1.1 <= 2" if backend != "eager" else "eager baseline"),
        )
    else:
        fields["reason"] = overrides.pop("reason", f"{backend} is not available here")
    fields.update(overrides)
    return ResultRow(**fields)


def make_run(rows: list[ResultRow], **env) -> RunFile:
    return RunFile(env={**ENV, **env}, suite=SUITE, rows=rows)


class Factory:
    """The builders above, handed to tests as the `factory` fixture (test modules cannot import conftest
    under --import-mode=importlib)."""

    quantile_samples = staticmethod(quantile_samples)
    make_row = staticmethod(make_row)
    make_run = staticmethod(make_run)


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def synthetic_run() -> RunFile:
    """Two depths x two backends x two batch sizes, plus a skipped and a failed case."""
    rows = []
    for model, base in (("resnet18", 4.0), ("resnet50", 10.0)):
        for batch in (1, 8):
            rows.append(make_row(model, "eager", batch, median_ms=base * batch ** 0.8))
            rows.append(make_row(model, "compile", batch, median_ms=0.8 * base * batch ** 0.8, cv=0.03))
    rows.append(make_row("resnet50", "tensorrt", 1, status="skipped",
                         reason="tensorrt needs a CUDA GPU; install torch-tensorrt on a GPU machine"))
    rows.append(make_row("resnet50", "onnxruntime", 8, status="failed", reason="RuntimeError: export failed"))
    return make_run(rows)


SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE_ENV = "RESBENCH_UPDATE_SNAPSHOTS"


@pytest.fixture
def snapshot():
    """`snapshot(name, text)` asserts `text` equals snapshots/<name>; with RESBENCH_UPDATE_SNAPSHOTS=1 it
    (re)writes the file instead, so a deliberate rendering change is one explicit command."""

    def check(name: str, text: str) -> None:
        path = SNAPSHOTS / name
        if os.environ.get(UPDATE_ENV) == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.is_file(), f"no snapshot {path}; create it with {UPDATE_ENV}=1 pytest {__file__}"
        expected = path.read_text(encoding="utf-8")
        assert text == expected, (f"rendering differs from {path}; if the change is intended, regenerate "
                                  f"with {UPDATE_ENV}=1 pytest tests/resbench/report")

    return check
