"""Suite files: YAML -> validated, frozen `Suite` -> the list of `Case`s a run measures.

Everything a suite can get wrong is caught here, before any work, as one `SuiteError` line naming the
file, the key path, the bad value and the allowed values. A suite is untrusted text: it is read within
bounds (bounded_yaml: size, alias expansion, depth, duplicate keys; UTF-8 only), its numbers are strict
(`true` is not a batch size, `224.0` not an image size), its `name` is a safe slug (it names the folder
`runs/<name>/`), a value may not be listed twice, and the matrix has a ceiling of MAX_CASES cases."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resbench import bounded_yaml
from resbench.dtypes import DTYPE_NAMES
from resbench.errors import BackendError, SuiteError, UsageError, shown
from resbench.models.registry import MIN_IMAGE_SIZE, ModelSpec, check_model_name
from resbench.output_files import kind_of
from resbench.results import backend_label, identity_of

DeviceName = Literal["auto", "cuda", "cpu"]
ScenarioName = Literal["single-stream", "server", "offline"]
SCENARIOS: tuple[str, ...] = ScenarioName.__args__
QUICK_DURATION_S = 5.0          # quick mode's LoadGen min_duration per run (MLPerf: 600 s)
QUICK_MIN_QUERIES = 100         # quick mode's LoadGen min_query_count per run (Offline: samples)
MLPERF_SERVER_LATENCY_MS = 15.0  # MLPerf ResNet-50 Server: p99 <= 15 ms
DtypeName = Literal["fp32", "tf32", "fp16", "bf16", "int8"]
assert set(DtypeName.__args__) == set(DTYPE_NAMES)  # one list of precisions


MAX_CASES = 5_000            # cases one suite may expand to (suites/resnet50.yaml: 90 on a GPU)
MAX_THREADS = 1_024          # threads: the largest x86 servers have 768 hardware threads; 100,000 segfaults
MAX_QUERIES = 10_000_000     # serving.min_queries: 37x MLPerf Server's 270,336; LoadGen takes a uint64
MAX_SEED = 2**63 - 1         # parity.seed: torch generators take 64-bit seeds (parity adds 10,000 to it)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")   # a suite name is a folder: runs/<name>/


class _Strict(BaseModel):
    # strict: a YAML `true` is not the integer 1, "8" is not a batch size (an int is still a valid float);
    # finite: `.inf` seconds passed validation, then failed every case (OverflowError) or never timed out
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TimingConfig(_Strict):
    mode: Literal["device", "graph", "e2e"] = "device"
    warmup_s: float = Field(0.5, ge=0)
    min_iters: int = Field(20, ge=1)
    min_time_s: float = Field(1.0, ge=0)
    max_time_s: float = Field(10.0, gt=0)
    target_rel_ci: float = Field(0.01, gt=0, lt=1)
    rounds: int = Field(5, ge=1)  # interleaved rounds across the backends of one (model, dtype, batch)
    l2: Literal["warm", "cold"] = "warm"
    case_timeout_s: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _times_ordered(self) -> TimingConfig:
        if self.max_time_s < self.min_time_s:
            raise ValueError(f"max_time_s ({self.max_time_s}) must be >= min_time_s ({self.min_time_s})")
        return self


class ParityConfig(_Strict):
    reference: Literal["fp64", "fp32"] = "fp64"
    samples: int = Field(16, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class CpuTimingOverrides(_Strict):
    """Any subset of TimingConfig's keys."""

    mode: Literal["device", "graph", "e2e"] | None = None
    warmup_s: float | None = Field(None, ge=0)
    min_iters: int | None = Field(None, ge=1)
    min_time_s: float | None = Field(None, ge=0)
    max_time_s: float | None = Field(None, gt=0)
    target_rel_ci: float | None = Field(None, gt=0, lt=1)
    rounds: int | None = Field(None, ge=1)
    l2: Literal["warm", "cold"] | None = None
    case_timeout_s: float | None = Field(None, gt=0)


class ServingConfig(_Strict):
    """MLPerf LoadGen serving scenarios, measured after the latency rows (docs/serving.md)."""

    scenarios: list[ScenarioName] = Field(default_factory=lambda: list(SCENARIOS), min_length=1)
    compliant: bool = False                    # true: MLPerf's ResNet-50 rules (mlperf.conf), no quick floors
    duration_s: float | None = Field(None, gt=0)     # quick mode: LoadGen's min_duration per run
    min_queries: int | None = Field(None, ge=1, le=MAX_QUERIES)  # quick mode: LoadGen's min_query_count per run
    server_latency_ms: float = Field(15.0, gt=0)     # Server: the p99 latency bound
    max_batch: int = Field(8, ge=1)                  # Server dynamic batcher: run once this many wait...
    max_wait_ms: float = Field(2.0, ge=0)            # ...or once the oldest has waited this long
    target_qps: float | None = Field(None, gt=0)     # Server: one run at this QPS...
    find_peak: bool | None = None                    # ...or search the highest QPS under the bound (default)

    @field_validator("scenarios")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"scenarios {v} name a scenario twice; give each of {', '.join(SCENARIOS)} once")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ServingConfig:
        if self.target_qps is not None and self.find_peak:
            raise ValueError(f"target_qps ({self.target_qps:g}) and find_peak: true exclude each other; "
                             "give one (find_peak is the default)")
        if self.compliant:
            quick = [k for k in ("duration_s", "min_queries") if getattr(self, k) is not None]
            if quick:
                raise ValueError(f"{quick[0]} is a quick-mode floor; compliant: true runs MLPerf's own "
                                 "(600 s, its query counts): drop one of them")
            if self.server_latency_ms != MLPERF_SERVER_LATENCY_MS:
                raise ValueError(f"server_latency_ms {self.server_latency_ms:g} with compliant: true; MLPerf's "
                                 f"ResNet-50 Server bound is {MLPERF_SERVER_LATENCY_MS:g} ms")
        return self

    @property
    def peak_search(self) -> bool:
        return self.target_qps is None if self.find_peak is None else self.find_peak

    @property
    def min_duration_s(self) -> float:
        return QUICK_DURATION_S if self.duration_s is None else self.duration_s

    @property
    def min_query_count(self) -> int:
        return QUICK_MIN_QUERIES if self.min_queries is None else self.min_queries


class ServingOverrides(_Strict):
    """`cpu.serving`: the run-length and batching keys of `serving`, for a CPU run."""

    duration_s: float | None = Field(None, gt=0)
    min_queries: int | None = Field(None, ge=1, le=MAX_QUERIES)
    server_latency_ms: float | None = Field(None, gt=0)
    max_batch: int | None = Field(None, ge=1)
    max_wait_ms: float | None = Field(None, ge=0)
    target_qps: float | None = Field(None, gt=0)


class CpuOverrides(_Strict):
    """Applied when the device resolves to CPU, to keep a CPU run short."""

    batch_sizes: list[int] | None = Field(None, min_length=1)
    dtypes: list[DtypeName] | None = Field(None, min_length=1)
    image_size: int | None = None
    timing: CpuTimingOverrides | None = None
    serving: ServingOverrides | None = None

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        return _check_batch_sizes(v) if v is not None else v

    @field_validator("dtypes")
    @classmethod
    def _dtypes_once(cls, v: list[str] | None) -> list[str] | None:
        return _once(v, "dtype") if v is not None else v


class ModelEntry(_Strict):
    name: str
    weights: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        check_model_name(v)
        return v

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.weights)


class BackendEntry(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)  # validated by the backend's Options schema

    @property
    def label(self) -> str:
        return backend_label(self.name, self.options)


def _check_batch_sizes(v: list[int]) -> list[int]:
    bad = [b for b in v if b < 1]
    if bad:
        raise ValueError(f"batch size {bad[0]} is not allowed; batch sizes must be integers >= 1")
    return _once(v, "batch size")


def _once(values: Sequence[Any], what: str) -> Any:
    """`values` unchanged when no value repeats; else ValueError naming the first repeated one (a repeat
    would measure the same case twice and confuse --resume and compare, which match cases by identity)."""
    first: dict[Any, int] = {}
    for index, value in enumerate(values):
        if value in first:
            raise ValueError(f"{what} {shown(value)} is listed twice (positions {first[value]} and {index}); "
                             f"list each once")
        first[value] = index
    return values


class Suite(_Strict):
    name: str
    description: str = ""
    device: DeviceName = "auto"
    models: list[ModelEntry] = Field(min_length=1)
    backends: list[BackendEntry] = Field(min_length=1)
    batch_sizes: list[int] = Field(min_length=1)
    dtypes: list[DtypeName] = Field(min_length=1)
    image_size: int = 224
    memory_format: Literal["channels_last", "contiguous"] = "channels_last"
    # intra-op threads of every runtime (torch, OpenMP, Inductor kernels, ONNX Runtime); None: the cores in
    # the process's affinity mask (threads.py)
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    timing: TimingConfig = TimingConfig()
    parity: ParityConfig = ParityConfig()
    serving: ServingConfig | None = None
    cpu: CpuOverrides = CpuOverrides()

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("backends", mode="before")
    @classmethod
    def _backend_shorthand(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        entries = []
        for item in v:
            if isinstance(item, str):
                entries.append({"name": item})
            elif isinstance(item, dict) and "options" not in item:
                options = {k: val for k, val in item.items() if k != "name"}
                entries.append({"name": item.get("name"), "options": options})
            else:
                entries.append(item)
        return entries

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not NAME_PATTERN.fullmatch(v):
            raise ValueError(f"name {shown(v)} is not allowed: it names the folder runs/<name>/, so use 1-100 "
                             f"letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("models")
    @classmethod
    def _models_once(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        _once([m.name for m in v], "model")  # rows name the model only: two checkpoints would be one case
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return _check_batch_sizes(v)

    @field_validator("dtypes")
    @classmethod
    def _dtypes_once(cls, v: list[str]) -> list[str]:
        return _once(v, "dtype")

    @model_validator(mode="after")   # before _not_too_many_cases, which applies the cpu block too
    def _cpu_serving(self) -> Suite:
        if self.cpu.serving is None:
            return self
        if self.serving is None:
            raise ValueError("cpu.serving overrides a serving block, and this suite has none; add `serving:` "
                             "or drop cpu.serving")
        try:
            self.for_device("cpu")
        except ValidationError as exc:
            message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"cpu.serving: {message}") from None
        return self

    @model_validator(mode="after")
    def _not_too_many_cases(self) -> Suite:
        for device in ("cuda", "cpu"):
            suite = self.for_device(device)
            sizes = {"models": len(suite.models), "backends": len(suite.backends),
                     "batch_sizes": len(suite.batch_sizes), "dtypes": len(suite.dtypes)}
            count = sizes["models"] * sizes["backends"] * sizes["batch_sizes"] * sizes["dtypes"]
            if count > MAX_CASES:
                product = " x ".join(f"{n} {key}" for key, n in sizes.items())
                raise ValueError(f"the suite expands to {count:,} cases on {device} ({product}); at most "
                                 f"{MAX_CASES:,}: split it into several suites")
        return self

    @field_validator("image_size")
    @classmethod
    def _big_enough(cls, v: int) -> int:
        if v < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size {v} is too small for a ResNet; it must be >= {MIN_IMAGE_SIZE}")
        return v

    def for_device(self, device: str) -> Suite:
        """This suite with the `cpu:` overrides applied when `device` is cpu."""
        if device != "cpu":
            return self
        update: dict[str, Any] = {}
        if self.cpu.batch_sizes is not None:
            update["batch_sizes"] = self.cpu.batch_sizes
        if self.cpu.dtypes is not None:
            update["dtypes"] = self.cpu.dtypes
        if self.cpu.image_size is not None:
            update["image_size"] = self.cpu.image_size
        if self.cpu.timing is not None:
            update["timing"] = self.timing.model_copy(update=self.cpu.timing.model_dump(exclude_none=True))
        if self.cpu.serving is not None and self.serving is not None:
            # validated again: a cpu target_qps must not meet find_peak: true, say
            merged = {**self.serving.model_dump(exclude_unset=True), **self.cpu.serving.model_dump(exclude_none=True)}
            update["serving"] = ServingConfig.model_validate(merged)
        return self.model_copy(update=update)


class Case(BaseModel):
    """One measurement: a model x backend (with options) x batch size x dtype, under the suite's settings."""

    model_config = ConfigDict(frozen=True)

    model: ModelSpec
    backend: str
    options: dict[str, Any]
    batch_size: int
    dtype: DtypeName
    image_size: int
    memory_format: Literal["channels_last", "contiguous"]
    device: Literal["cuda", "cpu"]
    timing: TimingConfig
    parity: ParityConfig
    threads: int | None = None   # the run's thread policy (threads.py); None: resolved where it is measured
    # serving cases (docs/serving.md): one per (model, runtime, dtype, scenario), after the latency cases
    scenario: ScenarioName | None = None
    serving: ServingConfig | None = None
    loadgen_dir: str | None = None     # set by the runner: where this case's LoadGen logs go
    serving_note: str | None = None    # set by the runner: why offline runs at this batch size

    @property
    def backend_label(self) -> str:
        return backend_label(self.backend, self.options)

    @property
    def group_key(self) -> tuple:
        """Cases with one group key are measured together: in interleaved rounds, or (serving cases) one
        runtime's scenarios in one worker."""
        if self.scenario is not None:
            return (self.model.name, str(self.model.weights), self.dtype, "serving", self.backend_label)
        return (self.model.name, str(self.model.weights), self.dtype, self.batch_size)

    @property
    def identity(self) -> tuple:
        """What `resbench compare` matches cases on."""
        return identity_of(self.model.name, self.backend, self.options, self.batch_size, self.dtype,
                           self.image_size, self.memory_format, self.timing.mode, self.scenario)


# ---------------------------------------------------------------------------------------------- loading


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the pydantic model that owns the last key of `loc`."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            inner = getattr(candidate, "__args__", (candidate,))
            for c in (candidate, *inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    current = c
                    break
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _first_error(path: str, exc: ValidationError) -> SuiteError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = _format_loc(loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Suite, loc)
        return SuiteError(path, key, f"unknown key {loc[-1]!r}; allowed keys: {', '.join(allowed)}")
    if err["type"] == "missing":
        return SuiteError(path, key, "required key is missing")
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("too_short",):
        message = "must not be empty"
    value = err.get("input")
    if err["type"] != "value_error" and not isinstance(value, dict | list):
        message += f" (got {shown(value)})"
    return SuiteError(path, key, message)


def _validate_backend_options(path: str, suite: Suite) -> None:
    from resbench.backends import get_backend  # registers every backend

    labels: dict[str, int] = {}
    for i, entry in enumerate(suite.backends):
        try:
            backend = get_backend(entry.name)
        except BackendError as exc:
            raise SuiteError(path, f"backends[{i}].name", str(exc)) from None
        try:
            backend.Options.model_validate(entry.options)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            key = f"backends[{i}]." + _format_loc(err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(backend.Options, tuple(err["loc"])) or ["(none)"]  # nested: calibration
                what = "option" if len(err["loc"]) == 1 else f"key of {_format_loc(err['loc'][:-1])}"
                msg = f"unknown {what} {err['loc'][-1]!r} for backend {entry.name!r}; allowed: {', '.join(allowed)}"
            else:
                msg = err["msg"].removeprefix("Value error, ") + f" (got {shown(err.get('input'))})"
            raise SuiteError(path, key, msg) from None
        label = backend_label(entry.name, _normalized_options(entry))
        if label in labels:
            raise SuiteError(path, f"backends[{i}]", f"is the same case as backends[{labels[label]}] ({label}; "
                                                     f"options equal to their defaults are dropped); list each "
                                                     f"backend once")
        labels[label] = i


def parse_suite(text: str, path: str = "<suite>", base_dir: Path | None = None) -> Suite:
    """Validate suite text. Relative weights paths resolve against `base_dir` (the suite file's folder)."""
    try:
        data = bounded_yaml.load(text)
    except bounded_yaml.InputTooLarge as exc:
        raise SuiteError(path, "", str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(path, "", f"invalid YAML: {where}{problem}") from None
    except RecursionError:
        raise SuiteError(path, "", "invalid YAML: values are nested too deeply") from None
    if not isinstance(data, dict):
        raise SuiteError(path, "", f"a suite is a YAML mapping with keys {', '.join(Suite.model_fields)}; "
                                   f"got {type(data).__name__}")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    _validate_backend_options(path, suite)
    return _weights_relative_to(suite, base_dir) if base_dir is not None else suite


def _weights_relative_to(suite: Suite, folder: Path) -> Suite:
    """Relative (and ~) weights paths made absolute against `folder`, so a suite means the same checkpoint
    from whatever directory it is run."""
    models = []
    for entry in suite.models:
        if entry.weights is not None:
            weights = os.path.expanduser(entry.weights)
            if not os.path.isabs(weights):
                weights = os.path.normpath(os.path.join(os.path.abspath(folder), weights))
            entry = entry.model_copy(update={"weights": weights})
        models.append(entry)
    return suite.model_copy(update={"models": models})


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.exists():
        raise SuiteError(str(path), "", "suite file does not exist" + _suggest_suites(path))
    kind = kind_of(path.stat().st_mode)
    if kind is not None:   # a directory or a FIFO read "does not exist"
        raise SuiteError(str(path), "", f"{kind}, not a suite file; give a YAML file")
    try:
        with path.open("rb") as f:
            data = f.read(bounded_yaml.MAX_BYTES + 1)   # never read a huge file whole
        text = bounded_yaml.decode(data)
    except OSError as exc:
        raise SuiteError(str(path), "", f"cannot read suite file: {exc.strerror}") from None
    except bounded_yaml.InputTooLarge:
        raise SuiteError(str(path), "", f"the suite file is larger than {bounded_yaml.MAX_BYTES:,} bytes; a "
                                        f"suite is a short YAML file") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(str(path), "", f"the suite file is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                                        f"at offset {exc.start})") from None
    return parse_suite(text, str(path), base_dir=path.parent)


def _suggest_suites(path: Path) -> str:
    folder = path.parent if path.parent.is_dir() else Path("suites")
    names = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return f"; suites in {folder}/: {', '.join(names)}" if names else ""


# -------------------------------------------------------------------------------------------- expansion


def resolve_device(requested: str) -> Literal["cuda", "cpu"]:
    """`auto` -> cuda when torch sees a GPU here, else cpu; `cuda` without one is a usage error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is visible to torch; use --device cpu")
    return requested  # type: ignore[return-value]


def expand(suite: Suite, device: Literal["cuda", "cpu"]) -> list[Case]:
    """The suite's matrix on `device` (cpu overrides applied): models x dtypes x batches x backends."""
    suite = suite.for_device(device)
    # None (no `threads:`) stays None: the cores of the machine that measures it, resolved there
    # (measure.py), so a Ray node uses its own cores, not the driver's
    thread_count = suite.threads
    cases = []
    for model, dtype, batch, backend in itertools.product(
        suite.models, suite.dtypes, suite.batch_sizes, suite.backends
    ):
        cases.append(Case(
            model=model.spec, backend=backend.name, options=_normalized_options(backend),
            batch_size=batch, dtype=dtype, image_size=suite.image_size, memory_format=suite.memory_format,
            device=device, timing=suite.timing, parity=suite.parity, threads=thread_count,
        ))
    return cases + _serving_cases(suite, device, thread_count)


def _serving_cases(suite: Suite, device: Literal["cuda", "cpu"], thread_count: int | None) -> list[Case]:
    """One case per (model, dtype, backend, scenario), measured after every latency case. The batch size
    is the one the runtime is called at: 1 (single-stream), max_batch (server); offline's is the
    runtime's best, chosen by the runner from the latency rows (max_batch until then)."""
    serving = suite.serving
    if serving is None:
        return []
    cases = []
    for model, dtype, backend, scenario in itertools.product(
        suite.models, suite.dtypes, suite.backends, serving.scenarios
    ):
        cases.append(Case(
            model=model.spec, backend=backend.name, options=_normalized_options(backend),
            batch_size=1 if scenario == "single-stream" else serving.max_batch, dtype=dtype,
            image_size=suite.image_size, memory_format=suite.memory_format, device=device, timing=suite.timing,
            parity=suite.parity, threads=thread_count, scenario=scenario, serving=serving,
        ))
    return cases


def _normalized_options(entry: BackendEntry) -> dict[str, Any]:
    """Options as validated, without those equal to their defaults (so `{mode: default}` == `{}`)."""
    from resbench.backends import get_backend

    validated = get_backend(entry.name).Options.model_validate(entry.options)
    return validated.model_dump(mode="json", exclude_defaults=True)
