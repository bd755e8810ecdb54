"""Orchestrates a run: preflight, grouping, repeats, resume, and the run file.

Cases sharing (model, weights, dtype, batch) form a group, measured together by resbench/measure.py. The
runner turns groups (x `--repeat`) into units, hands them to an executor (resbench/executors/: fresh
worker processes by default, so a crash, a hard OOM or a hang becomes a `crashed`/`timeout` row and the
run goes on; or this process, for debugging), and writes the run file - it alone does - atomically
whenever a case's row is final (under `--repeat`, also after each repetition: partial rows). Before any
measuring, `preflight` builds every model the suite names and reads every weights file (docs/running.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from resbench import system
from resbench.dtypes import torch_dtype
from resbench.environment import device_memory_bytes
from resbench.errors import ModelError, ResbenchError, UsageError, describe
from resbench.executors import Executor, Unit, get_executor
from resbench.executors.model_check import Costs, ModelFault
from resbench.measure import ProgressFn, base_row
from resbench.models import ModelSpec, model_cost
from resbench.results import Repetitions, ResultRow, RunFile, RunFileWriter
from resbench.suite import Case, Suite


def group_cases(cases: Iterable[Case]) -> list[list[Case]]:
    """Cases grouped by `Case.group_key`, groups and members in first-appearance order."""
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group_key, []).append(case)
    return list(groups.values())


# ------------------------------------------------------------------------------------------- a whole run


@dataclass(frozen=True)
class Preflight:
    """What preflight learnt: the models' costs, counted once, and the models whose own code failed."""

    costs: Costs = field(default_factory=dict)
    faults: dict[ModelSpec, ModelFault] = field(default_factory=dict)   # their cases get this row, unmeasured


def preflight(cases: Iterable[Case], *, isolate: bool = True, repeat: int = 1,
              device_memory: Callable[[str], int | None] = device_memory_bytes) -> Preflight:
    """Before any measuring: every input batch fits the device (`device_memory`: bytes of the device
    kind, None when unknown), every model the cases name can be built, every weights file is a checkpoint
    of its architecture, read safely (models/weights.py), and (when isolating) RESBENCH_WORKER_MEMORY_MB
    is valid. Raises a one-line ResbenchError.

    When isolating, no model code runs in this process: built-in models (resbench's own code) are built
    here, every other model (`python:`, `torchvision:`, `timm:`) in a checker process (model_check.py),
    where a crash, a hang or an exception of the model's own code becomes a `ModelFault` instead of
    ending the run. In-process (`--no-isolation`), everything runs here, as the user asked.

    Returns (in `costs`) the params and FLOPs of the (model, image size)s that more than one worker would
    count (or all, in-process; or all checked models, whose checker runs the forward anyway), counted
    once (models/flops.py: one image, no conv arithmetic, no dynamo)."""
    from resbench.models.registry import construct
    from resbench.models.weights import load_weights

    if isolate:
        from resbench.executors.isolated import memory_cap_mb

        memory_cap_mb()
    cases = list(cases)
    if any(case.scenario is not None for case in cases):
        from resbench.serving.sut import loadgen

        loadgen()  # serving scenarios need LoadGen: say so before any work
    _check_input_sizes(cases, device_memory)
    workers = Counter((group[0].model, group[0].image_size) for group in group_cases(cases))
    sizes: dict[ModelSpec, set[int]] = {}
    for case in cases:
        sizes.setdefault(case.model, set()).add(case.image_size)
    costs: Costs = {}
    for spec, image_sizes in sizes.items():
        if isolate and spec.kind != "builtin":
            continue
        try:
            model = construct(spec)
            if spec.weights is not None:
                load_weights(model, Path(spec.weights), spec.name)
            for size in sorted(image_sizes):
                if not isolate or workers[spec, size] * repeat > 1:
                    costs[spec, size] = model_cost(model, size)
        except ResbenchError:
            raise
        except Exception as exc:  # a python:module:callable factory (or its forward) may raise anything
            raise ModelError(f"model {spec.name!r} cannot be built: {describe(exc)}") from None
        del model
    checked = {spec: image_sizes for spec, image_sizes in sizes.items() if isolate and spec.kind != "builtin"}
    if not checked:
        return Preflight(costs)
    from resbench.executors.model_check import check_models

    checked_costs, faults = check_models(checked, cases[0].timing.case_timeout_s)
    return Preflight({**costs, **checked_costs}, faults)


def _check_input_sizes(cases: list[Case], device_memory: Callable[[str], int | None]) -> None:
    """A batch whose input tensor alone exceeds the device's memory can never run: say so before any work
    (smaller impossible sizes surface as `oom` rows, which is what they are)."""
    biggest: dict[str, Case] = {}
    for case in cases:
        if case.device not in biggest or _input_bytes(case) > _input_bytes(biggest[case.device]):
            biggest[case.device] = case
    for device, case in biggest.items():
        need, have = _input_bytes(case), device_memory(device)
        if have is not None and need > have:
            raise ResbenchError(
                f"batch size {case.batch_size} at {case.image_size}x{case.image_size} px in {case.dtype} needs "
                f"{need / 2**30:,.1f} GiB for the input batch alone; the {device} device has {have / 2**30:,.1f} "
                f"GiB (suite keys batch_sizes / image_size)")


def _input_bytes(case: Case) -> int:
    return case.batch_size * 3 * case.image_size ** 2 * torch.empty((), dtype=torch_dtype(case.dtype)).element_size()


FINISHED = ("ok", "skipped", "failed", "oom")  # a resumed run re-measures crashed / timeout / partial / missing


def pending_cases(run: RunFile, suite: Suite, cases: list[Case], path: str) -> list[Case]:
    """For --resume: the cases still to measure (missing, ended `crashed` / `timeout`, or partial: fewer
    `--repeat` repetitions than asked, whatever its status).

    Refuses (UsageError, one line) a run file of another suite, and one whose rows are not exactly this
    suite's cases on this device: a row of another model or batch size, a second row of one case, or a
    row measured on another device would otherwise count as done. Unfinished rows stay in `run`, their
    reasons with them, until a new row of the same case replaces them (run_suite), so a resume that is
    itself interrupted loses nothing (a partial row: until a row of as many repetitions or more does)."""
    keys = run.suite_differences(suite.model_dump(mode="json"))
    if keys:
        raise UsageError(f"cannot resume {path!r}: the suite no longer matches the run file "
                         f"(differs in: {', '.join(keys)})")
    by_identity = {case.identity: case for case in cases}
    for index, row in enumerate(run.rows):   # a second row of one case: refused by RunFile.load
        case = by_identity.get(row.identity)
        where = f"cannot resume {path!r}: row {index} ({row.label})"
        if case is not None and row.device != case.device:
            raise UsageError(f"{where} was measured on {row.device}, this run is on {case.device}; resume with "
                             f"--device {row.device}, or start a new run file")
        if case is None:
            device = cases[0].device if cases else "this device"
            raise UsageError(f"{where} is not a case of this suite on {device}; the file was edited or written "
                             f"for another device: start a new run file")
        if row.weights != case.model.weights:
            raise UsageError(f"{where} used weights {row.weights!r}, the suite names {case.model.weights!r}")
    done = {row.identity for row in run.rows if row.status in FINISHED and not row.partial}
    return [case for case in cases if case.identity not in done]


def combine_repeats(repeats: list[list[ResultRow]], asked: int | None = None) -> list[ResultRow]:
    """One row per case from the repetitions measured so far (`asked`: K, default as many as given): the
    repetition with the median median, carrying every ok repetition's median in `repeat_medians_ms` (the
    run-to-run spread) and the counts in `repetitions`. Fewer than asked makes a partial row, with a
    warning saying so: what a stopped run leaves of a group (run_suite saves after each repetition)."""
    asked = asked or len(repeats)
    combined = []
    for reps in zip(*repeats, strict=True):
        ok = [r for r in reps if r.status == "ok" and r.latency_ms is not None]
        if not ok:
            chosen = reps[-1].model_copy(deep=True)
        else:
            ordered = sorted(ok, key=lambda r: r.latency_ms.median)
            chosen = ordered[(len(ordered) - 1) // 2].model_copy(deep=True)
            chosen.repeat_medians_ms = [r.latency_ms.median for r in ok]
            if len(ok) < len(reps):
                chosen.warnings.append(f"{len(reps) - len(ok)} of {len(reps)} repetitions did not finish ok")
        chosen.repetitions = Repetitions(measured=len(reps), asked=asked)
        if len(reps) < asked:
            chosen.warnings.append(partial_warning(len(reps), asked))
        combined.append(chosen)
    return combined


def partial_warning(measured: int, asked: int) -> str:
    """The warning of a partial row (doubts.py tags it `1/3 repetitions`)."""
    return (f"{measured} of {asked} repetitions measured (the run stopped before the others; --resume "
            f"measures the group again)")


def run_suite(cases: list[Case], run: RunFile, out: Path, *, repeat: int = 1,
              executor: Executor | None = None, checked: Preflight | None = None,
              on_group_done: Callable[[list[Case], list[ResultRow]], None] = lambda _g, _r: None,
              progress: ProgressFn = lambda _m: None, wait_idle_s: float | None = None,
              strict: bool = False) -> RunFile:
    """Measure `cases` group by group with `executor` (default: fresh worker processes), appending rows
    to `run`; a row already in `run` for one of the cases (a crash being resumed) is replaced in place by
    the new one, every other row is kept.

    `preflight` runs first (unless the caller ran it and passes what it found as `checked`), so bad models
    or weights fail before the run file is written; the cases of a model whose own code failed its check
    get that fault's row without being measured. The run file is saved atomically as soon as a case's row
    is final; with `repeat` K > 1, after each repetition of a group: its rows combine the repetitions in so
    far, partial (`ResultRow.partial`, with a warning) until the K-th. So Ctrl-C or a killed run leaves a
    valid file with every finished case and every finished repetition. A failed write (a full
    disk) raises output_files.WriteError and leaves the previous file intact.

    `wait_idle_s`: before each group, wait up to that long for the machine to go quiet (system.py).
    `strict`: a row measured under contention becomes `failed`, its reason the contention warning."""
    executor = executor or get_executor("workers")
    if checked is None:
        checked = preflight(cases, isolate=not executor.in_process, repeat=repeat)
    latency = group_cases(c for c in cases if c.scenario is None)
    serving = group_cases(c for c in cases if c.scenario is not None)  # after the latency rows (docs/serving.md)
    groups = latency + serving
    repeats = [repeat] * len(latency) + [1] * len(serving)  # a serving row is LoadGen's, one run each
    sink = _RunFileSink(run, out, groups, repeats, on_group_done, progress, wait_idle_s, strict,
                        device=cases[0].device if cases else "cpu")
    run.save(out)
    executor.run(_units(0, latency, repeats, checked, sink), sink)
    if serving:
        from resbench.serving.plan import prepare_cases

        planned = [prepare_cases(group, run.rows, out) for group in serving]
        executor.run(_units(len(latency), planned, repeats, checked, sink), sink)
    return run


def _units(first: int, groups: list[list[Case]], repeats: list[int], checked: Preflight,
           sink: _RunFileSink) -> list[Unit]:
    """The units of `groups` (numbered from `first`) for the executor. The cases of a model whose own code
    failed preflight's check get that fault's row at once, unmeasured, instead."""
    to_run = []
    for g, group in enumerate(groups, start=first):
        for k in range(repeats[g]):
            unit = Unit(g, k, tuple(group), checked.costs.get((group[0].model, group[0].image_size)),
                        f"[{k + 1}/{repeats[g]}] " if repeats[g] > 1 else "")
            fault = checked.faults.get(group[0].model)
            if fault is None:
                to_run.append(unit)
                continue
            rows = [base_row(case, None, fault.status, fault.reason) for case in unit.cases]
            for index, row in enumerate(rows):
                sink.row(unit, index, row)
            sink.unit_done(unit, rows)
    return to_run


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); anything else is a one-line usage error."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text!r} is not allowed; give I/N with 1 <= I <= N, e.g. 1/2")
    return i, n


def check_same_shard(run: RunFile, shard: str | None, path: str) -> None:
    """--resume continues the shard the run file holds, and no other."""
    recorded = run.env.get("shard")
    if recorded != shard:
        held = f"shard {recorded}" if recorded else "a whole run (no --shard)"
        asked = f"--shard {shard}" if shard else "no --shard"
        raise UsageError(f"cannot resume {path!r}: it holds {held}, and this run asks for {asked}")


def shard_cases(cases: list[Case], index: int, count: int) -> list[Case]:
    """The cases of shard `index` of `count` (1-based): every count-th group of the suite's group order,
    starting with group index-1 - deterministic, and dealt round-robin so that each shard gets its share
    of the big and the small batch sizes. Groups are never split: a group's backends are measured together
    (interleaved rounds), so `resbench merge` of all shards equals one run's cases."""
    return [case for g, group in enumerate(group_cases(cases)) if g % count == index - 1 for case in group]


class _RunFileSink:
    """Collects the rows an executor streams back and keeps the run file current: the rows the run file
    had, then every group's rows in group order (a group's streamed rows until its final ones are in; a
    repeated group's partial rows, combining the repetitions in so far, until its K-th is). A new row of a
    case the file already had a row for (a resumed crash, timeout or partial row) takes that row's place,
    so the old row and its reason stay until the case is measured again - a partial row until a row of as
    many repetitions or more replaces it."""

    def __init__(self, run: RunFile, out: Path, groups: list[list[Case]], repeats: list[int],
                 on_group_done: Callable[[list[Case], list[ResultRow]], None], progress: ProgressFn,
                 wait_idle_s: float | None = None, strict: bool = False, device: str = "cpu"):
        self.run, self.out, self.groups, self.repeats = run, out, groups, repeats
        self.on_group_done, self.progress = on_group_done, progress
        self.wait_idle_s, self.strict, self.device = wait_idle_s, strict, device
        self.kept = list(run.rows)
        self.kept_partial = {row.identity: row.repetitions.measured for row in self.kept if row.partial}
        self.streamed: dict[int, dict[int, ResultRow]] = {}       # group -> case index -> row
        self.repetitions: dict[int, list[list[ResultRow]]] = {}   # group -> each finished repetition
        self.partial: dict[int, list[ResultRow]] = {}              # group -> its rows until the K-th repetition
        self.final: dict[int, list[ResultRow]] = {}                # group -> its rows
        self.writer = RunFileWriter()

    def unit_starting(self, unit: Unit) -> None:
        if self.wait_idle_s is not None:
            system.wait_for_idle(self.wait_idle_s, self.device, lambda m: self.progress(unit.label + m))

    def row(self, unit: Unit, index: int, row: ResultRow) -> None:
        if self.strict:
            row = system.fail_if_contended(row)
        if self.repeats[unit.group] == 1:  # a repeated run's rows combine repetitions: saved per repetition
            self.streamed.setdefault(unit.group, {})[index] = row
            self._save()

    def unit_done(self, unit: Unit, rows: list[ResultRow]) -> None:
        if self.strict:
            rows = [system.fail_if_contended(row) for row in rows]
        repeat = self.repeats[unit.group]
        done = self.repetitions.setdefault(unit.group, [])
        done.append(rows)
        if len(done) < repeat:  # what a stop now would lose: save the repetitions in so far, marked partial
            self.partial[unit.group] = combine_repeats(done, repeat)
            self._save()
            return
        self.partial.pop(unit.group, None)
        self.final[unit.group] = combine_repeats(done) if repeat > 1 else rows
        streamed = self.streamed.get(unit.group, {})
        if [streamed.get(i) for i in range(len(rows))] != self.final[unit.group]:
            # (an unrepeated group's rows were each saved as they came: the file has them already)
            self._save()
        self.on_group_done(self.groups[unit.group], self.final[unit.group])

    def _rows_of(self, group: int) -> list[ResultRow]:
        """The group's rows to save now: final, else partial (those that measured no fewer repetitions than
        the partial row they would replace), else streamed."""
        if group in self.final:
            return self.final[group]
        if group in self.partial:
            return [row for row in self.partial[group]
                    if row.repetitions.measured >= self.kept_partial.get(row.identity, 0)]
        streamed = self.streamed.get(group, {})
        return [streamed[i] for i in sorted(streamed)]

    def _save(self) -> None:
        rows = list(self.kept)
        position = {row.identity: index for index, row in enumerate(rows)}
        for g in range(len(self.groups)):
            for row in self._rows_of(g):
                index = position.setdefault(row.identity, len(rows))
                if index == len(rows):
                    rows.append(row)
                else:
                    rows[index] = row
        self.run.rows = rows
        self.writer.save(self.run, self.out)  # each row serialised once, not at every save (results.py)
