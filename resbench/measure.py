"""Measures one group: the cases sharing (model, weights, dtype, batch), in the process that calls it.

A group builds the model once, prepares every backend in it (prepare and first call timed separately),
warms each up, measures them in interleaved rounds (timing.py), then checks each against the fp64
reference on the parity batch (parity.py). One failing backend becomes a `failed`/`oom` row and never
costs another its result.

This module knows nothing of run files, resume, repeats or processes: an executor (resbench/executors/)
decides where `run_group` runs (this process, a fresh worker process, a Ray task) and streams its rows
back to the runner, which alone writes the run file. Data path: cli -> runner -> executor -> measure ->
backends / timing / parity -> results."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from resbench import hardware, memory, parity, system, telemetry
from resbench import threads as thread_policy
from resbench.backends import get_backend, shared_graph
from resbench.backends.base import Forward, private_copy
from resbench.dtypes import torch_dtype
from resbench.environment import device_name
from resbench.errors import describe
from resbench.models import ModelCost, ModelSpec, build_model, model_cost
from resbench.numerics import pinned
from resbench.results import Memory, ResultRow
from resbench.stats import summarize
from resbench.suite import Case, ParityConfig
from resbench.timing import Measurement, Sampler, measure_interleaved, noise_warnings, synchronize, warmup

ProgressFn = Callable[[str], None]
StageFn = Callable[[int | None, str], None]   # (index of the case in its group, or None for the group; stage)
RowFn = Callable[[int, ResultRow], None]      # (index of the case in its group, its final row)
IN_WORKER = False  # set by the worker executor: memory figures then describe one group's process


# ------------------------------------------------------------------------------------------------ models


@functools.lru_cache(maxsize=2)
def _model(spec: ModelSpec, seed: int) -> torch.nn.Module:
    return build_model(spec, seed)


@functools.lru_cache(maxsize=8)
def _cost(spec: ModelSpec, seed: int, image_size: int) -> ModelCost:
    return model_cost(_model(spec, seed), image_size)


@functools.lru_cache(maxsize=2)
def _reference(spec: ModelSpec, image_size: int, cfg: ParityConfig, device: str) -> torch.Tensor:
    """Reference logits on the parity batch: fp64 (or fp32 with TF32 off), deterministic."""
    dtype = torch.float64 if cfg.reference == "fp64" else torch.float32
    images = parity.parity_images(cfg.samples, image_size, cfg.seed)
    model = private_copy(_model(spec, cfg.seed)).to(device=device, dtype=dtype)
    with pinned("fp32", reference=True), torch.no_grad():
        out = model(images.to(device=device, dtype=dtype)).to("cpu", torch.float64)
    del model
    return out


def timing_input(case: Case) -> torch.Tensor:
    """The seeded timing batch, on the device, in the run dtype and memory format."""
    generator = torch.Generator().manual_seed(case.parity.seed)
    x = torch.randn(case.batch_size, 3, case.image_size, case.image_size, generator=generator)
    return x.to(device=case.device, dtype=torch_dtype(case.dtype)).contiguous(memory_format=_memory_format(case))


def _memory_format(case: Case) -> torch.memory_format:
    return torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format


# --------------------------------------------------------------------------------------------- rows


def base_row(case: Case, cost: ModelCost | None, status: str = "ok", reason: str | None = None,
             **fields: Any) -> ResultRow:
    return ResultRow(
        model=case.model.name, weights=case.model.weights, backend=case.backend, options=case.options,
        batch_size=case.batch_size, dtype=case.dtype, image_size=case.image_size,
        memory_format=case.memory_format, timing_mode=case.timing.mode, l2=case.timing.l2, device=case.device,
        scenario=case.scenario, status=status, reason=reason, params=cost.params if cost else None,
        gflops=cost.gflops if cost else None, threads=thread_policy.resolve(case.threads), **fields,
    )


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "can't allocate memory" in text


def _failure_row(case: Case, cost: ModelCost | None, exc: BaseException, stage: str, **fields: Any) -> ResultRow:
    status = "oom" if is_oom(exc) else "failed"
    return base_row(case, cost, status, f"{stage}: {describe(exc)}", **fields)


# -------------------------------------------------------------------------------------------- a group


@dataclass
class Prepared:
    case: Case
    fn: Forward
    measurement: Measurement
    prepare_s: float
    first_call_s: float
    footprint: memory.CpuFootprint | memory.GpuFootprint   # this backend's own memory (memory.py)
    numerics: dict[str, Any]
    artifacts: dict[str, Any]
    warnings: list[str]


def _prepare(case: Case, model: torch.nn.Module, x: torch.Tensor, flags: dict[str, Any],
             stage: Callable[[str], None]) -> Prepared:
    device = x.device
    backend = get_backend(case.backend)
    stage("prepare")
    footprint = memory.GpuFootprint(device) if device.type == "cuda" else memory.CpuFootprint()
    footprint.start()  # before the private copy: the weights a backend keeps are its own
    copy = private_copy(model).to(device=device).to(memory_format=_memory_format(case))
    synchronize(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        fn = backend.prepare(copy, x, case)
    synchronize(device)
    prepare_s = time.perf_counter() - t0
    del copy  # the backend keeps what it needs
    stage("first call")
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(x)
    synchronize(device)
    first_call_s = time.perf_counter() - t0
    stage("warm-up")
    sampler = Sampler(_no_grad(fn), x, case.timing.mode, case.timing.l2)
    warmup(sampler, case.timing.warmup_s)
    footprint.prepared(sampler.flush_buffer.numel() if sampler.flush_buffer is not None else 0)
    artifacts = backend.artifacts() if hasattr(backend, "artifacts") else {}
    return Prepared(case, fn, Measurement(case.backend_label, sampler), prepare_s, first_call_s,
                    footprint, {**flags, **backend.numerics(case)}, artifacts, list(sampler.warnings))


def _no_grad(fn: Forward) -> Forward:
    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(x)
    return call


def _memory(p: Prepared, x: torch.Tensor, calls: memory.PeakRss | None = None,
            during: str = "its timed calls") -> Memory:
    """The backend's own footprint (memory.py) and the process-wide figures, each named in `source`.
    `calls` (CPU): the peak-RSS windows to count instead of the prepared footprint's own (a serving row's
    LoadGen runs, `during` naming them); the GPU figure is one call's peak on `x` either way."""
    device = x.device
    if isinstance(p.footprint, memory.CpuFootprint):
        footprint = p.footprint if calls is None else dataclasses.replace(p.footprint, calls=calls)
        figures = footprint.figures(during)
        scope = ("this group's worker process (model, every runtime prepared in it, inputs, parity reference)"
                 if IN_WORKER else "the whole measuring process so far (in-process run)")
        figures["source"] += f"; process_mb: peak RSS of {scope}"
        return Memory(process_mb=memory.process_peak_rss_mb(), **figures)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.no_grad():
        p.fn(x)
    synchronize(device)
    total, notes = memory.gpu_backend_bytes(p.footprint.account(base, torch.cuda.max_memory_allocated(device)))
    comparable = p.case.backend not in memory.OUTSIDE_TORCH_ALLOCATOR
    result = Memory(peak_allocated_mb=total / memory.MB, backend_mb=total / memory.MB if comparable else None,
                    source="; ".join([memory.gpu_source(p.case.backend), *notes]))
    try:
        from resbench import gpu_memory

        result.gpu_process_mb = gpu_memory.process_used_mb()
        if result.gpu_process_mb is not None:
            result.source += "; gpu_process_mb: NVML memory of the whole process (all backends of the group)"
    except Exception:  # NVML is optional; its absence must never fail a row
        pass
    return result


def row_memory(p: Prepared, x: torch.Tensor, calls: memory.PeakRss | None = None,
               during: str = "its timed calls") -> Memory:
    """`_memory`, or a Memory whose source says why it was not measured (a figure must never fail a row)."""
    try:
        return _memory(p, x, calls, during)
    except Exception as exc:
        return Memory(source=f"not measured: {describe(exc)}")


def _eager_rel_l2(model: torch.nn.Module, case: Case, images: torch.Tensor, reference: torch.Tensor,
                  device: torch.device) -> float | None:
    """Eager's error in this dtype (for int8, int8 weight rounding's): the yardstick for every row's err_ratio."""
    try:
        eager, dtype = parity.yardstick(model, case.dtype)
        eager = eager.to(device=device, memory_format=_memory_format(case))
        out = parity.run_on_parity_batch(eager, images, case.batch_size, dtype, _memory_format(case), device)
        return parity.error_metrics(out, reference).rel_l2
    except Exception:
        return None


def stage_text(cases: list[Case], index: int | None, stage: str) -> str:
    """'resnet18 fp32 b2: first call of compile[mode=max-autotune]' (progress lines, crash reasons)."""
    first = cases[0]
    what = stage if index is None else f"{stage} of {cases[index].backend_label}"
    return f"{first.model.name} {first.dtype} b{first.batch_size}: {what}"


def own_processes() -> system.OwnProcesses:
    """This run's own processes, as the contention meters attribute CPU time (system.py)."""
    return system.OwnProcesses.of_worker() if IN_WORKER else system.OwnProcesses()


@dataclass(frozen=True)
class Evidence:
    """What a row records about the conditions it was measured under (its `system` and `telemetry`), and
    the warnings they call for (contention: system.py; throttling: telemetry.py)."""

    system: dict[str, Any]
    contention: list[str]
    telemetry: dict[str, Any]

    @property
    def warnings(self) -> list[str]:
        return self.contention + telemetry.warnings_for(self.telemetry)


class Watch:
    """The observers of a group's measured windows, for every kind of row: the machine (system.SliceMonitor:
    other processes' CPU time on our cores, other processes on the GPU), the GPU's clocks
    (telemetry.Monitor) and, on CPU, the peak RSS growth during the window (memory.PeakRss, when given).
    A latency group opens one window per timed slice (`opened` / `closed`, which may veto a slice taken
    at a low SM clock); a serving group one per LoadGen performance run (`window`). One observer for both,
    so `system`, `telemetry` and `memory.calls_mb` mean the same on either kind of row. Labels name the
    case the window belongs to; `evidence(label)` is its record."""

    def __init__(self, device: torch.device):
        index = _device_index(device)
        self.load = system.SliceMonitor(device.type, index, own_processes())
        self.clocks = telemetry.Monitor(device.type, index)

    def __enter__(self) -> Watch:
        self.clocks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.clocks.__exit__(*exc)

    def opened(self, label: str, rss: memory.PeakRss | None = None) -> None:
        self.clocks.label = label
        self.load.slice_started(label)
        if rss is not None:
            rss.start()

    def closed(self, label: str, t0: float, t1: float, rss: memory.PeakRss | None = None) -> bool:
        """End the window; False when the GPU ran at a low SM clock during [t0, t1] (telemetry.py)."""
        if rss is not None:  # first: the RSS window opened last, and the load reading allocates
            rss.stop()
        self.load.slice_ended(label)
        return self.clocks.slice_ok(label, t0, t1)

    @contextlib.contextmanager
    def window(self, label: str, rss: memory.PeakRss | None = None) -> Iterator[None]:
        """One window that is kept whatever happened in it (a LoadGen run cannot be taken again: a low
        clock shows in the row's telemetry and warnings instead)."""
        self.opened(label, rss)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.closed(label, t0, time.perf_counter(), rss)
            self.clocks.label = None

    def evidence(self, label: str, threads: int | None) -> Evidence:
        record, contention = self.load.record(label, threads)
        return Evidence(record, contention, self.clocks.summary(label))


class GroupRecorder:
    """A group's stage changes and final rows, passed on as they happen (run_group, serving/group.py)."""

    def __init__(self, cases: list[Case], progress: ProgressFn, on_stage: StageFn | None, on_row: RowFn | None):
        self.cases, self.progress, self.on_stage, self.on_row = cases, progress, on_stage, on_row
        self.rows: dict[int, ResultRow] = {}
        self.last_stage: dict[int | None, str] = {}

    def stage(self, index: int | None, what: str) -> None:
        self.last_stage[index] = what
        if self.on_stage is not None:
            self.on_stage(index, what)
        self.progress(stage_text(self.cases, index, what))

    def emit(self, index: int, row: ResultRow) -> None:
        self.rows[index] = row
        if self.on_row is not None:
            self.on_row(index, row)


def run_group(cases: list[Case], progress: ProgressFn = lambda _msg: None, *,
              on_stage: StageFn | None = None, on_row: RowFn | None = None,
              cost: ModelCost | None = None) -> list[ResultRow]:
    """Measure one (model, weights, dtype, batch) group; returns one row per case, in case order.

    `on_stage(index, stage)` is called whenever the work moves to another case or stage (a worker reports
    it so that its parent can name the stage a crash or hang happened in); `on_row(index, row)` as soon
    as a case's row is final. `cost` (from `preflight`) saves counting the model's FLOPs again."""
    try:
        return _run_group(cases, progress, on_stage, on_row, cost)
    finally:
        shared_graph.release()  # the group's QDQ model, shared by its int8 backends, is its own


def _run_group(cases: list[Case], progress: ProgressFn, on_stage: StageFn | None, on_row: RowFn | None,
               cost: ModelCost | None) -> list[ResultRow]:
    first = cases[0]
    if first.scenario is not None:  # a runtime's serving scenarios (docs/serving.md)
        from resbench.serving.group import run_serving_group

        return run_serving_group(cases, progress, on_stage=on_stage, on_row=on_row, cost=cost)
    device = torch.device(first.device)
    recorder = GroupRecorder(cases, progress, on_stage, on_row)
    stage, emit, rows, last_stage = recorder.stage, recorder.emit, recorder.rows, recorder.last_stage

    try:
        stage(None, "building model")
        model = _model(first.model, first.parity.seed)
        cost = cost or _cost(first.model, first.parity.seed, first.image_size)
        x = timing_input(first)
    except Exception as exc:
        for i, case in enumerate(cases):
            emit(i, _failure_row(case, cost, exc, "model"))
        return [rows[i] for i in range(len(cases))]

    prepared: list[tuple[int, Prepared]] = []
    thread_count = thread_policy.apply(thread_policy.resolve(first.threads))   # before any prepare (threads.py)
    with pinned(first.dtype) as flags, Watch(device) as watch:
        for i, case in enumerate(cases):
            backend = get_backend(case.backend)
            ok, reason = backend.available(device)
            if ok and hasattr(backend, "supports"):
                ok, reason = backend.supports(case)
            if not ok:
                emit(i, base_row(case, cost, "skipped", reason))
                continue
            try:
                prepared.append((i, _prepare(case, model, x, flags, functools.partial(stage, i))))
            except Exception as exc:
                emit(i, _failure_row(case, cost, exc, last_stage.get(i, "prepare"), numerics=flags))
                if first.device == "cuda":
                    torch.cuda.empty_cache()

        if prepared:
            index_of = {id(p.measurement): i for i, p in prepared}
            rss_of = {id(p.measurement): p.footprint.calls for _, p in prepared
                      if isinstance(p.footprint, memory.CpuFootprint)}

            def on_slice(m: Measurement) -> None:
                stage(index_of[id(m)], "measure")
                watch.opened(m.label, rss_of.get(id(m)))

            def accept_slice(m: Measurement, t0: float, t1: float) -> bool:
                return watch.closed(m.label, t0, t1, rss_of.get(id(m)))

            measure_interleaved([p.measurement for _, p in prepared], first.timing, on_slice=on_slice,
                                accept_slice=accept_slice)
            watch.clocks.label = None

        images = reference = eager_error = reference_failure = None
        if prepared:  # no row to check (every backend skipped or failed): no fp64 forward
            stage(None, "parity reference")
            try:
                images = parity.parity_images(first.parity.samples, first.image_size, first.parity.seed)
                reference = _reference(first.model, first.image_size, first.parity, first.device)
                eager_error = _eager_rel_l2(model, first, images, reference, device)
            except Exception as exc:
                images = reference = eager_error = None
                reference_failure = describe(exc)
        for i, p in prepared:
            emit(i, _finish(p, x, cost, images, reference, eager_error, reference_failure,
                            watch.evidence(p.measurement.label, thread_count), functools.partial(stage, i)))
    del prepared
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [rows[i] for i in range(len(cases))]


def _device_index(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return device.index if device.index is not None else torch.cuda.current_device()


def _finish(p: Prepared, x: torch.Tensor, cost: ModelCost, images: torch.Tensor | None,
            reference: torch.Tensor | None, eager_error: float | None, reference_failure: str | None,
            evidence: Evidence, stage: Callable[[str], None]) -> ResultRow:
    case, m = p.case, p.measurement
    clock = dict(evidence.telemetry)
    if m.discarded:
        clock["discarded_samples"] = len(m.discarded)
    common = dict(prepare_s=p.prepare_s, first_call_s=p.first_call_s, numerics=p.numerics,
                  artifacts=p.artifacts, telemetry=clock, system=evidence.system)
    if m.failed is not None:
        return _failure_row(case, cost, m.failed, "measure", samples_ms=m.samples, **common)
    warnings = p.warnings + evidence.contention + noise_warnings(m, case.timing) + telemetry.warnings_for(clock)
    samples = m.samples
    if not samples:  # every slice was vetoed: report them rather than nothing, and say so
        samples = m.discarded
        warnings.append("every slice was taken at a low SM clock; the statistics use them anyway")
    stats = summarize(samples)
    tflops, pct, source = hardware.achieved(cost.gflops, case.batch_size, stats.median,
                                            device_name(case.device), case.dtype)
    if stats.cv > 0.025:
        warnings.append(f"CV {stats.cv:.1%} > 2.5%: latency varies between calls")
    row_parity = None
    if reference is None:
        warnings.append(f"parity not checked: reference failed ({reference_failure})")
    else:
        stage("parity")
        try:
            out = parity.run_on_parity_batch(p.fn, images, case.batch_size, torch_dtype(case.dtype),
                                             _memory_format(case), x.device)
            metrics = parity.error_metrics(out, reference)
            row_parity = parity.verdict(metrics, case.dtype, eager_error,
                                        is_eager=case.backend == "eager" and not case.options,
                                        reference=_reference_label(case))
        except Exception as exc:
            warnings.append(f"parity not checked: {describe(exc)}")
    stage("memory")
    footprint = row_memory(p, x)
    return base_row(
        case, cost, latency_ms=stats, samples_ms=samples,
        throughput_ips=case.batch_size / (stats.median * 1e-3), tflops=tflops, pct_peak=pct, peak_source=source,
        memory=footprint, parity=row_parity, warnings=warnings, **common,
    )


def _reference_label(case: Case) -> str:
    return "fp64" if case.parity.reference == "fp64" else "fp32 (TF32 off)"
