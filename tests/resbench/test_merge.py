"""`--shard I/N` and `resbench merge`: shards of a suite merged equal the whole run's cases, in its order;
overlapping or inconsistent run files are refused in one line; a run across device models is split by
`merge --only-device`, refused by `compare` and recommended per device by `recommend`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from resbench.compare import compare_runs, environment_differences
from resbench.errors import RunFileError, UsageError
from resbench.measure import base_row
from resbench.merge import merge_runs
from resbench.recommend import Constraints, recommend
from resbench.results import Placement, RunFile, RunSettings
from resbench.runner import check_same_shard, parse_shard, shard_cases

sys.path.insert(0, str(Path(__file__).parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402

ENV = {"resbench": "0.1.0", "git_sha": "abc", "python": "3.11.7", "torch": "2.13.0", "device_type": "cpu",
       "host": "a", "device": "cpu model"}


def test_shards_merged_equal_the_whole_run(tmp_path):
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2, 3])
    paths = {name: tmp_path / f"{name}.json" for name in ("full", "shard1", "shard2", "merged")}
    for name, extra in (("full", ()), ("shard1", ("--shard", "1/2")), ("shard2", ("--shard", "2/2"))):
        result = faults.resbench("run", suite, "--out", paths[name], "--no-isolation", *extra)
        assert result.returncode == 0, result.stderr[-2000:]

    merged = faults.resbench("merge", paths["shard2"], paths["shard1"], "--out", paths["merged"])

    assert merged.returncode == 0, merged.stderr[-2000:]
    full, one, two = (RunFile.load(paths[n]) for n in ("full", "shard1", "shard2"))
    assert [r.batch_size for r in one.rows] == [1, 3] and [r.batch_size for r in two.rows] == [2]
    assert (one.env["shard"], two.env["shard"]) == ("1/2", "2/2")
    result = RunFile.load(paths["merged"])
    assert [r.identity for r in result.rows] == [r.identity for r in full.rows]  # the cases, in the run's order
    assert all(r.status == "ok" for r in result.rows), [(r.backend_label, r.status, r.reason) for r in result.rows]
    assert "shard" not in result.env and [m["shard"] for m in result.env["merged_from"]] == ["2/2", "1/2"]

    overlap = faults.resbench("merge", paths["merged"], paths["shard1"], "--out", tmp_path / "bad.json")

    assert overlap.returncode == 2
    assert overlap.stderr.strip().splitlines() == [
        f"error: cannot merge {str(paths['shard1'])!r}: case python:faults:tiny eager b1 fp32 32px channels_last "
        f"device is also in {str(paths['merged'])!r} (the runs overlap)"]
    assert not (tmp_path / "bad.json").exists()


def run_of(cases: list, env: dict | None = None, suite: dict | None = None, **row_fields) -> RunFile:
    return RunFile(env={**ENV, **(env or {})}, suite=suite or {"name": "s"},
                   rows=[base_row(c, None, "skipped", "canned", **row_fields) for c in cases])


def test_a_shard_without_a_group_says_so(tmp_path):
    """`--shard 2/2` of a one-group suite wrote a row-less run file and said nothing."""
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1])
    result = faults.resbench("run", suite, "--shard", "2/2", "--out", tmp_path / "empty.json")
    assert result.returncode == 0, result.stderr
    assert "shard 2/2 holds no case: the suite has 1 group(s) for 2 shards" in " ".join(result.stderr.split())
    assert RunFile.load(tmp_path / "empty.json").rows == []


def test_shards_split_whole_groups_round_robin():
    cases = faults.cpu_cases(batch_sizes=[1, 2, 3, 4, 5], backends=["eager", {"name": "eager", "cuda_graphs": True}])
    shards = [shard_cases(cases, i, 3) for i in (1, 2, 3)]
    assert [[c.batch_size for c in s] for s in shards] == [[1, 1, 4, 4], [2, 2, 5, 5], [3, 3]]
    assert sorted(c.identity for s in shards for c in s) == sorted(c.identity for c in cases)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_one_line(text):
    with pytest.raises(UsageError, match=rf"--shard '{text}' is not allowed; give I/N with 1 <= I <= N"):
        parse_shard(text)


def test_resume_continues_only_its_own_shard():
    run = run_of([], env={"shard": "1/2"})
    check_same_shard(run, "1/2", "r.json")
    with pytest.raises(UsageError, match=r"it holds shard 1/2, and this run asks for --shard 2/2"):
        check_same_shard(run, "2/2", "r.json")
    with pytest.raises(UsageError, match=r"it holds a whole run \(no --shard\), and this run asks for --shard 1/2"):
        check_same_shard(run_of([]), "1/2", "r.json")


@pytest.mark.parametrize("change, fragment", [
    ({"suite": {"name": "other"}}, "their suites differ (in: name)"),
    ({"env": {"torch": "2.12.0"}}, "env torch is '2.12.0' there and '2.13.0' here"),
    ({"env": {"shard": "1/3"}}, "cannot merge shards of different splits"),
])
def test_inconsistent_runs_are_refused(change, fragment):
    cases = faults.cpu_cases(batch_sizes=[1, 2])
    first = run_of(cases[:1], env={"shard": "1/2"})
    other = run_of(cases[1:], env={"shard": "2/2", **change.get("env", {})}, suite=change.get("suite"))
    with pytest.raises(RunFileError) as error:
        merge_runs([("a.json", first), ("b.json", other)])
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_merge_keeps_the_runs_repeat_and_refuses_two_different_ones():
    """`merge` wrote its output without `settings`: a merged `--repeat 3` run read as `--repeat 1`, and
    `--resume` of it measured single repetitions next to rows combining three."""
    cases = faults.cpu_cases(batch_sizes=[1, 2])
    first, second = run_of(cases[:1], env={"shard": "1/2"}), run_of(cases[1:], env={"shard": "2/2"})
    for run in (first, second):
        run.settings = RunSettings(repeat=3)
    assert merge_runs([("a.json", first), ("b.json", second)]).settings.repeat == 3
    second.settings = RunSettings(repeat=1)
    with pytest.raises(RunFileError) as error:
        merge_runs([("a.json", first), ("b.json", second)])
    assert str(error.value) == "cannot merge 'b.json' with 'a.json': measured with --repeat 1 there and 3 here"


def test_suites_differing_only_by_a_key_added_since_merge():
    """A shard written before a suite key existed (no `threads`) and one written after (`threads: None`)
    record the same suite: merge joins them, as --resume would continue either."""
    cases = faults.cpu_cases(batch_sizes=[1, 2])
    older = run_of(cases[:1], suite={"name": "s"}, env={"shard": "1/2"})
    newer = run_of(cases[1:], suite={"name": "s", "threads": None}, env={"shard": "2/2"})
    assert len(merge_runs([("a.json", older), ("b.json", newer)]).rows) == 2


def test_runs_from_two_machines_record_where_each_row_ran():
    cases = faults.cpu_cases(batch_sizes=[1, 2])
    merged = merge_runs([("a.json", run_of(cases[:1])),
                         ("b.json", run_of(cases[1:], env={"host": "b", "device": "other cpu"}))])
    assert [(r.placement.node, r.placement.device_name) for r in merged.rows] == [("a", "cpu model"),
                                                                                  ("b", "other cpu")]
    assert merged.devices() == {"cpu model": 1, "other cpu": 1}


def mixed_run() -> RunFile:
    """A run whose groups ran on two GPU models (a Ray cluster of mixed nodes)."""
    cases = faults.cpu_cases(batch_sizes=[1, 2], backends=["eager", {"name": "eager", "cuda_graphs": True}])
    run = run_of(cases)
    for row in run.rows:
        gpu = "NVIDIA H100" if row.batch_size == 1 else "NVIDIA A100"
        row.placement = Placement(node=gpu.split()[1].lower(), device_name=gpu, gpu_index=0)
    return run


def test_compare_refuses_a_run_across_gpu_models():
    with pytest.raises(RunFileError) as error:
        compare_runs(mixed_run(), mixed_run(), base_name="base.json")
    assert str(error.value) == (
        "base.json was measured on 2 device models (NVIDIA A100: 2 cases, NVIDIA H100: 2 cases); a gate compares "
        "one at a time: split it with `resbench merge base.json --only-device NAME --out PART.json`")


def test_recommend_splits_a_run_across_gpu_models():
    groups = recommend(mixed_run(), Constraints()).groups
    assert [(g.batch_size, g.device) for g in groups] == [(1, "NVIDIA H100"), (2, "NVIDIA A100")]
    assert groups[0].title.endswith("on NVIDIA H100")


def test_merge_only_device_splits_a_run():
    part = merge_runs([("mixed.json", mixed_run())], only_device="NVIDIA A100")
    assert [r.batch_size for r in part.rows] == [2, 2] and part.devices() == {"NVIDIA A100": 2}
    with pytest.raises(UsageError, match="--only-device 'V100' matches no row; devices in the run"):
        merge_runs([("mixed.json", mixed_run())], only_device="V100")


def test_compare_reads_the_machines_common_env_not_each_node():
    """Node ids and file times differ between any two Ray or merged runs; the common values are compared."""
    base = run_of([], env={"nodes": [{"node_id": "1", "created": "t1"}], "merged_from": [{"file": "a"}]})
    cand = run_of([], env={"nodes": [{"node_id": "2", "created": "t2"}], "merged_from": [{"file": "b"}]})
    assert environment_differences(base, cand) == []
    cand.env["torch"] = "2.14.0"
    assert environment_differences(base, cand) == ["torch: 2.13.0 -> 2.14.0"]
