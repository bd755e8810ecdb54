"""ResultRow and RunFile: the ONLY interface between measuring and reporting.

A run file is JSON (`schema: resbench.run/1`): the environment fingerprint, the validated suite, and one
flat row per case with its raw samples, so any statistic or gate can be recomputed later. It is rewritten
atomically (write a sibling temp file, fsync, rename) after every case, so an interrupted run keeps every
finished case and a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resbench.errors import RunFileError

SCHEMA = "resbench.run/1"
Status = Literal["ok", "skipped", "failed", "oom", "timeout", "crashed"]


def backend_label(name: str, options: dict[str, Any]) -> str:
    """`compile[mode=max-autotune]`: a backend and its non-default options, for tables and identities."""
    if not options:
        return name
    return name + "[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]"


def identity_of(model: str, backend: str, options: dict[str, Any], batch_size: int, dtype: str,
                image_size: int, memory_format: str, timing_mode: str) -> tuple:
    """What `resbench compare` and `--resume` match cases on."""
    return (model, backend_label(backend, options), batch_size, dtype, image_size, memory_format, timing_mode)


class _Record(BaseModel):
    # NaN metrics (a row whose output had NaNs) are written as JSON NaN, which Python's json reads back.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class LatencyStats(_Record):
    """Milliseconds per call. Percentiles are nearest-rank; `ci_median` is a distribution-free 95% CI."""

    n: int
    median: float
    mean: float
    stdev: float
    min: float
    max: float
    p90: float
    p95: float
    p99: float
    ci_median: tuple[float, float]
    cv: float


class Memory(_Record):
    """Each figure says what it is: allocator figures count torch's caching allocator only; process
    figures count the whole process (RSS on CPU; NVML per-process GPU memory on CUDA). `backend_mb` is
    the one comparable across the runtimes of a group (memory.py)."""

    backend_mb: float | None = None          # this backend's own footprint (CPU: RSS; GPU: allocator), memory.py
    prepare_mb: float | None = None          # CPU: RSS growth from its prepare (model copy to end of warm-up)
    calls_mb: float | None = None            # CPU: peak RSS growth during its own timed calls
    peak_allocated_mb: float | None = None   # torch.cuda.max_memory_allocated during the backend's calls
    peak_reserved_mb: float | None = None    # torch.cuda.max_memory_reserved (allocator incl. cache)
    process_mb: float | None = None          # process peak RSS (CPU)
    gpu_process_mb: float | None = None      # NVML: GPU memory held by this process (incl. TRT/ORT workspaces)
    source: str = ""                         # words: how the figures were obtained


class Parity(_Record):
    reference: str                           # "fp64" or "fp32 (TF32 off)"
    rel_l2: float
    max_abs: float
    cosine: float
    sqnr_db: float
    top1_agree: float
    top5_overlap: float
    err_ratio: float | None                  # rel_l2 / eager's rel_l2 in the same dtype (None for eager itself)
    passed: bool
    rule: str                                # which clause of the verdict decided


class Placement(_Record):
    """Where a row was measured, for runs spread over machines (`--executor ray`, merged shards). A row
    without one was measured where its run file's env says."""

    node: str                                # host name
    node_ip: str | None = None
    node_id: str | None = None               # Ray's node id
    device_name: str                         # the GPU model (the CPU model on a CPU run)
    gpu_index: int | None = None             # the GPU's index on its node as Ray gave it (CUDA_VISIBLE_DEVICES)
    cuda_visible_devices: str | None = None  # what the measuring process saw


class ResultRow(_Record):
    # identity
    model: str
    weights: str | None = None
    backend: str
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int
    dtype: str
    image_size: int
    memory_format: str
    timing_mode: str
    l2: str = "warm"
    device: str
    # outcome
    status: Status
    reason: str | None = None
    # model cost
    params: int | None = None
    gflops: float | None = None              # per image, analytic (multiply-add = 2 FLOPs)
    # measurements
    prepare_s: float | None = None
    first_call_s: float | None = None
    latency_ms: LatencyStats | None = None
    samples_ms: list[float] = Field(default_factory=list)
    repeat_medians_ms: list[float] = Field(default_factory=list)   # one per --repeat
    throughput_ips: float | None = None      # batch / median latency
    tflops: float | None = None              # gflops x batch / median latency
    pct_peak: float | None = None            # of hardware.py's peak for this device and dtype
    peak_source: str | None = None
    memory: Memory = Field(default_factory=Memory)
    parity: Parity | None = None
    numerics: dict[str, Any] = Field(default_factory=dict)         # TF32, cudnn.benchmark, builder flags...
    artifacts: dict[str, Any] = Field(default_factory=dict)        # provider, engine/package size, ...
    telemetry: dict[str, Any] = Field(default_factory=dict)
    threads: int | None = None               # intra-op threads every runtime of the run used (threads.py)
    system: dict[str, Any] = Field(default_factory=dict)           # machine load while measured (system.py)
    warnings: list[str] = Field(default_factory=list)
    placement: Placement | None = None       # where it ran, when the run spans machines

    @property
    def backend_label(self) -> str:
        return backend_label(self.backend, self.options)

    @property
    def identity(self) -> tuple:
        return identity_of(self.model, self.backend, self.options, self.batch_size, self.dtype,
                           self.image_size, self.memory_format, self.timing_mode)


class RunFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, ser_json_inf_nan="constants")

    schema_: Literal["resbench.run/1"] = Field(SCHEMA, alias="schema")
    env: dict[str, Any]
    suite: dict[str, Any]
    rows: list[ResultRow] = Field(default_factory=list)

    def device_of(self, row: ResultRow) -> str:
        """The device (GPU or CPU model) `row` was measured on: its placement's, else the run's."""
        return row.placement.device_name if row.placement is not None else str(self.env.get("device"))

    def devices(self) -> dict[str, int]:
        """Rows per device they were measured on; more than one key: a run across GPU models."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[self.device_of(row)] = counts.get(self.device_of(row), 0) + 1
        return counts

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=1)

    def save(self, path: str | Path) -> None:
        """Atomically replace `path` with this run."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> RunFile:
        path = Path(path)
        if not path.is_file():
            raise RunFileError(f"run file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFileError(f"run file {str(path)!r} is not readable JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise RunFileError(f"run file {str(path)!r} has schema {got!r}; expected {SCHEMA!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise RunFileError(f"run file {str(path)!r} is invalid at {where}: {err['msg']}") from None
