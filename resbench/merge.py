"""`resbench merge`: join run files of one suite - the shards of `resbench run --shard I/N`, or parts of a
run measured on several machines - into one run file, and split a run by device (`--only-device`).

Refused, with one line naming the files and the difference (exit 2):
- different suites (the shards of one suite record the same validated suite);
- different software: resbench version and commit, Python, torch, CUDA, cuDNN, the optional packages,
  the device kind (cpu / cuda). A run is one software stack; measurements of two are two runs;
- shards of different splits (1/2 with 1/3);
- different `--repeat` (a row of one combines K repetitions, of the other a single one);
- overlap: a case in two files (a shard merged twice, or a shard with the whole run).
Different machines are allowed: each row then records where it ran (`placement`, from its file's env),
and `compare` / `recommend` see a run across GPU models for what it is.

Rows come out in the suite's case order; the settings are the files' (one `--repeat`, so `--resume` of
the merged file measures as they did); the env is the first file's, without `shard`, with `merged_from`
(each file: path, shard, host, device, created) and every file's `nodes`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resbench.errors import RunFileError, UsageError
from resbench.results import Placement, ResultRow, RunFile, backend_label

SOFTWARE_KEYS = ("resbench", "git_sha", "python", "torch", "cuda", "cudnn", "device_type", "packages")


def merge_files(paths: Sequence[str], only_device: str | None = None) -> RunFile:
    return merge_runs([(path, RunFile.load(path)) for path in paths], only_device)


def merge_runs(runs: Sequence[tuple[str, RunFile]], only_device: str | None = None) -> RunFile:
    if not runs:
        raise UsageError("resbench merge needs at least one run file")
    _check_consistent(runs)
    spread = len({(run.env.get("host"), run.env.get("device")) for _, run in runs}) > 1
    owner: dict[tuple, str] = {}
    rows: list[ResultRow] = []
    for name, run in runs:
        for row in run.rows:
            if only_device is not None and run.device_of(row) != only_device:
                continue
            if row.identity in owner:
                raise RunFileError(f"cannot merge {name!r}: case {_label(row)} is also in {owner[row.identity]!r} "
                                   f"(the runs overlap)")
            owner[row.identity] = name
            row = row.model_copy(deep=True)
            if row.placement is None and spread:  # the files come from several machines: say which
                row.placement = Placement(node=str(run.env.get("host")), device_name=run.device_of(row))
            rows.append(row)
    if only_device is not None and not rows:
        present = sorted({d for _, run in runs for d in run.devices()})
        raise UsageError(f"--only-device {only_device!r} matches no row; devices in the run(s): "
                         f"{', '.join(map(repr, present)) or '(none)'}")
    first_name, first = runs[0]
    env = {k: v for k, v in first.env.items() if k != "shard"}
    devices = sorted({run.device_of(r) for _, run in runs for r in run.rows
                      if only_device is None or run.device_of(r) == only_device})
    if devices:
        env["device"] = " | ".join(devices)
    env["merged_from"] = [{"file": name, "shard": run.env.get("shard"), "host": run.env.get("host"),
                           "device": run.env.get("device"), "created": run.env.get("created")} for name, run in runs]
    nodes = [node for _, run in runs for node in run.env.get("nodes", [])]
    if nodes:
        env["nodes"] = nodes
    return RunFile(env=env, suite=first.suite, settings=first.settings, rows=_in_suite_order(rows, first))


def _check_consistent(runs: Sequence[tuple[str, RunFile]]) -> None:
    first_name, first = runs[0]
    for name, run in runs[1:]:
        if differences := run.suite_differences(first.suite):
            raise RunFileError(f"cannot merge {name!r} with {first_name!r}: their suites differ "
                               f"(in: {', '.join(differences)})")
        for key in SOFTWARE_KEYS:
            if run.env.get(key) != first.env.get(key):
                raise RunFileError(f"cannot merge {name!r} with {first_name!r}: env {key} is "
                                   f"{run.env.get(key)!r} there and {first.env.get(key)!r} here; runs of "
                                   f"different software are separate runs")
        if run.settings != first.settings:
            raise RunFileError(f"cannot merge {name!r} with {first_name!r}: measured with --repeat "
                               f"{run.settings.repeat} there and {first.settings.repeat} here")
    splits = {shard.split("/")[1] for _, run in runs if isinstance(shard := run.env.get("shard"), str)}
    if len(splits) > 1:
        raise RunFileError("cannot merge shards of different splits ("
                           + ", ".join(f"{name!r}: {run.env.get('shard')}" for name, run in runs) + ")")


def _label(row: ResultRow) -> str:
    return (f"{row.model} {backend_label(row.backend, row.options)} b{row.batch_size} {row.dtype} "
            f"{row.image_size}px {row.memory_format} {row.timing_mode}")


def _in_suite_order(rows: list[ResultRow], run: RunFile) -> list[ResultRow]:
    """Rows in the order `resbench run` writes them (the suite's case order); rows the suite does not
    expand to (it cannot happen for runs of this suite) keep their order at the end."""
    order = _case_order(run.suite, str(run.env.get("device_type", "cpu")))
    return sorted(rows, key=lambda r: order.get(r.identity, len(order)))


def _case_order(suite: dict[str, Any], device: str) -> dict[tuple, int]:
    from resbench.runner import group_cases
    from resbench.suite import Suite, expand

    try:
        cases = expand(Suite.model_validate(suite), device if device in ("cpu", "cuda") else "cpu")
    except Exception:  # a suite this resbench no longer reads: keep the files' order
        return {}
    grouped = [case for group in group_cases(cases) for case in group]
    return {case.identity: index for index, case in enumerate(grouped)}
