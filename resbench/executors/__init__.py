"""Ways to run groups of cases, side by side behind one interface (base.py).

- `workers` (default): each group in a fresh worker process (isolated.py + worker.py), so a crash, a hard
  OOM or a hang becomes a `crashed` / `oom` / `timeout` row and the run goes on.
- `in-process`: each group in the calling process (debugging: a crash or hang ends the run).
- `ray` (ray_cluster.py, extra `resbench[ray]`): each group a Ray task on a cluster, one GPU per task,
  running the same isolated worker on its node.

model_check.py checks models with code of their own (`python:` ...) in a checker process before a run.

Every executor streams rows back to the runner, which alone writes the run file."""

from resbench.executors.base import EXECUTOR_NAMES, Executor, RowSink, Unit, get_executor

__all__ = ["EXECUTOR_NAMES", "Executor", "RowSink", "Unit", "get_executor"]
