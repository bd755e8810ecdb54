"""The `ray` executor: every unit (one group, measured once) is a Ray task somewhere on a cluster.

Each task holds one GPU (`num_gpus=1`) on a GPU suite, or a whole node's CPUs on a CPU suite (so that no
two CPU measurements share cores), never retries (`max_retries=0`: a retried measurement would hide the
fault), and gets a fresh Ray worker process (`max_calls=1`). Inside it runs today's isolated worker
(isolated.py): the task is the parent of a fresh measurement process on its node, with the same per-case
clocks, crash attribution, retry-without-the-culprit and RLIMIT_AS cap as `--executor workers`. So a
crash, an OOM or a hang becomes the same `crashed` / `oom` / `timeout` row, with the same reason, on a
cluster as on one machine - one implementation, not two - and the worker's last output line (a C++ abort
message) reaches the row, which Ray's own process would keep in its log files. Ray's own
`ray.cancel(force=True)` is the backstop: for Ctrl-C, and for a task that outlives its group's whole
allowance (its supervisor is stuck, or its node stopped answering).

Tasks are streaming generators: the task yields where it runs, progress lines and each row as soon as
it is final, so rows reach the run file as cases finish anywhere on the cluster. A task whose process
or node dies surfaces as a Ray error; its group's cases without a row become `crashed` (`oom` when Ray's
memory monitor killed it), and `--resume` measures them again.

Where a row ran is its `placement` (node, GPU name and index, CUDA_VISIBLE_DEVICES); the run file's env
lists every node's fingerprint under `nodes`. The cluster: `--address` or RAY_ADDRESS, else Ray's own
discovery (a cluster started with `ray start` on this machine) or a local one, started here and stopped
at the end. Environment variables named RESBENCH_* are passed on to every task (RESBENCH_WORKER_MEMORY_MB
caps the measuring processes on the nodes too), and this process's sys.path is appended to the tasks'
(python:module:callable models import where the same paths exist: a shared file system)."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from resbench.errors import UsageError, describe, message_line
from resbench.executors.base import Executor, RowSink, Unit
from resbench.executors.isolated import STARTUP_TIMEOUT_S
from resbench.results import Placement, ResultRow

WAIT_POLL_S = 1.0          # how often the watchdog looks at running tasks
PROGRESS_EVERY_S = 0.5     # a task sends at most two progress lines a second
PROBE_TIMEOUT_S = 300.0    # every node must have answered the fingerprint probe by then (imports torch)
DRIVER_ENV_KEYS = ("resbench", "git_sha", "git_dirty", "created")   # of the run, not of a node
FORWARDED_ENV_PREFIX = "RESBENCH_"
WORKER_NICENESS = "RAY_worker_niceness"   # Ray's setting for its workers' nice value (default 15)


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("executor 'ray' needs the package ray; install it with `pip install 'resbench[ray]'`"
                         ) from None
    return ray


@dataclass
class _Flight:
    """A unit whose task was submitted: what it has sent so far."""

    unit: Unit
    rows: dict[int, ResultRow] = field(default_factory=dict)
    placement: Placement | None = None
    started: float | None = None           # monotonic time the task began on its node

    @property
    def where(self) -> str:
        if self.placement is None:
            return "on Ray"
        gpu = f" GPU {self.placement.gpu_index}" if self.placement.gpu_index is not None else ""
        return f"{self.placement.node}{gpu}"


class RayExecutor(Executor):
    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, *, gpus_per_task: float | None = None,
                 cpus_per_task: float | None = None):
        """`gpus_per_task` / `cpus_per_task` override the defaults (1 GPU and 1 CPU on a GPU suite; no GPU
        and a whole node's CPUs on a CPU suite); the tests schedule CPU cases on logical GPUs with them."""
        _ray()  # without the extra, fail at once
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.gpus_per_task, self.cpus_per_task = gpus_per_task, cpus_per_task
        self._connected_here = False
        self._probes: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------------------- the cluster

    def __enter__(self) -> RayExecutor:
        ray = _ray()
        if ray.is_initialized():  # the caller connected already (a notebook, the tests): leave it to them
            return self
        # Ray runs its workers at nice 15: next to any normal-priority process they get a few % of a core
        # (two busy processes on 2 cores held a 30 s run past 420 s), and a measurement at nice 15 is
        # one of the machine's leftovers. A local cluster started by the ray.init below reads this.
        os.environ.setdefault(WORKER_NICENESS, "0")
        forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                   "log_to_driver": True}
        if forwarded:
            options["runtime_env"] = {"env_vars": forwarded}
        try:
            ray.init(address=self.address, **options)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's words say which
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray cluster"
            raise UsageError(f"cannot connect to {where}: {message_line(exc)} (--address or RAY_ADDRESS)"
                             ) from None
        self._connected_here = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._connected_here:
            _ray().shutdown()  # a local cluster started here stops; a remote one only loses this driver
            self._connected_here = False

    def _nodes(self) -> list[dict[str, Any]]:
        return [n for n in _ray().nodes() if n.get("Alive")]

    def resolve_device(self, choice: str) -> Literal["cuda", "cpu"]:
        gpus = _ray().cluster_resources().get("GPU", 0)
        if choice == "auto":
            return "cuda" if gpus else "cpu"
        if choice == "cuda" and not gpus:
            raise UsageError(f"device 'cuda' requested but the Ray cluster ({self._describe_cluster()}) has no "
                             f"GPU resources; use --device cpu or add GPU nodes")
        return choice  # type: ignore[return-value]

    def _describe_cluster(self) -> str:
        nodes = self._nodes()
        return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, " + ", ".join(
            f"{k} {v:g}" for k, v in sorted(_ray().cluster_resources().items()) if k in ("CPU", "GPU"))

    def _probe(self, device: str) -> list[dict[str, Any]]:
        """Each node that can measure `device`: its fingerprint and device memory (one task per node)."""
        if device in self._probes:
            return self._probes[device]
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in self._nodes() if device != "cuda" or n["Resources"].get("GPU", 0) > 0]
        # num_gpus=0: the probe sees every GPU of its node (Ray sets no CUDA_VISIBLE_DEVICES), and its
        # process exits after it (max_calls=1), so its CUDA context holds no GPU memory during the run.
        task = ray.remote(max_calls=1)(_probe_node)
        refs = [task.options(num_cpus=0, num_gpus=0, max_retries=0,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(device) for n in nodes]
        try:
            probes = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        except Exception as exc:
            raise UsageError(f"the Ray cluster's nodes did not describe themselves within {PROBE_TIMEOUT_S:g} s "
                             f"({message_line(exc)}); is resbench installed on every node?") from None
        self._probes[device] = sorted(probes, key=lambda p: (p["node"], p["node_ip"]))
        return self._probes[device]

    def environment(self, device: str) -> dict[str, Any]:
        """This machine's fingerprint for the run's provenance (resbench, git, time); every other key from
        the nodes: their common value, or their distinct values joined by ' | ' where they differ (see
        `nodes` for each); plus `nodes`, every node's own fingerprint."""
        from resbench.environment import fingerprint

        env = fingerprint(device)
        nodes = self._node_fingerprints(device)
        keys = {k for node in nodes for k in node} - {"node", "node_ip", "node_id", *DRIVER_ENV_KEYS}
        for key in sorted(keys):
            values = {repr(node.get(key)): node.get(key) for node in nodes}
            env[key] = next(iter(values.values())) if len(values) == 1 else " | ".join(
                sorted(str(v) for v in values.values()))
        env.update(executor="ray", ray=_ray().__version__, nodes=nodes)
        return env

    def extend_environment(self, env: dict[str, Any], device: str) -> None:
        """A resumed run may measure on other nodes (or a restarted cluster, whose node ids are new):
        `nodes` lists every node that measured in any session of the run."""
        listed = {node.get("node_id") for node in env.get("nodes", [])}
        fresh = [node for node in self._node_fingerprints(device) if node["node_id"] not in listed]
        env["nodes"] = [*env.get("nodes", []), *fresh]

    def _node_fingerprints(self, device: str) -> list[dict[str, Any]]:
        """Every node's own fingerprint, named by its node, address and Ray node id (the env's `nodes`)."""
        return [{"node": p["node"], "node_ip": p["node_ip"], "node_id": p["node_id"], **p["fingerprint"]}
                for p in self._probe(device)]

    def device_memory_bytes(self, device: str) -> int | None:
        sizes = [p["memory_bytes"] for p in self._probe(device) if p["memory_bytes"]]
        return min(sizes) if sizes else None

    def _task_resources(self, device: str) -> dict[str, float]:
        gpus = self.gpus_per_task if self.gpus_per_task is not None else (1 if device == "cuda" else 0)
        cpus = self.cpus_per_task
        if cpus is None:
            # On a CPU suite a task takes a whole node's cores (the smallest node's count), as a GPU task
            # takes a whole GPU: two measurements sharing cores would each measure the other's load.
            cpus = 1 if gpus else min(n["Resources"].get("CPU", 1) for n in self._nodes())
        return {"num_gpus": gpus, "num_cpus": cpus}

    # ------------------------------------------------------------------------------- running units

    def run(self, units: Sequence[Unit], sink: RowSink) -> None:
        if not units:
            return
        ray = _ray()
        resources = self._task_resources(units[0].cases[0].device)
        task = ray.remote(max_calls=1)(measure_group_task).options(num_returns="streaming", max_retries=0,
                                                                   **resources)
        sys_path = [p or os.getcwd() for p in sys.path]
        flights: dict[Any, _Flight] = {}
        try:
            for unit in units:
                cost = dataclasses.asdict(unit.cost) if unit.cost is not None else None
                generator = task.remote([c.model_dump(mode="json") for c in unit.cases], cost, sys_path)
                flights[generator] = _Flight(unit)
            while flights:
                ready, _ = ray.wait(list(flights), num_returns=1, timeout=WAIT_POLL_S)
                for generator in ready:
                    self._take(generator, flights, sink)
                self._watch(flights, sink)
        finally:
            for generator in flights:  # Ctrl-C (or an error here): nothing keeps measuring for nobody
                ray.cancel(generator, force=True)

    def _take(self, generator: Any, flights: dict[Any, _Flight], sink: RowSink) -> None:
        """Take the next item a task yielded (or its end) and pass it on."""
        ray = _ray()
        flight = flights[generator]
        try:
            item = ray.get(next(generator))
        except StopIteration:
            self._end(flights, generator, sink, "crashed", "crashed: the Ray task ended without a row for it")
            return
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.OutOfMemoryError):   # Ray's memory monitor killed the task
                status = "oom"
            elif isinstance(exc, ray.exceptions.RayTaskError):     # the task's own code raised: say what
                status = "failed"
            else:                                                  # its process or its node died
                status = "crashed"
            self._end(flights, generator, sink, status,
                      f"{status}: the Ray task on {flight.where} ended: {type(exc).__name__}: {_ray_reason(exc)}")
            return
        kind = item[0]
        if kind == "placement":  # the task began on its node
            flight.placement, flight.started = Placement.model_validate(item[1]), time.monotonic()
            sink.unit_starting(flight.unit)  # (no wait: cli refuses --wait-idle with ray, it watches this machine)
        elif kind == "progress":
            sink.progress(f"{flight.unit.label}[{flight.where}] {item[1]}")
        elif kind == "row":
            row = ResultRow.model_validate(item[2])
            row.placement = flight.placement
            flight.rows[item[1]] = row
            sink.row(flight.unit, item[1], row)
        elif kind == "done":
            self._end(flights, generator, sink, "crashed", "crashed: the Ray task finished without a row for it")

    def _end(self, flights: dict[Any, _Flight], generator: Any, sink: RowSink, status: str, reason: str) -> None:
        """The unit's task is over: every case without a row gets (status, reason); the unit is done."""
        from resbench.measure import base_row

        flight = flights.pop(generator)
        for index, case in enumerate(flight.unit.cases):
            if index not in flight.rows:
                row = base_row(case, flight.unit.cost, status, reason, placement=flight.placement)
                flight.rows[index] = row
                sink.row(flight.unit, index, row)
        sink.unit_done(flight.unit, [flight.rows[i] for i in range(len(flight.unit.cases))])

    def _watch(self, flights: dict[Any, _Flight], sink: RowSink) -> None:
        """Backstop: a task past its group's whole allowance is cancelled (force: its process is killed)."""
        now = time.monotonic()
        for generator, flight in list(flights.items()):
            allowance = group_allowance_s(flight.unit)
            if flight.started is not None and now - flight.started > allowance:
                _ray().cancel(generator, force=True)
                self._end(flights, generator, sink, "timeout",
                          f"timed out: the Ray task on {flight.where} ran past its group's allowance of "
                          f"{allowance:g} s and was cancelled")


def group_allowance_s(unit: Unit) -> float:
    """The longest a sound supervisor can take for a unit: every case crashing in turn costs a worker
    start-up and a full case allowance each, plus the group-wide stages."""
    step = max(STARTUP_TIMEOUT_S, unit.cases[0].timing.case_timeout_s)
    return (2 * len(unit.cases) + 3) * step


def _ray_reason(exc: BaseException) -> str:
    """The line of a Ray error that says what happened (its first is often a header)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        return message_line(cause)
    return lines[0][:300] if lines else type(exc).__name__


# ------------------------------------------------------------------------------------- on the nodes


def placement_here(device: str) -> dict[str, Any]:
    """Where this process runs: node, Ray node id, and the GPU Ray gave it (CUDA_VISIBLE_DEVICES)."""
    import ray

    from resbench.environment import cpu_name

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0].strip() if visible else ""
    gpu_index = int(first) if first.isdigit() else None
    name = cpu_name()
    if device == "cuda":
        name = _gpu_name(first) or "unknown GPU"
    return {"node": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(), "device_name": name, "gpu_index": gpu_index,
            "cuda_visible_devices": visible, "niceness": os.getpriority(os.PRIO_PROCESS, 0)}


def _gpu_name(visible_entry: str) -> str | None:
    """The GPU's name from NVML (no CUDA context in this process: it would hold GPU memory all group long)."""
    try:
        from resbench.telemetry import _nvml

        nv = _nvml()
        if visible_entry.isdigit():
            handle = nv.nvmlDeviceGetHandleByIndex(int(visible_entry))
        else:
            handle = nv.nvmlDeviceGetHandleByUUID(visible_entry)
        name = nv.nvmlDeviceGetName(handle)
        return name.decode() if isinstance(name, bytes) else name
    except Exception:  # no NVML, or an entry it does not know: the row says "unknown GPU"
        return None


def _probe_node(device: str) -> dict[str, Any]:
    import torch

    from resbench import threads
    from resbench.environment import device_memory_bytes, fingerprint

    # The fingerprint's torch_threads as the measuring processes' default thread policy sets it (Ray's
    # OMP_NUM_THREADS for this num_cpus=0 task says nothing about them); each row records its own.
    torch.set_num_threads(threads.default_threads())

    here = placement_here(device)
    try:
        memory = device_memory_bytes(device)
    except Exception:  # a GPU node whose torch sees no GPU: the nodes' check is the workers' to fail
        memory = None
    return {"node": here["node"], "node_ip": here["node_ip"], "node_id": here["node_id"],
            "fingerprint": fingerprint(device), "memory_bytes": memory}


def measure_group_task(cases: list[dict[str, Any]], cost: dict[str, Any] | None,
                       sys_path: list[str]) -> Iterator[tuple]:
    """The Ray task (a streaming generator): run the group through isolated.py on this node, yielding
    ("placement", {...}), ("progress", line)..., ("row", index, row)... and ("done",)."""
    for entry in sys_path:  # python:module:callable models import here as on the driver (same paths)
        if entry not in sys.path and os.path.exists(entry):
            sys.path.append(entry)
    from resbench.executors.isolated import run_group_isolated
    from resbench.models import ModelCost
    from resbench.suite import Case

    parsed = [Case.model_validate(c) for c in cases]
    yield ("placement", placement_here(parsed[0].device))
    items: queue.Queue[tuple] = queue.Queue()
    last_progress = [0.0]

    def progress(line: str) -> None:
        now = time.monotonic()
        if now - last_progress[0] >= PROGRESS_EVERY_S:
            last_progress[0] = now
            items.put(("progress", line))

    def work() -> None:
        try:
            run_group_isolated(parsed, progress, cost=ModelCost(**cost) if cost else None,
                               on_row=lambda index, row: items.put(("row", index, row.model_dump(mode="json"))))
            items.put(("done",))
        except BaseException as exc:  # reported to the driver as this task's error
            items.put(("error", describe(exc)))

    # A thread, because the rows come through callbacks while the generator must yield them. The
    # measurement process it starts dies with this thread (PR_SET_PDEATHSIG), hence with the task.
    threading.Thread(target=work, name="resbench-group", daemon=True).start()
    while True:
        item = items.get()
        if item[0] == "error":
            raise RuntimeError(item[1])
        yield item
        if item[0] == "done":
            return
