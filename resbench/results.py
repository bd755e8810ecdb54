"""ResultRow and RunFile: the ONLY interface between measuring and reporting.

A run file is JSON (`schema: resbench.run/1`): the environment fingerprint, the validated suite, the run's
settings, and one flat row per case with its raw samples, so any statistic or gate can be recomputed later.
It is rewritten atomically (output_files.replace_file: a sibling temp file, fsync, rename) after every case,
so an interrupted run keeps every finished case and a reader never sees half a file.

A run file is never trusted: loading validates every row. A latency or sample that is not a finite,
positive number of milliseconds, an `ok` row without raw samples (or whose statistics count a different
number of them), a negative memory figure or time: each is a one-line RunFileError naming the row index
and the field (exit 2), because a gate or a recommendation computed from such numbers is worse than none
(a NaN candidate used to PASS, a negative p99 used to win). Parity metrics may be NaN: a NaN output is a
legitimate (failing) parity result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from resbench.errors import RunFileError, shown
from resbench.output_files import replace_file, resolve
from resbench.serving.record import ServingRecord

SCHEMA = "resbench.run/1"
Status = Literal["ok", "skipped", "failed", "oom", "timeout", "crashed"]


def backend_label(name: str, options: dict[str, Any]) -> str:
    """`compile[mode=max-autotune]`: a backend and its non-default options, for tables and identities."""
    if not options:
        return name
    return name + "[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]"


def identity_of(model: str, backend: str, options: dict[str, Any], batch_size: int, dtype: str,
                image_size: int, memory_format: str, timing_mode: str, scenario: str | None = None) -> tuple:
    """What `resbench compare` and `--resume` match cases on. A serving row (one per model, runtime, dtype
    and scenario) adds its scenario; its batch size and timing mode are not part of it (None): LoadGen
    times the serving, and the offline batch is chosen from the latency rows."""
    if scenario is not None:
        return (model, backend_label(backend, options), None, dtype, image_size, memory_format, None, scenario)
    return (model, backend_label(backend, options), batch_size, dtype, image_size, memory_format, timing_mode)


# Milliseconds, seconds, megabytes: a measured quantity is a finite number; a latency is also > 0.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Record(BaseModel):
    # NaN metrics (a row whose output had NaNs) are written as JSON NaN, which Python's json reads back.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class LatencyStats(_Record):
    """Milliseconds per call. Percentiles are nearest-rank; `ci_median` is a distribution-free 95% CI."""

    n: int = Field(ge=1)
    median: Positive
    mean: Positive
    stdev: NonNegative
    min: Positive
    max: Positive
    p90: Positive
    p95: Positive
    p99: Positive
    ci_median: tuple[Positive, Positive]
    cv: NonNegative


class Memory(_Record):
    """Each figure says what it is: allocator figures count torch's caching allocator only; process
    figures count the whole process (RSS on CPU; NVML per-process GPU memory on CUDA). `backend_mb` is
    the one comparable across the runtimes of a group (memory.py)."""

    backend_mb: NonNegative | None = None         # this backend's own footprint (CPU: RSS; GPU: allocator), memory.py
    prepare_mb: NonNegative | None = None         # CPU: RSS growth from its prepare (model copy to end of warm-up)
    calls_mb: NonNegative | None = None           # CPU: peak RSS growth during its timed calls (serving: LoadGen runs)
    peak_allocated_mb: NonNegative | None = None  # torch.cuda.max_memory_allocated during the backend's calls
    peak_reserved_mb: NonNegative | None = None   # torch.cuda.max_memory_reserved (allocator incl. cache)
    process_mb: NonNegative | None = None         # process peak RSS (CPU)
    gpu_process_mb: NonNegative | None = None     # NVML: GPU memory of this process (incl. TRT/ORT workspaces)
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
    images: int | None = None                # parity images the metrics are over (top-1 agreement of them)

    @property
    def top1_text(self) -> str:
        """'15/16' (images whose top-1 class is the reference's), or a percentage when the count is unknown."""
        if self.images:
            return f"{round(self.top1_agree * self.images)}/{self.images}"
        return f"{self.top1_agree:.0%}"


class Placement(_Record):
    """Where a row was measured, for runs spread over machines (`--executor ray`, merged shards). A row
    without one was measured where its run file's env says."""

    node: str                                # host name
    node_ip: str | None = None
    node_id: str | None = None               # Ray's node id
    device_name: str                         # the GPU model (the CPU model on a CPU run)
    gpu_index: int | None = None             # the GPU's index on its node as Ray gave it (CUDA_VISIBLE_DEVICES)
    cuda_visible_devices: str | None = None  # what the measuring process saw
    niceness: int | None = None              # its nice value: Ray starts workers at 15 (RAY_worker_niceness)


class Repetitions(_Record):
    """How many of a `--repeat K` run's repetitions a row combines. Fewer than asked: a partial row, written
    when the run stopped before the group's other repetitions (the runner saves after each repetition);
    `--resume` measures the group again and the complete row replaces it (docs/running.md)."""

    measured: int = Field(ge=1)              # repetitions finished (ok or not); repeat_medians_ms: the ok ones
    asked: int = Field(ge=2)                 # K

    @model_validator(mode="after")
    def _measured_at_most_asked(self) -> Repetitions:
        if self.measured > self.asked:
            raise ValueError(f"measured ({self.measured}) exceeds asked ({self.asked})")
        return self


class ResultRow(_Record):
    # identity
    model: str
    weights: str | None = None
    backend: str
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(ge=1)
    dtype: str
    image_size: int = Field(ge=1)
    memory_format: str
    timing_mode: str
    l2: str = "warm"
    device: str
    # outcome
    status: Status
    reason: str | None = None
    # model cost
    params: int | None = Field(None, ge=0)
    gflops: NonNegative | None = None        # per image, analytic (multiply-add = 2 FLOPs)
    # measurements
    prepare_s: NonNegative | None = None
    first_call_s: NonNegative | None = None
    latency_ms: LatencyStats | None = None
    samples_ms: list[Positive] = Field(default_factory=list)
    repeat_medians_ms: list[Positive] = Field(default_factory=list)   # one per ok --repeat repetition
    repetitions: Repetitions | None = None   # --repeat K > 1 only (absent in older files: complete)
    throughput_ips: Positive | None = None   # batch / median latency
    tflops: NonNegative | None = None        # gflops x batch / median latency
    pct_peak: NonNegative | None = None      # of hardware.py's peak for this device and dtype
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
    # serving rows (docs/serving.md): the LoadGen scenario and its figures; None on latency rows
    scenario: str | None = None
    serving: ServingRecord | None = None

    @model_validator(mode="after")
    def _ok_rows_are_measured(self) -> ResultRow:
        if self.status == "ok" and self.scenario is not None:  # a serving row: LoadGen's figures, no samples
            if self.serving is None:
                raise ValueError("an ok serving row needs its serving record (LoadGen's figures)")
        elif self.status == "ok":
            if not self.samples_ms or self.latency_ms is None:
                missing = "samples_ms" if not self.samples_ms else "latency_ms"
                raise ValueError(f"an ok row needs its raw samples and statistics; {missing} is empty")
            if self.latency_ms.n != len(self.samples_ms):
                raise ValueError(f"latency_ms.n is {self.latency_ms.n} but samples_ms holds "
                                 f"{len(self.samples_ms)} samples")
        return self

    @property
    def backend_label(self) -> str:
        return backend_label(self.backend, self.options)

    @property
    def partial(self) -> bool:
        """Fewer repetitions than `--repeat` asked: the run stopped before the rest (not a finished case)."""
        return self.repetitions is not None and self.repetitions.measured < self.repetitions.asked

    @property
    def identity(self) -> tuple:
        return identity_of(self.model, self.backend, self.options, self.batch_size, self.dtype,
                           self.image_size, self.memory_format, self.timing_mode, self.scenario)

    @property
    def label(self) -> str:
        """The row in a message: model, runtime, batch, dtype (and a serving row's scenario)."""
        scenario = f" {self.scenario}" if self.scenario is not None else ""
        return f"{self.model} {self.backend_label} b{self.batch_size} {self.dtype}{scenario}"


MAX_REPEAT = 1_000   # --repeat: 10**20 repetitions were OOM-killed before a word; 1,000 is already days


class RunSettings(BaseModel):
    """Command-line choices that shape the measurements, recorded so that `--resume` reuses them."""

    model_config = ConfigDict(extra="forbid")

    repeat: int = Field(1, ge=1, le=MAX_REPEAT)  # --repeat K: each row combines K repetitions


class RunFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, ser_json_inf_nan="constants")

    schema_: Literal["resbench.run/1"] = Field(SCHEMA, alias="schema")
    env: dict[str, Any]
    suite: dict[str, Any]
    settings: RunSettings = Field(default_factory=RunSettings)
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

    def suite_differences(self, suite: dict[str, Any]) -> list[str]:
        """The suite keys whose values differ between this run's suite and `suite`, sorted. A key missing on
        one side reads as None, the default of a key added since (an older run file has no `threads`)."""
        return sorted(k for k in set(self.suite) | set(suite) if self.suite.get(k) != suite.get(k))

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=1)

    def save(self, path: str | Path) -> None:
        """Atomically replace the file at `path` (a symlink's target) with this run; output_files.WriteError
        (a full disk) leaves the previous file as it was."""
        replace_file(resolve(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> RunFile:
        path = Path(path)
        if not path.is_file():
            raise RunFileError(f"run file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFileError(f"run file {str(path)!r} is not readable JSON: {exc}") from None
        except RecursionError:
            raise RunFileError(f"run file {str(path)!r} is nested too deeply to be a run file") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise RunFileError(f"run file {str(path)!r} has schema {shown(got)}; expected {SCHEMA!r}")
        try:
            run = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            got = f" (got {shown(err['input'])})" if err["type"] not in ("value_error", "missing") else ""
            raise RunFileError(f"run file {str(path)!r} is invalid at {where}: {message}{got}") from None
        except RecursionError:
            raise RunFileError(f"run file {str(path)!r} is nested too deeply to be a run file") from None
        # compare, report, recommend and --resume match rows to cases by identity: with two rows of one case
        # the first one found would silently stand for it (a 100x slower duplicate first read PASS)
        first_row: dict[tuple, int] = {}
        for index, row in enumerate(run.rows):
            if row.identity in first_row:
                raise RunFileError(f"run file {str(path)!r} is invalid: row {index} ({row.label}) repeats the case "
                                   f"of row {first_row[row.identity]}; a run file holds one row per case")
            first_row[row.identity] = index
        return run


class RunFileWriter:
    """Saves one run file again and again as its rows grow (the runner, after every case) at the cost of its
    new rows: each row's JSON text is made once and kept while that row object stays in the file. The text
    is byte for byte `RunFile.to_json()` (tests/resbench/test_results.py). A row must not change once
    saved (the runner saves final rows only; a row that is re-measured is a new object).

    Why: serialising every row at every save made a run's saves O(rows^2) in CPU. Measured on the 2-core
    development machine, 2,000 rows of 500 samples (a 31 MB file): one save 0.22 s of which `to_json`
    0.16-0.23 s, and the 2,000 saves of such a run 330-510 s of the parent's CPU (competing with the
    worker that measures); from kept texts 80 s in all (14 s serialising, 66 s writing), 0.075 s for the
    last save. The write stays: the file is rewritten whole, atomically, after every case."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[ResultRow, str]] = {}  # id(row) -> (the row, kept alive; its text)

    def to_json(self, run: RunFile) -> str:
        texts: dict[int, tuple[ResultRow, str]] = {}
        for row in run.rows:
            known = self._texts.get(id(row))
            texts[id(row)] = known if known is not None and known[0] is row else (row, _row_text(row))
        self._texts = texts  # rows no longer in the file are dropped
        head = run.model_copy(update={"rows": []}).to_json()
        if not run.rows:
            return head
        empty = '"rows": []\n}'
        assert head.endswith(empty), "rows must be the run file's last key"
        body = ",\n  ".join(texts[id(row)][1] for row in run.rows)
        return f'{head[:-len(empty)]}"rows": [\n  {body}\n ]\n}}'

    def save(self, run: RunFile, path: str | Path) -> None:
        """`run.save(path)` from kept row texts: the same atomic replace, the same bytes."""
        replace_file(resolve(path), self.to_json(run))


def _row_text(row: ResultRow) -> str:
    """A row's JSON as `RunFile.to_json` writes it: an item of `rows`, two levels deep (indent 1 per level;
    a newline inside a JSON string is escaped, so every raw newline starts a line to indent)."""
    return row.model_dump_json(by_alias=True, indent=1).replace("\n", "\n  ")
