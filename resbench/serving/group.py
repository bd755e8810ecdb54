"""One runtime's serving scenarios, measured in the process that calls it (a worker, like a latency group).

A serving group is one (model, weights, dtype, runtime) and its scenarios. The runtime is prepared once
per batch size it is called at (single-stream: 1; server: max_batch; offline: the runner's choice), with
measure.py's own prepare, first call and warm-up, so `prepare_s` means the same as on a latency row.
Then, per scenario:
1. the latency of one batch is sampled a few times: LoadGen's schedule hints and the peak search's start;
2. the performance run(s): one LoadGen run, or (server with find_peak) the peak search's probes, each
   watched as a latency row's timed slices are (measure.Watch: other processes' CPU and GPU use, GPU
   clocks, the RSS peak), which gives the row its `system`, `telemetry`, `memory` and their warnings;
3. LoadGen's accuracy mode on the parity images: every response's class against the reference's top-1;
4. the row, with every figure copied from the summary LoadGen wrote (loadgen_log.py).
LoadGen writes into `<run>.loadgen/<case>/` (the runner names it; an existing folder is never reused):
`performance/`, `probe-NN/` (peak search) and `accuracy/`, each with LoadGen's own log files.

A runtime that raises mid-run still has every sample completed (batcher.py), so LoadGen ends on
schedule; the row is `failed` with the scenario, the exception and how many samples got no result."""

from __future__ import annotations

import functools
import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resbench import measure, memory, parity
from resbench import threads as thread_policy
from resbench.backends import get_backend
from resbench.dtypes import torch_dtype
from resbench.models import ModelCost
from resbench.numerics import pinned
from resbench.results import ResultRow
from resbench.serving import peak, settings
from resbench.serving.loadgen_log import SUMMARY_FILE, Summary, read_accuracy, read_summary
from resbench.serving.record import Accuracy, Batching, LoadgenLatency, PeakSearch, Probe, ServingRecord
from resbench.serving.sut import RunStats, loadgen, qsl_images, run_test
from resbench.suite import Case

ESTIMATE_CALLS = 10           # calls sampled for the schedule hints (after measure.py's warm-up); their
                              # fastest, since one stalled call on a busy host is 100x the typical one
MEASURED = "every LoadGen performance run of the scenario (peak-search probes included), not its accuracy run"
CALLS_DURING = ("its LoadGen performance runs (the batches it ran, plus LoadGen's own bookkeeping for the run: "
                "queries, responses, logs)")
SINGLE_STREAM_HINT = 0.25     # expected latency = a quarter of the fastest: LoadGen stops once its floors are met,
                              # but runs out of queries when the hint is too high (inference#1566)


class ServingFailure(RuntimeError):
    """The runtime raised during a LoadGen run; every sample was still completed."""

    def __init__(self, scenario: str, stats: RunStats, log_dir: str):
        error = stats.error if stats.error is not None else RuntimeError("unknown error")
        self.error = error
        total = stats.samples + stats.failed_samples
        super().__init__(f"{scenario}: {measure.describe(error)} ({stats.failed_samples} of {total} samples "
                         f"completed without a result; LoadGen logs in {log_dir})")


@dataclass
class Performance:
    """One performance run's outcome: LoadGen's summary and what the SUT saw."""

    summary: Summary
    stats: RunStats
    folder: Path


@dataclass
class GroupInputs:
    """What every scenario of the group shares: the QSL and the accuracy set, built once."""

    qsl: torch.Tensor
    parity_images: torch.Tensor
    reference_top1: list[int]
    reference: str


def run_serving_group(cases: list[Case], progress: measure.ProgressFn = lambda _m: None, *,
                      on_stage: measure.StageFn | None = None, on_row: measure.RowFn | None = None,
                      cost: ModelCost | None = None) -> list[ResultRow]:
    """Every scenario of one (model, weights, dtype, runtime); one row per case, in case order."""
    first = cases[0]
    device = torch.device(first.device)
    recorder = measure.GroupRecorder(cases, progress, on_stage, on_row)
    stage, emit, rows, last_stage = recorder.stage, recorder.emit, recorder.rows, recorder.last_stage

    try:
        lg = loadgen()
        stage(None, "building model")
        model = measure._model(first.model, first.parity.seed)
        cost = cost or measure._cost(first.model, first.parity.seed, first.image_size)
    except Exception as exc:
        for i, case in enumerate(cases):
            emit(i, measure._failure_row(case, cost, exc, "model"))
        return [rows[i] for i in range(len(cases))]

    backend = get_backend(first.backend)
    threads = thread_policy.apply(thread_policy.resolve(first.threads))  # as for latency rows, before any prepare
    prepared: dict[int, measure.Prepared | tuple[str, Exception]] = {}   # batch size -> runtime, or (stage, error)
    inputs: GroupInputs | None = None
    with pinned(first.dtype) as flags, measure.Watch(device) as watch:
        for i, case in enumerate(cases):
            ok, reason = backend.available(device)
            if ok and hasattr(backend, "supports"):
                ok, reason = backend.supports(case)
            if not ok:
                emit(i, measure.base_row(case, cost, "skipped", reason))
                continue
            if case.batch_size not in prepared:
                try:
                    prepared[case.batch_size] = measure._prepare(case, model, measure.timing_input(case), flags,
                                                                 functools.partial(stage, i))
                except Exception as exc:
                    prepared[case.batch_size] = (last_stage.get(i, "prepare"), exc)
            ready = prepared[case.batch_size]
            if isinstance(ready, tuple):  # every scenario at this batch size shares the failed prepare
                emit(i, measure._failure_row(case, cost, ready[1], ready[0], numerics=flags))
                continue
            try:
                inputs = inputs or _group_inputs(case, device)
                emit(i, _serve(lg, case, ready, inputs, cost, functools.partial(stage, i), watch, threads))
            except ServingFailure as exc:  # the runtime raised during a LoadGen run
                status = "oom" if measure.is_oom(exc.error) else "failed"
                evidence = watch.evidence(case.scenario, threads)
                emit(i, measure.base_row(case, cost, status, f"serving: {exc}", prepare_s=ready.prepare_s,
                                         first_call_s=ready.first_call_s, numerics=ready.numerics,
                                         system=_system(evidence), telemetry=evidence.telemetry))
            except Exception as exc:
                emit(i, measure._failure_row(case, cost, exc, last_stage.get(i, "serving"), prepare_s=ready.prepare_s,
                                             first_call_s=ready.first_call_s, numerics=ready.numerics))
    del prepared, inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [rows[i] for i in range(len(cases))]


def _group_inputs(case: Case, device: torch.device) -> GroupInputs:
    dtype, memory_format = torch_dtype(case.dtype), measure._memory_format(case)
    qsl = qsl_images(settings.qsl_size(case.serving), case.image_size, case.parity.seed, device, dtype,
                     memory_format)
    images = parity.parity_images(case.parity.samples, case.image_size, case.parity.seed)
    reference = measure._reference(case.model, case.image_size, case.parity, case.device)
    return GroupInputs(qsl, images.to(device=device, dtype=dtype).contiguous(memory_format=memory_format),
                       reference.argmax(dim=1).tolist(), measure._reference_label(case))


def fresh_folder(wanted: Path) -> Path:
    """`wanted`, or `wanted-2`, `wanted-3`... whichever does not exist yet (LoadGen logs are never
    overwritten: a resumed run keeps the interrupted attempt's logs beside the new ones)."""
    for attempt in range(1, 10_000):
        folder = wanted if attempt == 1 else wanted.with_name(f"{wanted.name}-{attempt}")
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"no free log folder next to {wanted}")


def _system(evidence: measure.Evidence) -> dict[str, Any]:
    """The row's `system`, saying which windows it covers (empty when no LoadGen run started)."""
    return {**evidence.system, "measured": MEASURED} if evidence.system else {}


def _serve(lg: Any, case: Case, p: measure.Prepared, inputs: GroupInputs, cost: ModelCost | None,
           stage: Callable[[str], None], watch: measure.Watch, threads: int | None) -> ResultRow:
    cfg, scenario = case.serving, case.scenario
    if case.loadgen_dir is None:
        raise RuntimeError("no LoadGen log folder was given for this case")
    folder = fresh_folder(Path(case.loadgen_dir))
    root = folder.parent.parent   # the run file's folder: paths in the row are relative to it
    stage(f"{scenario}: latency estimate")
    batch_s = min(p.measurement.sampler.sample(ESTIMATE_CALLS)) / 1e3
    batch_qps = case.batch_size / batch_s
    hints = settings.Hints(single_stream_latency_s=batch_s * SINGLE_STREAM_HINT, offline_qps=batch_qps,
                           server_qps=cfg.target_qps or batch_qps)
    max_wait_s = cfg.max_wait_ms / 1e3 if scenario == "server" else 0.0
    warnings: list[str] = []
    # the measured windows: every performance run (the peak search's probes too: their verdicts make the
    # row's peak, and recommend reads their p99s); the RSS peak of this scenario's runs alone
    calls = memory.PeakRss() if isinstance(p.footprint, memory.CpuFootprint) else None

    def perform(run_hints: settings.Hints, name: str, quick: bool | None = None,
                min_queries: int | None = None) -> Performance:
        outdir = folder / name
        run_settings = settings.test_settings(lg, scenario, cfg, run_hints, quick=quick, min_queries=min_queries)
        stats = run_test(lg, p.fn, inputs.qsl, run_settings, outdir, batch_size=case.batch_size,
                         max_batch=case.batch_size, max_wait_s=max_wait_s,
                         window=functools.partial(watch.window, scenario, calls))
        if stats.error is not None:
            raise ServingFailure(scenario, stats, str(outdir.relative_to(root)))
        return Performance(read_summary(outdir), stats, outdir)

    search = None
    if scenario == "server" and cfg.peak_search:
        reachable = batch_s * 1e3 < cfg.server_latency_ms
        final, search, hints = _peak_search(perform, hints, batch_qps, cfg, root, stage, reachable)
        if search.peak_qps is None:
            why = (f"down to {hints.server_qps:.3g} QPS" if reachable else
                   f"one batch of {case.batch_size} took {batch_s * 1e3:.3g} ms at the fastest, more than the "
                   "bound, so the search stopped after one probe")
            warnings.append(f"no target QPS held the {cfg.server_latency_ms:g} ms p99 bound ({why})")
    else:
        stage(f"{scenario}: performance run")
        final = perform(hints, "performance")
    stage(f"{scenario}: accuracy run")
    accuracy = _accuracy(lg, case, p, inputs, hints, folder / "accuracy", root, max_wait_s)
    if accuracy.top1_agree < 1.0:
        warnings.append(f"accuracy: {len(accuracy.mismatched)} of {accuracy.samples} responses differ from the "
                        f"{accuracy.reference} reference's top-1 (QSL indices {accuracy.mismatched[:8]})")
    record = _record(case, final, accuracy, search, folder, root, batch_s)
    if search is not None and search.peak_qps is not None and record.bound_held is False:
        warnings.append(f"the peak search's probe held the bound at {search.peak_qps:.4g} QPS; the full-length run "
                        f"at that QPS missed it (p99 {record.latency_ms.p99:.3g} ms): the peak is not a stable one")
    if record.result != "VALID" and cfg.compliant:  # quick runs are INVALID by design: the row says so anyway
        unmet = "; ".join(record.unmet) or "see its summary"
        warnings.append(f"LoadGen: {record.result} under MLPerf's rules ({unmet})")
    evidence = watch.evidence(scenario, threads)
    stage(f"{scenario}: memory")
    footprint = measure.row_memory(p, p.measurement.sampler.x, calls, during=CALLS_DURING)
    return measure.base_row(case, cost, prepare_s=p.prepare_s, first_call_s=p.first_call_s, numerics=p.numerics,
                            artifacts=p.artifacts, throughput_ips=record.samples_per_s, serving=record,
                            memory=footprint, telemetry=evidence.telemetry, system=_system(evidence),
                            warnings=p.warnings + evidence.warnings + warnings)


def _peak_search(perform: Callable[..., Performance], hints: settings.Hints, start_qps: float, cfg: Any,
                 root: Path, stage: Callable[[str], None],
                 reachable: bool) -> tuple[Performance, PeakSearch, settings.Hints]:
    """Bisection over server_target_qps (peak.py). Probes are quick runs of about `duration_s` each (their
    query floor is capped at QPS x duration, so a probe at low QPS does not take min_queries / QPS); the
    row's figures come from a run at the peak with the configured floors (compliant: MLPerf's rules), which
    is the peak's probe itself when its floor was not capped. When even the fastest batch took longer than
    the bound (`reachable` false), no lower load can hold it: a first probe that misses ends the search
    (one that holds proves the estimate wrong, e.g. a stalled host, and the search goes on upwards)."""
    runs: dict[float, tuple[Performance, int]] = {}
    probes: list[Probe] = []

    def probe(qps: float) -> bool:
        number = len(probes) + 1
        stage(f"server: peak search, probe {number} at {qps:.4g} QPS")
        floor = min(cfg.min_query_count, max(1, math.ceil(qps * cfg.min_duration_s)))
        run = perform(settings.Hints(hints.single_stream_latency_s, hints.offline_qps, qps), f"probe-{number:02d}",
                      quick=True, min_queries=floor)
        runs[qps] = (run, floor)
        summary = run.summary
        probes.append(Probe(target_qps=qps, completed_qps=summary.throughput, p99_ms=summary.ms(
            "99.00 percentile latency (ns)"), held=bool(summary.constraints_met), result=summary.result,
            log_dir=str(run.folder.relative_to(root))))
        return bool(summary.constraints_met)

    peak_qps, outcomes = peak.search(probe, start_qps, max_halvings=peak.MAX_HALVINGS if reachable else 0)
    chosen_qps = peak_qps if peak_qps is not None else min(o.target_qps for o in outcomes)
    chosen, floor = runs[chosen_qps]
    chosen_hints = settings.Hints(hints.single_stream_latency_s, hints.offline_qps, chosen_qps)
    if cfg.compliant or floor < cfg.min_query_count:
        stage(f"server: {'compliant ' if cfg.compliant else ''}run at {chosen_qps:.4g} QPS with the full floors")
        chosen = perform(chosen_hints, "performance")
    return chosen, PeakSearch(precision=peak.PRECISION, peak_qps=peak_qps, probes=probes), chosen_hints


def _accuracy(lg: Any, case: Case, p: measure.Prepared, inputs: GroupInputs, hints: settings.Hints,
              outdir: Path, root: Path, max_wait_s: float) -> Accuracy:
    """LoadGen's AccuracyOnly mode on the parity images: each logged class against the reference top-1."""
    run_settings = settings.test_settings(lg, case.scenario, case.serving, hints, accuracy=True)
    run_settings.performance_sample_count_override = inputs.parity_images.shape[0]
    stats = run_test(lg, p.fn, inputs.parity_images, run_settings, outdir, batch_size=case.batch_size,
                     max_batch=case.batch_size, max_wait_s=max_wait_s)
    if stats.error is not None:
        raise ServingFailure(f"{case.scenario} (accuracy)", stats, str(outdir.relative_to(root)))
    logged = read_accuracy(outdir)
    mismatched = [index for index, expected in enumerate(inputs.reference_top1)
                  if logged.get(index, [None])[-1] != expected or len(logged.get(index, [])) != 1]
    count = len(inputs.reference_top1)
    return Accuracy(reference=inputs.reference, samples=count, responses=sum(len(v) for v in logged.values()),
                    top1_agree=(count - len(mismatched)) / count, mismatched=mismatched,
                    log_dir=str(outdir.relative_to(root)))


def _record(case: Case, run: Performance, accuracy: Accuracy, search: PeakSearch | None, folder: Path,
            root: Path, batch_s: float) -> ServingRecord:
    cfg, summary, stats = case.serving, run.summary, run.stats
    server = case.scenario == "server"
    min_duration_ms = summary.number("min_duration (ms)")
    executed = max(1, stats.batches)
    choice = ""
    if case.scenario == "offline":
        choice = case.serving_note or f"max_batch ({case.batch_size}): no latency row of this runtime to choose from"
    return ServingRecord(
        scenario=case.scenario, compliant=cfg.compliant, result=summary.result, unmet=summary.unmet,
        recommendations=summary.blocks.get("Recommendations", []), samples_per_s=summary.throughput,
        latency_ms=LoadgenLatency(**summary.latency_ms()), early_stopping_ms=summary.early_stopping_ms,
        target_qps=summary.number("target_qps") if server else None,
        scheduled_qps=summary.number("Scheduled samples per second") if server else None,
        latency_bound_ms=cfg.server_latency_ms if server else None,
        bound_held=summary.constraints_met if server else None,
        min_duration_s=(min_duration_ms or math.nan) / 1000.0,
        min_queries=int(summary.number("min_query_count") or 0),
        samples_per_query=int(summary.number("samples_per_query") or 1),
        batching=Batching(batch_size=case.batch_size, max_wait_ms=cfg.max_wait_ms if server else 0.0,
                          batches=stats.batches, samples=stats.samples,
                          mean_fill=stats.samples / (executed * case.batch_size), choice=choice,
                          batch_ms=batch_s * 1e3),
        accuracy=accuracy, peak=search, log_dir=str(folder.relative_to(root)),
        summary_file=str((run.folder / SUMMARY_FILE).relative_to(root)),
    )
