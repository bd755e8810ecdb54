"""The runner's side of serving: what a serving case needs to know before its worker starts.

- Where LoadGen writes: `<run>.loadgen/<case>/` beside the run file `<run>.json` (the worker takes
  `<case>-2`, `-3`... when the folder exists, so logs are never overwritten).
- Offline's batch size: "the runtime's best" is the batch size of this runtime's latency row with the
  highest throughput in the same run (same model, weights, dtype, image size and memory format); with no
  such row, `serving.max_batch`. The choice is made after the latency rows are in, which is why serving
  runs after them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from resbench.results import ResultRow
from resbench.suite import Case

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def loadgen_root(run_file: Path) -> Path:
    """`runs/x/20261130.json` -> `runs/x/20261130.loadgen`."""
    return run_file.with_name(run_file.stem + ".loadgen")


def case_folder_name(case: Case) -> str:
    """`resnet50_compile-mode=max-autotune_fp32_server`: readable, and safe in any file system."""
    label = _UNSAFE.sub("-", case.backend_label).strip("-")
    return "_".join((_UNSAFE.sub("-", case.model.name), label, case.dtype, case.scenario or "latency"))


def best_batch(case: Case, rows: Iterable[ResultRow]) -> tuple[int, str] | None:
    """(batch size, why) of the runtime's fastest latency row in images/s, or None without one."""
    candidates = [row for row in rows
                  if row.scenario is None and row.status == "ok" and row.throughput_ips
                  and row.model == case.model.name and row.weights == case.model.weights
                  and row.backend_label == case.backend_label and row.dtype == case.dtype
                  and row.image_size == case.image_size and row.memory_format == case.memory_format]
    if not candidates:
        return None
    best = max(candidates, key=lambda row: row.throughput_ips)
    sizes = sorted({row.batch_size for row in candidates})
    return best.batch_size, (f"batch {best.batch_size}: the highest throughput ({best.throughput_ips:,.1f} img/s) "
                             f"of this runtime's latency rows (batches {', '.join(map(str, sizes))})")


def prepare_cases(cases: list[Case], rows: Iterable[ResultRow], run_file: Path) -> list[Case]:
    """The serving cases with their log folder and (offline) batch size filled in."""
    rows = list(rows)
    root = loadgen_root(run_file).resolve()
    out = []
    for case in cases:
        update: dict = {"loadgen_dir": str(root / case_folder_name(case))}
        if case.scenario == "offline":
            chosen = best_batch(case, rows)
            if chosen is not None:
                update["batch_size"], update["serving_note"] = chosen
        out.append(case.model_copy(update=update))
    return out
