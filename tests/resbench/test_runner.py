"""The runner: preflight's FLOP counting, the run file kept current while an executor streams rows back
(in any order, as a parallel executor sends them), and `--repeat K` end to end (the run-to-run spread of
the medians in the rows and the table)."""

from __future__ import annotations

import sys
from pathlib import Path

from resbench.executors.base import Executor
from resbench.measure import base_row
from resbench.results import RunFile
from resbench.runner import Preflight, preflight, run_suite

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402


def test_preflight_counts_each_model_once_for_the_workers():
    """Built-in models are counted here when several workers would count them; models with code of their
    own are counted by the checker process, always (it runs their forward anyway)."""
    def costs_of(fields: dict, **options) -> dict:
        return preflight(faults.cpu_cases(**fields), **options).costs

    four_groups = costs_of({"models": ["resnet18"], "batch_sizes": [1, 2], "dtypes": ["fp32", "bf16"]})
    (spec, size), cost = next(iter(four_groups.items()))
    assert len(four_groups) == 1 and spec.name == "resnet18" and size == 32
    assert cost.params == 11_689_512  # torchvision's resnet18
    one_group = {"models": ["resnet18"]}
    assert costs_of(one_group) == {}  # one group: its worker counts
    assert costs_of(one_group, repeat=2) == costs_of(one_group, isolate=False) == four_groups

    (spec, size), cost = next(iter(costs_of({}).items()))  # python:faults:tiny, in the checker
    assert spec.name == "python:faults:tiny" and size == 32
    assert cost.params == 3 * 8 * 9 + 2 * 8 + 8 * 10 + 10  # conv, BN affine, fc weight + bias


def test_repeat_reports_the_run_to_run_spread(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml")
    out = tmp_path / "run.json"

    result = faults.resbench("run", suite, "--out", out, "--repeat", "2", "--no-isolation")

    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = RunFile.load(out).rows
    assert row.status == "ok"
    assert len(row.repeat_medians_ms) == 2 and row.latency_ms.median in row.repeat_medians_ms
    assert "repeat spread" in result.stdout


class _OutOfOrder(Executor):
    """Runs nothing: answers every unit with canned rows, interleaving the groups' rows as a parallel
    executor would (the second group's first row arrives before the first group's)."""

    name, in_process = "out-of-order", True

    def __init__(self, saved: list[list[str]], out: Path):
        self.saved, self.out = saved, out

    def run(self, units, sink) -> None:
        first, second = units
        rows = {u.group: [base_row(c, None, "skipped", f"canned {u.group}.{i}") for i, c in enumerate(u.cases)]
                for u in units}
        for unit, index in ((second, 0), (first, 0), (second, 1), (first, 1)):
            sink.row(unit, index, rows[unit.group][index])
            self.saved.append([r.reason for r in RunFile.load(self.out).rows])
        sink.unit_done(second, rows[1])
        sink.unit_done(first, rows[0])


def test_run_file_keeps_group_order_whatever_order_rows_arrive_in(tmp_path):
    cases = faults.cpu_cases(backends=["eager", {"name": "eager", "cuda_graphs": True}], batch_sizes=[1, 2])
    out = tmp_path / "run.json"
    # a row of another case (a row of one of `cases` would be replaced in place: one row per case)
    earlier = base_row(cases[0], None, "skipped", "from an earlier run").model_copy(update={"batch_size": 7})
    run = RunFile(env={}, suite={}, rows=[earlier])
    saved: list[list[str]] = []
    finished_groups: list[int] = []

    run_suite(cases, run, out, executor=_OutOfOrder(saved, out), checked=Preflight(),
              on_group_done=lambda group, _rows: finished_groups.append(group[0].batch_size))

    assert saved == [  # saved after every row: earlier rows first, then groups in order, each in case order
        ["from an earlier run", "canned 1.0"],
        ["from an earlier run", "canned 0.0", "canned 1.0"],
        ["from an earlier run", "canned 0.0", "canned 1.0", "canned 1.1"],
        ["from an earlier run", "canned 0.0", "canned 0.1", "canned 1.0", "canned 1.1"],
    ]
    assert [r.reason for r in RunFile.load(out).rows] == saved[-1]
    assert finished_groups == [2, 1]



class _Remeasures(Executor):
    """Answers every unit with an ok row (canned samples), as a resumed run re-measuring a crash would."""

    name, in_process = "canned-ok", True

    def __init__(self, saved: list[list[tuple[int, str]]], out: Path):
        self.saved, self.out = saved, out

    def run(self, units, sink) -> None:
        from resbench.stats import summarize

        for unit in units:
            rows = [base_row(c, None, "ok", latency_ms=summarize([1.0]), samples_ms=[1.0]) for c in unit.cases]
            for index, row in enumerate(rows):
                sink.row(unit, index, row)
                self.saved.append([(r.batch_size, r.status) for r in RunFile.load(self.out).rows])
            sink.unit_done(unit, rows)


def test_a_resumed_crash_keeps_its_row_and_place_until_its_new_row_replaces_it(tmp_path):
    cases = faults.cpu_cases(batch_sizes=[1, 2, 3])
    crashed = base_row(cases[1], None, "crashed", "crashed during measure of eager: killed by SIGSEGV")
    done = base_row(cases[2], None, "skipped", "skipped before")
    out = tmp_path / "run.json"
    saved: list[list[tuple[int, str]]] = []

    run = run_suite([cases[0], cases[1]], RunFile(env={}, suite={}, rows=[crashed, done]), out,
                    executor=_Remeasures(saved, out), checked=Preflight())

    assert saved == [[(2, "crashed"), (3, "skipped"), (1, "ok")],
                     [(2, "ok"), (3, "skipped"), (1, "ok")]]
    assert [(r.batch_size, r.status) for r in run.rows] == [(2, "ok"), (3, "skipped"), (1, "ok")]
