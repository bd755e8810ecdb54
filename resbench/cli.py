"""The `resbench` command line: one thin function per command; the work lives in the modules.

Every usage or input error is one line on stderr and exit code 2 (no traceback unless --debug)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from resbench.errors import ResbenchError, UsageError, one_of

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Benchmark ResNet-family inference across runtimes.")
# Logs and CI (no terminal) get wide tables instead of rich's 80-column default.
stdout = Console(width=None if sys.stdout.isatty() else 180)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 180)
_state = {"debug": False}


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def default_out_path(suite_name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / suite_name / f"{stamp}.json"


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="Suite YAML file, e.g. suites/resnet50.yaml")],
    out: Annotated[Optional[Path], typer.Option(help="Run file to write (default runs/<suite>/<time>.json)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Run file of an interrupted run: measure only the "
                                                        "cases that are missing or did not finish")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: the suite's, auto = cuda if "
                                                       "available)")] = None,
    repeat: Annotated[int, typer.Option(help="Measure the whole suite K times; rows report the "
                                             "run-to-run spread of the medians")] = 1,
) -> None:
    """Measure a suite and write a run file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.progress import TimeRemainingColumn

    from resbench import runner
    from resbench.environment import fingerprint
    from resbench.report.console import print_run
    from resbench.results import RunFile
    from resbench.suite import expand, load_suite, resolve_device

    if repeat < 1:
        raise UsageError(f"--repeat {repeat} is not allowed; it must be an integer >= 1")
    loaded = load_suite(suite)
    resolved = resolve_device(_device_choice(device or loaded.device))
    cases = expand(loaded, resolved)
    out_path = out or resume or default_out_path(loaded.name)
    runner.check_writable(out_path)
    if resume is not None:
        run_file = RunFile.load(resume)
        cases = runner.pending_cases(run_file, loaded, cases, str(resume))
    else:
        run_file = RunFile(env=fingerprint(resolved), suite=loaded.model_dump(mode="json"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task(f"{loaded.name}: {len(cases)} cases on {resolved}", total=len(cases))
        runner.run_suite(
            cases, run_file, out_path, repeat=repeat,
            on_group_done=lambda group, _rows: bar.advance(task, len(group)),
            progress=lambda message: bar.update(task, description=message),
        )
        bar.update(task, description=f"{loaded.name}: done")
    print_run(run_file, stdout)
    stdout.print(f"run file: {out_path}")


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="models | backends | suites")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List models (params, GFLOPs at 224x224), backends (availability), or suites."""
    from resbench import listing

    kinds = {"models": listing.models, "backends": listing.backends, "suites": listing.suites}
    if what not in kinds:
        raise UsageError(f"cannot list {what!r}; {one_of(kinds)}")
    columns, rows = kinds[what]()
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
    return "" if value is None else str(value)


@app.command()
def env(
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda if available)")] = None,
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
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    stdout.print(table)
    backends = Table("backend", "available", "reason", header_style="bold", title=f"backends on {resolved}",
                     title_justify="left")
    for row in backend_rows:
        backends.add_row(row["backend"], "yes" if row["available"] else "no", row["reason"])
    stdout.print(backends)


def _device_choice(device: str) -> str:
    allowed = ("auto", "cpu", "cuda")
    if device not in allowed:
        raise UsageError(f"device {device!r} is not allowed; {one_of(allowed)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("device 'cuda' requested but no CUDA GPU is visible to torch; use --device cpu")
    return device


def main() -> None:
    """Console-script entry point: one-line errors, exit 2 for usage/input errors, 130 on Ctrl-C."""
    try:
        app(standalone_mode=False)
    except ResbenchError as exc:
        if _state["debug"]:
            traceback.print_exc()
        stderr.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        stderr.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        stderr.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if _state["debug"] or os.environ.get("RESBENCH_DEBUG"):
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        stderr.print(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                     markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
