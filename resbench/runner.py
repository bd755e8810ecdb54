"""Executes cases: grouping, preparation, interleaved measurement, parity, and the run file.

Cases sharing (model, weights, dtype, batch) form a group. A group builds the model once, prepares every
backend in it (prepare and first call timed separately), warms each up, measures them in interleaved
rounds (timing.py), then checks each against the fp64 reference on the parity batch (parity.py). One
failing backend becomes a `failed`/`oom` row and never costs another its result. The run file is
rewritten atomically after every group."""

from __future__ import annotations

import functools
import gc
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resbench import hardware, parity
from resbench.backends import get_backend
from resbench.backends.base import Forward, private_copy
from resbench.dtypes import torch_dtype
from resbench.environment import device_name
from resbench.models import ModelCost, ModelSpec, build_model, model_cost
from resbench.numerics import pinned
from resbench.results import Memory, ResultRow, RunFile
from resbench.stats import summarize
from resbench.suite import Case, ParityConfig, Suite
from resbench.timing import Measurement, Sampler, measure_interleaved, noise_warnings, synchronize, warmup

ProgressFn = Callable[[str], None]
MB = 2**20


def group_cases(cases: Iterable[Case]) -> list[list[Case]]:
    """Cases grouped by `Case.group_key`, groups and members in first-appearance order."""
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group_key, []).append(case)
    return list(groups.values())


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
        status=status, reason=reason, params=cost.params if cost else None,
        gflops=cost.gflops if cost else None, **fields,
    )


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "can't allocate memory" in text


def describe(exc: BaseException) -> str:
    """One line: the exception type and the first line of its message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _failure_row(case: Case, cost: ModelCost | None, exc: BaseException, stage: str, **fields: Any) -> ResultRow:
    status = "oom" if is_oom(exc) else "failed"
    return base_row(case, cost, status, f"{stage}: {describe(exc)}", **fields)


def process_peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


# -------------------------------------------------------------------------------------------- a group


@dataclass
class Prepared:
    case: Case
    fn: Forward
    measurement: Measurement
    prepare_s: float
    first_call_s: float
    persistent_bytes: int
    numerics: dict[str, Any]
    artifacts: dict[str, Any]
    warnings: list[str]


def _prepare(case: Case, model: torch.nn.Module, x: torch.Tensor, flags: dict[str, Any]) -> Prepared:
    device = x.device
    backend = get_backend(case.backend)
    copy = private_copy(model).to(device=device).to(memory_format=_memory_format(case))
    synchronize(device)
    before = _allocated(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        fn = backend.prepare(copy, x, case)
    synchronize(device)
    prepare_s = time.perf_counter() - t0
    del copy  # the backend keeps what it needs
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(x)
    synchronize(device)
    first_call_s = time.perf_counter() - t0
    sampler = Sampler(_no_grad(fn), x, case.timing.mode, case.timing.l2)
    warmup(sampler, case.timing.warmup_s)
    artifacts = backend.artifacts() if hasattr(backend, "artifacts") else {}
    return Prepared(case, fn, Measurement(case.backend_label, sampler), prepare_s, first_call_s,
                    _allocated(device) - before, {**flags, **backend.numerics(case)}, artifacts,
                    list(sampler.warnings))


def _no_grad(fn: Forward) -> Forward:
    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(x)
    return call


def _memory(p: Prepared, x: torch.Tensor) -> Memory:
    device = x.device
    if device.type != "cuda":
        return Memory(process_mb=process_peak_rss_mb(),
                      source="process_mb: peak RSS of the whole measuring process so far (CPU)")
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.no_grad():
        p.fn(x)
    synchronize(device)
    transient = torch.cuda.max_memory_allocated(device) - base
    memory = Memory(
        peak_allocated_mb=(p.persistent_bytes + transient) / MB,
        source="peak_allocated_mb: torch allocator bytes this backend holds after prepare (weights, "
               "workspaces, graph pools) + the peak of one call",
    )
    try:
        from resbench import gpu_memory

        memory.gpu_process_mb = gpu_memory.process_used_mb()
        if memory.gpu_process_mb is not None:
            memory.source += "; gpu_process_mb: NVML memory of the whole process (all backends of the group)"
    except Exception:  # NVML is optional; its absence must never fail a row
        pass
    return memory


def _eager_rel_l2(model: torch.nn.Module, case: Case, images: torch.Tensor, reference: torch.Tensor,
                  device: torch.device) -> float | None:
    """Eager's error in this dtype: the yardstick for every row's err_ratio."""
    try:
        eager = private_copy(model).to(device=device, dtype=torch_dtype(case.dtype))
        eager = eager.to(memory_format=_memory_format(case))
        out = parity.run_on_parity_batch(eager, images, case.batch_size, torch_dtype(case.dtype),
                                         _memory_format(case), device)
        return parity.error_metrics(out, reference).rel_l2
    except Exception:
        return None


def run_group(cases: list[Case], progress: ProgressFn = lambda _msg: None) -> list[ResultRow]:
    """Measure one (model, weights, dtype, batch) group; returns one row per case, in case order."""
    first = cases[0]
    device = torch.device(first.device)
    title = f"{first.model.name} {first.dtype} b{first.batch_size}"
    rows: dict[int, ResultRow] = {}
    try:
        progress(f"{title}: building model")
        model = _model(first.model, first.parity.seed)
        cost = _cost(first.model, first.parity.seed, first.image_size)
    except Exception as exc:
        return [_failure_row(c, None, exc, "model") for c in cases]

    prepared: list[tuple[int, Prepared]] = []
    x = timing_input(first)
    with pinned(first.dtype) as flags:
        for i, case in enumerate(cases):
            backend = get_backend(case.backend)
            ok, reason = backend.available(device)
            if ok and hasattr(backend, "supports"):
                ok, reason = backend.supports(case)
            if not ok:
                rows[i] = base_row(case, cost, "skipped", reason)
                continue
            progress(f"{title}: preparing {case.backend_label}")
            try:
                prepared.append((i, _prepare(case, model, x, flags)))
            except Exception as exc:
                rows[i] = _failure_row(case, cost, exc, "prepare", numerics=flags)
                if first.device == "cuda":
                    torch.cuda.empty_cache()

        if prepared:
            progress(f"{title}: measuring {len(prepared)} backend(s) in interleaved rounds")
            measure_interleaved([p.measurement for _, p in prepared], first.timing)

        progress(f"{title}: parity")
        try:
            images = parity.parity_images(first.parity.samples, first.image_size, first.parity.seed)
            reference = _reference(first.model, first.image_size, first.parity, first.device)
            eager_error = _eager_rel_l2(model, first, images, reference, device)
        except Exception as exc:
            images = reference = eager_error = None
            reference_failure = describe(exc)
        for i, p in prepared:
            rows[i] = _finish(p, x, cost, images, reference, eager_error,
                              None if reference is not None else reference_failure)
    del prepared
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [rows[i] for i in range(len(cases))]


def _finish(p: Prepared, x: torch.Tensor, cost: ModelCost, images: torch.Tensor | None,
            reference: torch.Tensor | None, eager_error: float | None, reference_failure: str | None) -> ResultRow:
    case, m = p.case, p.measurement
    common = dict(prepare_s=p.prepare_s, first_call_s=p.first_call_s, numerics=p.numerics,
                  artifacts=p.artifacts)
    if m.failed is not None:
        return _failure_row(case, cost, m.failed, "measure", samples_ms=m.samples, **common)
    stats = summarize(m.samples)
    tflops, pct, source = hardware.achieved(cost.gflops, case.batch_size, stats.median,
                                            device_name(case.device), case.dtype)
    warnings = p.warnings + noise_warnings(m, case.timing)
    if stats.cv > 0.025:
        warnings.append(f"CV {stats.cv:.1%} > 2.5%: latency varies between calls")
    row_parity = None
    if reference is None:
        warnings.append(f"parity not checked: reference failed ({reference_failure})")
    else:
        try:
            out = parity.run_on_parity_batch(p.fn, images, case.batch_size, torch_dtype(case.dtype),
                                             _memory_format(case), x.device)
            metrics = parity.error_metrics(out, reference)
            row_parity = parity.verdict(metrics, case.dtype, eager_error,
                                        is_eager=case.backend == "eager" and not case.options,
                                        reference=_reference_label(case))
        except Exception as exc:
            warnings.append(f"parity not checked: {describe(exc)}")
    try:
        memory = _memory(p, x)
    except Exception as exc:
        memory = Memory(source=f"not measured: {describe(exc)}")
    return base_row(
        case, cost, latency_ms=stats, samples_ms=m.samples,
        throughput_ips=case.batch_size / (stats.median * 1e-3), tflops=tflops, pct_peak=pct, peak_source=source,
        memory=memory, parity=row_parity, warnings=warnings, **common,
    )


def _reference_label(case: Case) -> str:
    return "fp64" if case.parity.reference == "fp64" else "fp32 (TF32 off)"


def debug_traceback() -> str:
    return traceback.format_exc()


# ------------------------------------------------------------------------------------------- a whole run


def check_writable(path: Path) -> None:
    """Fail before any work if the run file cannot be written."""
    from resbench.errors import UsageError

    if path.exists() and path.is_dir():
        raise UsageError(f"output path {str(path)!r} is a directory; give a .json file path")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {str(folder)!r}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {str(folder)!r} is not writable")


FINISHED = ("ok", "skipped", "failed", "oom")  # a resumed run re-measures only crashed / timeout / missing


def pending_cases(run: RunFile, suite: Suite, cases: list[Case], path: str) -> list[Case]:
    """For --resume: refuse a run file of another suite; drop its unfinished rows; return the cases left."""
    from resbench.errors import UsageError

    recorded = run.suite
    current = suite.model_dump(mode="json")
    if recorded != current:
        keys = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
        raise UsageError(f"cannot resume {path!r}: the suite no longer matches the run file "
                         f"(differs in: {', '.join(keys)})")
    run.rows = [r for r in run.rows if r.status in FINISHED]
    done = {r.identity for r in run.rows}
    return [c for c in cases if c.identity not in done]


def combine_repeats(repeats: list[list[ResultRow]]) -> list[ResultRow]:
    """One row per case from K repetitions: the repetition with the median median, carrying every
    repetition's median in `repeat_medians_ms` (the run-to-run spread)."""
    combined = []
    for reps in zip(*repeats, strict=True):
        ok = [r for r in reps if r.status == "ok" and r.latency_ms is not None]
        if not ok:
            combined.append(reps[-1])
            continue
        ordered = sorted(ok, key=lambda r: r.latency_ms.median)
        chosen = ordered[(len(ordered) - 1) // 2].model_copy(deep=True)
        chosen.repeat_medians_ms = [r.latency_ms.median for r in ok]
        if len(ok) < len(reps):
            chosen.warnings.append(f"{len(reps) - len(ok)} of {len(reps)} repetitions did not finish ok")
        combined.append(chosen)
    return combined


def run_suite(cases: list[Case], run: RunFile, out: Path, *, repeat: int = 1,
              on_group_done: Callable[[list[Case], list[ResultRow]], None] = lambda _g, _r: None,
              progress: ProgressFn = lambda _m: None) -> RunFile:
    """Measure `cases` group by group, appending rows to `run` and saving it atomically after each group.
    Rows already in `run` are kept. Ctrl-C leaves the file with every finished group."""
    run.save(out)
    for group in group_cases(cases):
        repeats = []
        for k in range(repeat):
            prefix = f"[{k + 1}/{repeat}] " if repeat > 1 else ""
            repeats.append(run_group(group, lambda m, prefix=prefix: progress(prefix + m)))
        rows = combine_repeats(repeats) if repeat > 1 else repeats[0]
        run.rows.extend(rows)
        run.save(out)
        on_group_done(group, rows)
    return run
