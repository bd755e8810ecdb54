"""The `resbench` command line: one thin function per command; the work lives in the modules.

Every usage or input error is one line on stderr and exit code 2 (no traceback unless --debug)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from resbench.errors import OutputError, ResbenchError, UsageError, cap, one_of

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Benchmark ResNet-family inference across runtimes.")
# Logs and CI (no terminal) get wide tables instead of rich's 80-column default.
stdout = Console(width=None if sys.stdout.isatty() else 180)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 180)
_state = {"debug": False}


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (accepted "
                                                "anywhere on the command line).")] = False) -> None:
    _state["debug"] = _state["debug"] or debug


def _take_debug(argv: list[str]) -> list[str]:
    """`--debug` anywhere before a `--`: click accepts a group option only before the subcommand, so it is
    taken out here and set directly (`resbench run suite.yaml --debug` works like `resbench --debug run`)."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:end]:
        _state["debug"] = True
        return [a for a in argv[:end] if a != "--debug"] + argv[end:]
    return argv


RUNS_ROOT = Path("runs")


def default_out_path(suite_name: str) -> Path:
    """runs/<suite>/<time>.json, never an existing file (a second run in the same second gets -2, -3, ...),
    and never outside runs/ (the suite name is a validated slug; this checks the path built from it too)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, number = RUNS_ROOT / suite_name / f"{stamp}.json", 2
    while path.exists():
        path, number = RUNS_ROOT / suite_name / f"{stamp}-{number}.json", number + 1
    root = os.path.abspath(RUNS_ROOT)
    if os.path.commonpath([root, os.path.abspath(path)]) != root or ".." in path.parts:
        raise UsageError(f"suite name {suite_name!r} would put the run file outside {RUNS_ROOT}/")
    return path


def _file_path(flag: str) -> Callable[[str], Path]:
    """The parser of an output path option: the path as typed, refused when it ends with '/' (Path() drops
    the slash, and `--out new.json/` wrote a file named new.json)."""
    def parse(text: str) -> Path:
        if text.endswith(("/", os.sep)):
            raise UsageError(f"{flag} {text!r} ends with '/', which names a folder; give a file path")
        return Path(text)
    return parse


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="Suite YAML file, e.g. suites/resnet50.yaml")],
    out: Annotated[Path | None, typer.Option(parser=_file_path("--out"), metavar="PATH",
                                             help="Run file to write (default runs/<suite>/<time>.json)")] = None,
    resume: Annotated[Path | None, typer.Option(help="Run file of an interrupted run: measure only the "
                                                        "cases that are missing or did not finish")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default: the suite's "
                                                       "device; auto = cuda if available)")] = None,
    repeat: Annotated[int | None, typer.Option(help="Measure the whole suite K times; rows report the "
                                                    "run-to-run spread of the medians (default 1; --resume "
                                                    "reuses the run file's)")] = None,
    no_isolation: Annotated[bool, typer.Option("--no-isolation", help="Run every group in this process "
                                               "instead of a fresh worker (debugging: a crash or hang then "
                                               "ends the run); the same as --executor in-process")] = False,
    executor: Annotated[str, typer.Option(help="Where groups run: workers (a fresh process per group, the "
                                               "default), in-process, or ray (a task per group on a Ray "
                                               "cluster; extra resbench[ray])")] = "workers",
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on with --executor ray (default: "
                                                     "RAY_ADDRESS, else a local cluster)")] = None,
    shard: Annotated[str | None, typer.Option(metavar="I/N", help="Measure only shard I of N (a deterministic "
                                              "split of the groups, e.g. 2/4); join shards with `resbench "
                                              "merge`")] = None,
    wait_idle: Annotated[float | None, typer.Option(
        "--wait-idle", metavar="SECONDS", help="Before each group, wait up to SECONDS for the machine to go quiet "
        "(other processes using under 10% of the cores; progress shown); then measure anyway")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail every row measured under contention (status "
                                         "failed, the cause as reason), for CI gates")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run file of another suite at "
                                        "--out (a file resbench did not write is never replaced)")] = False,
) -> None:
    """Measure a suite and write a run file."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from resbench import output_files, runner
    from resbench.executors import get_executor
    from resbench.report.console import print_run
    from resbench.results import MAX_REPEAT, RunFile, RunSettings
    from resbench.suite import expand, load_suite

    if repeat is not None and not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"--repeat {repeat} is not allowed; it must be an integer from 1 to {MAX_REPEAT:,}")
    if wait_idle is not None and not wait_idle >= 0:
        raise UsageError(f"--wait-idle {wait_idle} is not allowed; it must be a number of seconds >= 0")
    if no_isolation and executor not in ("workers", "in-process"):  # workers is the default: not a choice
        raise UsageError(f"--no-isolation is --executor in-process; it cannot be combined with --executor "
                         f"{executor}: give one of them")
    if wait_idle is not None and executor == "ray":
        raise UsageError("--wait-idle watches this machine; with --executor ray the groups run on the cluster's "
                         "nodes: leave it out")
    shard_of = runner.parse_shard(shard) if shard is not None else None
    runs_groups = get_executor("in-process" if no_isolation else executor, address=address)
    started = False
    run_file: RunFile | None = None
    previous_term = _on_sigterm(_terminate)  # a killed run cleans up like Ctrl-C
    try:
        loaded = load_suite(suite)
        choice = _device_choice(device or loaded.device, here=runs_groups.name != "ray")
        if resume is not None:   # its own error first (another schema, a bad row), not the output check's
            RunFile.load(resume)  # "--out ... is not a resbench run file: remove it"; read again once locked
        out_path = out or resume or default_out_path(loaded.name)
        resuming_in_place = resume is not None and output_files.resolve(resume) == output_files.resolve(out_path)
        inputs = [suite] + ([resume] if resume is not None and not resuming_in_place else [])
        target = output_files.check_run_output(out_path, suite_name=loaded.name, inputs=inputs,
                                               force=force or resuming_in_place)
        hint = (f"resbench run {suite} --resume {out_path}" + (f" --device {device}" if device else "")
                + (f" --shard {shard}" if shard else "")
                + (f" --executor ray --address {address}" if runs_groups.name == "ray" and address else
                   " --executor ray" if runs_groups.name == "ray" else ""))
        # a Ray cluster is connected to (or started) inside, and left (or stopped) at the end
        with output_files.exclusive(target), runs_groups:
            resolved = runs_groups.resolve_device(choice)
            cases = expand(loaded, resolved)
            if shard_of is not None:
                groups = len(runner.group_cases(cases))
                cases = runner.shard_cases(cases, *shard_of)
                if not cases:  # more shards than groups: a CI matrix may ask for it, but say so
                    stderr.print(f"shard {shard} holds no case: the suite has {groups} group(s) for {shard_of[1]} "
                                 f"shards; the run file will have no rows", highlight=False, soft_wrap=True)
            if resume is not None:
                run_file = RunFile.load(resume)
                repeat = _resumed_repeat(repeat, run_file.settings.repeat, resume)
                runner.check_same_shard(run_file, shard, str(resume))
                cases = runner.pending_cases(run_file, loaded, cases, str(resume))
                runs_groups.extend_environment(run_file.env, resolved)
            else:
                env = runs_groups.environment(resolved)
                if shard is not None:
                    env["shard"] = shard
                run_file = RunFile(env=env, suite=loaded.model_dump(mode="json"),
                                   settings=RunSettings(repeat=repeat or 1))
            repeat = run_file.settings.repeat
            checked = runner.preflight(cases, isolate=not runs_groups.in_process, repeat=repeat,
                                       device_memory=runs_groups.device_memory_bytes)  # before any work
            _record_machine(run_file, loaded.threads, resolved, wait_idle, strict, resumed=resume is not None)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            started = True
            with Progress(*columns, console=stderr, transient=False) as bar:
                task = bar.add_task(f"{loaded.name}: {len(cases)} cases on {resolved}", total=len(cases))
                runner.run_suite(
                    cases, run_file, target, repeat=repeat, executor=runs_groups, checked=checked,
                    on_group_done=lambda group, _rows: bar.advance(task, len(group)),
                    progress=lambda message: bar.update(task, description=message),
                    wait_idle_s=wait_idle, strict=strict,
                )
                bar.update(task, description=f"{loaded.name}: done")
    except output_files.WriteError as exc:
        if not started:
            raise
        keeps = (f"{target} keeps every case saved before it; once there is room, finish with `{hint}`"
                 if target.is_file() else "no run file was written; run again once there is room")
        raise OutputError(f"{exc}; {keeps}") from None
    except KeyboardInterrupt:
        if started and target.is_file() and run_file is not None:
            partial = sum(row.partial for row in run_file.rows)
            of_which = f" ({partial} partial: fewer repetitions than --repeat {repeat})" if partial else ""
            stderr.print(f"run file {out_path} keeps {len(run_file.rows)} case(s){of_which}; finish it with "
                         f"`{hint}`", markup=False, highlight=False, soft_wrap=True)
        # typer turns a KeyboardInterrupt into a returned exit code that main() does not see; an Abort
        # reaches main(), which exits 130
        raise typer.Abort() from None
    finally:
        _on_sigterm(previous_term)
    print_run(run_file, stdout)
    stdout.print(f"run file: {out_path}")


def _record_machine(run_file, threads: int | None, device: str, wait_idle: float | None, strict: bool,
                    resumed: bool) -> None:
    """Probe the machine before any measuring: a one-line banner when it is busy, and the figures, the
    thread policy and the contention flags in the run file's environment (`system`). A resumed run keeps
    the environment it was started with (each row records its own machine state anyway)."""
    from resbench import system
    from resbench import threads as thread_policy

    state = system.machine_state(device, seconds=system.START_PROBE_S)
    if state.busy:
        stderr.print(state.banner(), style="bold yellow", markup=False, highlight=False, soft_wrap=True)
    if not resumed:
        run_file.env["system"] = {"at_start": state.record(), "thread_policy": thread_policy.describe(threads),
                                  "wait_idle_s": wait_idle, "strict": strict}


def _resumed_repeat(given: int | None, recorded: int, path: Path) -> int:
    """--resume measures with the run file's --repeat; a different one given explicitly is refused (its
    rows would combine another number of repetitions than the file's)."""
    if given is not None and given != recorded:
        raise UsageError(f"--repeat {given} differs from the --repeat {recorded} recorded in {str(path)!r}; "
                         f"resume without --repeat (the recorded value is used)")
    return recorded


def _on_sigterm(handler):
    """Install `handler` for SIGTERM and return the previous one (only the main thread may)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@app.command()
def merge(
    runs: Annotated[list[Path], typer.Argument(help="Run files to join: the shards of one suite "
                                                        "(--shard I/N), or its runs on several machines")],
    out: Annotated[Path, typer.Option(parser=_file_path("--out"), metavar="PATH", help="Run file to write")],
    only_device: Annotated[str | None, typer.Option(
        "--only-device", help="Keep only the rows measured on this device (GPU or CPU model): splits a run "
        "across GPU models, which compare and recommend take one model at a time")] = None,
) -> None:
    """Join run files of one suite (shards, or runs on several machines) into one; refuses overlapping or
    inconsistent runs."""
    from resbench import output_files
    from resbench.merge import merge_files

    merged = merge_files([str(r) for r in runs], only_device=only_device)
    target = output_files.check_run_output(out, suite_name=str(merged.suite.get("name")), inputs=runs)
    with output_files.exclusive(target):
        _write_output("--out", out, lambda: merged.save(target))
    stdout.print(f"{len(merged.rows)} cases from {len(runs)} run file(s)", highlight=False)


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="models | backends | suites (the YAML files in ./suites)")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List models (params, GFLOPs at 224x224), backends (availability), or suites."""
    from resbench import listing

    kinds = {"models": listing.models, "backends": listing.backends, "suites": listing.suites}
    if what not in kinds:
        raise UsageError(f"cannot list {what!r}; {one_of(kinds)}")
    columns, rows = kinds[what]()
    if what == "suites" and not rows:
        stderr.print(f"no suite files in {listing.SUITES_DIR.resolve()}: `resbench list suites` reads ./suites; "
                     "run it from the root of a resbench checkout", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        stdout.print_json(json.dumps(rows))
        return
    table = Table(*columns, header_style="bold")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    stdout.print(table)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else escape(str(value))  # "[tensorrt]" is text, not rich markup


@app.command()
def env(
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default auto: cuda if available)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Versions, device, and which backends can run here (with the reason when not)."""
    from resbench import listing
    from resbench.environment import fingerprint
    from resbench.suite import resolve_device

    resolved = resolve_device(_device_choice(device or "auto"))
    info = fingerprint(resolved)
    _, backend_rows = listing.backends(resolved)
    if as_json:
        stdout.print_json(json.dumps({"env": info, "backends": backend_rows}))
        return
    table = Table("key", "value", header_style="bold", title="environment", title_justify="left")
    for key, value in info.items():
        table.add_row(key, escape(json.dumps(value) if isinstance(value, dict) else str(value)))
    stdout.print(table)
    backends = Table("backend", "available", "reason", header_style="bold", title=f"backends on {resolved}",
                     title_justify="left")
    for row in backend_rows:
        backends.add_row(row["backend"], "yes" if row["available"] else "no", escape(row["reason"]))
    stdout.print(backends)


@app.command()
def report(
    run_file: Annotated[Path, typer.Argument(help="Run file written by `resbench run`")],
    html: Annotated[Path | None, typer.Option(
        "--html", parser=_file_path("--html"), metavar="PATH",
        help="Write a self-contained HTML report (plots embedded)")] = None,
    md: Annotated[Path | None, typer.Option(
        "--md", parser=_file_path("--md"), metavar="PATH",
        help="Write compact Markdown (PR comments, CI step summaries)")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", parser=_file_path("--csv"), metavar="PATH",
                                             help="Write CSV, one row per case")] = None,
    pytest_benchmark: Annotated[Path | None, typer.Option(
        "--pytest-benchmark", parser=_file_path("--pytest-benchmark"), metavar="PATH",
        help="Write pytest-benchmark JSON (read by its `compare`)")] = None,
) -> None:
    """Print a run's summary and write it as HTML, Markdown, CSV or pytest-benchmark JSON."""
    from resbench.report.console import print_run
    from resbench.report.csv_export import write_csv
    from resbench.report.html import write_html
    from resbench.report.markdown import write_markdown
    from resbench.report.pytest_benchmark import write_pytest_benchmark
    from resbench.results import RunFile

    outputs = [(flag, path, write) for flag, path, write in (
        ("--html", html, write_html), ("--md", md, write_markdown), ("--csv", csv, write_csv),
        ("--pytest-benchmark", pytest_benchmark, write_pytest_benchmark)) if path is not None]
    targets = _check_outputs([(flag, path) for flag, path, _ in outputs], inputs=[run_file])
    loaded = RunFile.load(run_file)
    print_run(loaded, stdout)
    for (flag, path, write), target in zip(outputs, targets, strict=True):
        _write_output(flag, path, lambda write=write, target=target: write(loaded, target))


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="Run file of the baseline")],
    candidate: Annotated[Path, typer.Argument(help="Run file of the candidate")],
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", metavar="METRIC:PCT%", help="Gate: median|p90|p95|p99|memory and a minimum effect, "
        "e.g. median:5% (the default), p99:10%, memory:10%; repeatable")] = None,
    md: Annotated[Path | None, typer.Option(
        "--md", parser=_file_path("--md"), metavar="PATH",
        help="Write the comparison as Markdown (also when the gate fails)")] = None,
    allow_insufficient: Annotated[bool, typer.Option(
        "--allow-insufficient", help="Pass cases the gate cannot judge (INSUFFICIENT: too few samples, or a "
        "baseline measured under contention) instead of failing on them")] = False,
) -> None:
    """Regression gate: exit 0 when nothing regressed decisively, 1 on a regression or a case it cannot
    judge (too few samples, a busy baseline), 2 on bad input."""
    from resbench.compare import compare_files
    from resbench.output_files import replace_file
    from resbench.report.comparison import print_comparison, render_markdown

    targets = _check_outputs([("--md", md)] if md is not None else [], inputs=[baseline, candidate])
    comparison = compare_files(str(baseline), str(candidate), fail_on or [], allow_insufficient=allow_insufficient)
    print_comparison(comparison, stdout)
    if md is not None:
        text = render_markdown(comparison)
        _write_output("--md", md, lambda: replace_file(targets[0], text))
    if comparison.exit_code:
        # SystemExit, not typer.Exit: under standalone_mode=False click *returns* Exit's code from app()
        # instead of raising it, and main() exits 0 after app() returns.
        raise SystemExit(comparison.exit_code)


@app.command()
def recommend(
    run_file: Annotated[Path, typer.Argument(help="Run file written by `resbench run`")],
    batch: Annotated[int | None, typer.Option("--batch", help="Only this batch size")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="Only this dtype: fp32|tf32|fp16|bf16|int8")] = None,
    max_p99_ms: Annotated[float | None, typer.Option(
        "--max-p99-ms", help="Exclude runtimes whose p99 latency exceeds this (--scenario server: "
                        "in every Server run at the QPS it picks)")] = None,
    max_memory_gb: Annotated[float | None, typer.Option(
        "--max-memory-gb", help="Exclude runtimes whose own memory (memory.backend_mb) exceeds "
                           "this; process-wide figures are never checked")] = None,
    min_cosine: Annotated[float | None, typer.Option(
        "--min-cosine", help="Exclude runtimes whose output cosine to the reference is below this")] = None,
    objective: Annotated[str, typer.Option(
        "--objective", help="latency (lowest median latency) or throughput (highest images/s); "
                       "p99 is shown, never ranked on")] = "latency",
    scenario: Annotated[str | None, typer.Option(
        "--scenario", help="Recommend from the serving rows of a LoadGen scenario: single-stream (lowest p90), "
                           "server (highest QPS under the p99 bound) or offline (highest samples/s)")] = None,
) -> None:
    """Per (model, batch): the runtimes meeting the constraints, the Pareto frontier, the pick, and why
    every other runtime lost. With --scenario: per model, the best runtime for that serving scenario."""
    if scenario is not None:
        _recommend_scenario(run_file, scenario, dtype, max_p99_ms, batch=batch, max_memory_gb=max_memory_gb,
                            min_cosine=min_cosine, objective=objective)
        return
    from resbench.recommend import Constraints, print_recommendation, recommend_file

    constraints = Constraints(batch=batch, dtype=dtype, max_p99_ms=max_p99_ms, max_memory_gb=max_memory_gb,
                              min_cosine=min_cosine, objective=objective)  # type: ignore[arg-type]
    print_recommendation(recommend_file(str(run_file), constraints), stdout)


def _recommend_scenario(run_file: Path, scenario: str, dtype: str | None, max_p99_ms: float | None,
                        max_memory_gb: float | None, **not_for_serving: object) -> None:
    from resbench.results import RunFile
    from resbench.serving.recommend import print_scenario_recommendation, recommend_scenario

    flags = {"batch": "--batch", "min_cosine": "--min-cosine", "objective": "--objective"}
    for name, value in not_for_serving.items():
        if value is not None and not (name == "objective" and value == "latency"):
            raise UsageError(f"{flags[name]} does not apply with --scenario (serving rows are ranked by the "
                             f"scenario's figure); use --dtype, --max-p99-ms and --max-memory-gb")
    groups = recommend_scenario(RunFile.load(run_file), scenario, dtype=dtype, max_p99_ms=max_p99_ms,
                                max_memory_gb=max_memory_gb)
    print_scenario_recommendation(groups, stdout, max_p99_ms)


def _check_outputs(outputs: list[tuple[str, Path]], inputs: list[Path]) -> list[Path]:
    """Before any work: every output path may be written (output_files.check_report_output: never an
    input, a run file, a device, a FIFO or a directory), and no two outputs are the same file."""
    from resbench.output_files import check_report_output

    targets: list[Path] = []
    for flag, path in outputs:
        target = check_report_output(path, flag=flag, inputs=inputs)
        if target in targets:
            raise UsageError(f"{flag} {str(path)!r} is also the path of another output; give each its own")
        targets.append(target)
    return targets


def _write_output(flag: str, path: Path, write) -> None:
    """Write one output file; a write that fails (a full disk) is one line naming the flag and path."""
    from resbench.output_files import WriteError

    try:
        write()
    except WriteError as exc:
        raise OutputError(f"{flag} {str(path)!r}: {exc}") from None
    except OSError as exc:
        raise OutputError(f"{flag} {str(path)!r} cannot be written: {exc.strerror or exc}") from None
    stdout.print(f"wrote {path}", highlight=False)


def _device_choice(device: str, here: bool = True) -> str:
    """A valid device choice; `here`: 'cuda' needs a GPU on this machine (not so for a Ray cluster's)."""
    allowed = ("auto", "cpu", "cuda")
    if device not in allowed:
        raise UsageError(f"device {device!r} is not allowed; {one_of(allowed)}")
    if device == "cuda" and here:
        from resbench.suite import resolve_device

        resolve_device(device)  # no GPU here: refused before any output is checked
    return device


def _usage_error_classes() -> tuple[type[BaseException], ...]:
    """click's ClickException as typer raises it: typer >= 0.23 vendors click as `typer._click`, older
    typer uses click itself. (Exit and Abort are public: typer.Exit, typer.Abort.)"""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def main() -> None:
    """Console-script entry point: one-line errors, exit 2 for usage/input errors, 130 on Ctrl-C."""
    usage_errors = _usage_error_classes()
    try:
        # Without standalone mode click *returns* the code of a `typer.Exit` instead of exiting.
        code = app(args=_take_debug(sys.argv[1:]), standalone_mode=False)
    except ResbenchError as exc:
        if _state["debug"]:
            traceback.print_exc()
        stderr.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `resbench`: the help, not an error
            stdout.print(exc.format_message(), markup=False, highlight=False)
            sys.exit(0)
        stderr.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        stderr.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if _state["debug"] or os.environ.get("RESBENCH_DEBUG"):
            traceback.print_exc()
        first = cap(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
        stderr.print(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                     markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
