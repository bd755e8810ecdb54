"""The executor interface: an executor takes units of work (one group's cases, measured once) and
streams each row, and each finished unit, back to a sink the runner owns.

The runner decides what the units are (groups x repetitions), an executor only where and when each runs:
in this process, in fresh worker processes, or elsewhere. An executor never writes the run file and
never drops a case: every unit it is given ends with `sink.unit_done` and one row per case."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from resbench.errors import UsageError, one_of
from resbench.models import ModelCost
from resbench.results import ResultRow
from resbench.suite import Case, resolve_device


@dataclass(frozen=True)
class Unit:
    """One measurement of one group: its cases, measured together once."""

    group: int                  # index of the group in the run's group order
    repetition: int             # 0 .. repeat-1
    cases: tuple[Case, ...]
    cost: ModelCost | None      # params and FLOPs counted once by the runner's preflight, if it did
    label: str = ""             # progress prefix, e.g. "[2/3] " for a repeated run


class RowSink(Protocol):
    def unit_starting(self, unit: Unit) -> None:
        """`unit` is about to be measured (the runner may wait here for a quiet machine: --wait-idle)."""

    def row(self, unit: Unit, index: int, row: ResultRow) -> None:
        """Case `index` of `unit` has its final row."""

    def unit_done(self, unit: Unit, rows: list[ResultRow]) -> None:
        """Every case of `unit` has its row (in case order)."""

    def progress(self, message: str) -> None:
        """What the work is doing now (one line)."""


class Executor(ABC):
    """Where units run. Used as a context manager around a whole run (`with executor: ...`): entering
    acquires what it runs on (a Ray cluster: connected to, or started), leaving releases it. Before `run`,
    the command line asks it which device `auto` means, the environment block, and the device memory,
    since these describe the machines that measure, which need not be this one."""

    name: ClassVar[str]
    in_process: ClassVar[bool]   # True: user code (python: models, checkpoints) runs in the caller's process

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def resolve_device(self, choice: str) -> Literal["cuda", "cpu"]:
        """`auto` -> cuda when the measuring machines have a GPU; `cuda` without one is a usage error."""
        return resolve_device(choice)

    def environment(self, device: str) -> dict[str, Any]:
        """The run file's `env` block: the fingerprint of the machine(s) that measure."""
        from resbench.environment import fingerprint

        return fingerprint(device)

    def extend_environment(self, env: dict[str, Any], device: str) -> None:
        """A resumed run's `env`: add what this session's machines add (nothing, on one machine)."""
        return None

    def device_memory_bytes(self, device: str) -> int | None:
        """The smallest memory of a device of that kind that may measure (None: unknown)."""
        from resbench.environment import device_memory_bytes

        return device_memory_bytes(device)

    @abstractmethod
    def run(self, units: Sequence[Unit], sink: RowSink) -> None:
        """Run every unit; return when each has ended with `sink.unit_done`."""


class SequentialExecutor(Executor):
    """Runs units one after another, in order, through `run_unit`."""

    def run(self, units: Sequence[Unit], sink: RowSink) -> None:
        for unit in units:
            sink.unit_starting(unit)
            rows = self.run_unit(
                unit, lambda message, unit=unit: sink.progress(unit.label + message),
                lambda index, row, unit=unit: sink.row(unit, index, row))
            sink.unit_done(unit, rows)

    @abstractmethod
    def run_unit(self, unit: Unit, progress, on_row) -> list[ResultRow]:
        """One row per case of `unit`, in case order; `on_row(index, row)` as soon as each is final."""


class InProcessExecutor(SequentialExecutor):
    name = "in-process"
    in_process = True

    def run_unit(self, unit: Unit, progress, on_row) -> list[ResultRow]:
        from resbench.measure import run_group

        return run_group(list(unit.cases), progress, on_row=on_row, cost=unit.cost)


class WorkerExecutor(SequentialExecutor):
    name = "workers"
    in_process = False

    def run_unit(self, unit: Unit, progress, on_row) -> list[ResultRow]:
        from resbench.executors.isolated import run_group_isolated

        return run_group_isolated(list(unit.cases), progress, on_row=on_row, cost=unit.cost)


_EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (WorkerExecutor, InProcessExecutor)}
EXECUTOR_NAMES: tuple[str, ...] = (*_EXECUTORS, "ray")


def get_executor(name: str, *, address: str | None = None) -> Executor:
    """The executor called `name`; `address` is the Ray cluster's (ray only; else RAY_ADDRESS, else a
    local cluster is started)."""
    if name not in EXECUTOR_NAMES:
        raise UsageError(f"executor {name!r} is not known; {one_of(EXECUTOR_NAMES)}")
    if address is not None and name != "ray":
        raise UsageError(f"--address {address!r} is for --executor ray, not {name!r}")
    if name == "ray":
        from resbench.executors.ray_cluster import RayExecutor  # needs the optional `ray` package

        return RayExecutor(address=address)
    return _EXECUTORS[name]()
