"""`--executor ray` for real, on one local Ray cluster for the whole module (2 CPUs and 2 logical GPUs:
Ray schedules GPU tasks and sets CUDA_VISIBLE_DEVICES on a machine without GPUs). The command line
connects to it with --address, as it would to a cluster of GPU nodes. Each group is a Ray task running
the isolated worker, so the rows, statuses and reasons are those of a local run."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from resbench.executors.ray_cluster import RayExecutor
from resbench.results import RunFile
from resbench.runner import run_suite
from resbench.suite import expand, load_suite

sys.path.insert(0, str(Path(__file__).parent.parent))  # faults.py: the fault models (python:faults:NAME) and helpers
import faults  # noqa: E402

if os.environ.get("CI"):
    import ray  # CI installs the test extra, which has ray: there a missing ray fails, never skips
else:
    ray = pytest.importorskip("ray", reason="the ray executor needs pip install 'resbench[ray]'")

CASE_TIMEOUT_S = faults.CASE_TIMEOUT_S
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}  # Ray 2.60's token auth is on by default; a local test cluster needs none
# Ray starts its workers at nice 15: next to any normal-priority load they get a few % of a core, and with two
# busy processes on 2 cores every `--executor ray` run here hung past its 420 s timeout (its tasks import
# torch twice); at nice 0 the same run took 30 s. (A real cluster's nodes run nothing else.)
CLUSTER_ENV = {**NO_AUTH, "RAY_worker_niceness": "0"}


@pytest.fixture(scope="module")
def cluster():
    """The address of a local Ray cluster: 2 CPUs (a CPU suite's task takes both), 2 logical GPUs."""
    previous = {key: os.environ.get(key) for key in CLUSTER_ENV}
    os.environ.update(CLUSTER_ENV)   # the cluster's processes (started by ray.init) read it from here
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ray_run(cluster: str, *args: str | Path, **env: str):
    return faults.resbench("run", *args, "--executor", "ray", "--address", cluster,
                           env=faults.cli_env(**NO_AUTH, **env), timeout=420)


def test_a_suite_on_ray_gives_the_rows_of_a_local_run(cluster, tmp_path):
    """Models whose factory or forward aborts give the same crashed rows on Ray as locally, every other
    case is measured, and the two runs hold exactly the same cases."""
    models = {m: faults.FAULTY_MODELS[m] for m in ("python:faults:abort_on_build", "python:faults:aborting")}
    suite = faults.write_faulty_models_suite(tmp_path / "suite.yaml", models)

    local = faults.resbench("run", suite, "--out", tmp_path / "local.json", env=faults.cli_env(**NO_AUTH))
    on_ray = ray_run(cluster, suite, "--out", tmp_path / "ray.json")

    assert local.returncode == 0, local.stderr[-3000:]
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    local_run, ray_run_file = RunFile.load(tmp_path / "local.json"), RunFile.load(tmp_path / "ray.json")
    faults.assert_faulty_models_rows(ray_run_file, models)
    assert [(r.identity, r.status) for r in ray_run_file.rows] == [(r.identity, r.status) for r in local_run.rows]
    measured = [r for r in ray_run_file.rows if r.status == "ok"]
    assert all(r.placement is not None and r.placement.node == socket.gethostname() for r in measured)
    assert all(r.placement is None for r in local_run.rows)
    nodes = ray_run_file.env["nodes"]
    assert ray_run_file.env["executor"] == "ray" and [n["host"] for n in nodes] == [socket.gethostname()]
    assert nodes[0]["torch"] == local_run.env["torch"]


def test_faults_in_ray_tasks_become_rows_and_the_rest_finish(cluster, tmp_path):
    """Per group, eager and eager[cuda_graphs=auto]. An abort and a hang in the measuring process are
    handled by the isolated worker inside the task (crashed, timeout; the other backend is measured after
    them); a fault that kills the Ray task itself (KILL_PARENT_BATCH) gives its group crashed rows."""
    batches = [1, faults.ABORT_BATCH, faults.SLEEP_BATCH, faults.KILL_PARENT_BATCH]
    suite = faults.write_faulty_suite(tmp_path, batches, CASE_TIMEOUT_S)
    out = tmp_path / "run.json"

    result = ray_run(cluster, suite, "--out", out, RESBENCH_FAULTS_ONCE_DIR=str(tmp_path / "once"),
                     RESBENCH_FAULTS_KILL_PARENT="1")

    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFile.load(out)
    assert [(r.batch_size, r.backend_label) for r in run.rows] == [
        (b, label) for b in batches for label in ("eager", "eager[cuda_graphs=auto]")]
    assert [r.status for r in run.rows] == ["ok", "ok", "crashed", "ok", "timeout", "ok", "crashed", "crashed"], [
        (r.batch_size, r.backend_label, r.status, r.reason) for r in run.rows]
    rows = {(r.batch_size, r.backend_label): r for r in run.rows}
    assert rows[faults.ABORT_BATCH, "eager"].reason == (
        f"crashed during first call of eager: killed by SIGABRT (last output: {faults.ABORT_MESSAGE})")
    assert rows[faults.SLEEP_BATCH, "eager"].reason == (
        f"timed out during first call of eager: over timing.case_timeout_s = {CASE_TIMEOUT_S} s")
    for row in (rows[faults.KILL_PARENT_BATCH, "eager"], rows[faults.KILL_PARENT_BATCH, "eager[cuda_graphs=auto]"]):
        assert row.reason.startswith(f"crashed: the Ray task on {socket.gethostname()} ended: "), row.reason
    assert all(r.placement is not None for r in run.rows)


def test_a_killed_ray_run_resumes(cluster, tmp_path):
    """Ctrl-C keeps the finished cases, cancels the tasks (their processes go), and --resume finishes."""
    suite = faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])
    out = tmp_path / "run.json"
    token = uuid.uuid4().hex
    env = faults.cli_env(**NO_AUTH, RESBENCH_TEST_TOKEN=token)  # RESBENCH_*: reaches the tasks' processes
    proc = faults.start_run(suite, "--out", out, "--executor", "ray", "--address", cluster, env=env)
    stderr = faults.interrupt_after_rows(proc, out, 1, timeout=240, exit_timeout=120).stderr
    assert proc.returncode == 130, stderr[-2000:]
    interrupted = RunFile.load(out)
    assert [(r.batch_size, r.status) for r in interrupted.rows] == [(1, "ok")]
    assert faults.wait_gone(faults.processes_with_token(token), timeout=60) == []

    result = ray_run(cluster, suite, "--resume", out)

    assert result.returncode == 0, result.stderr[-2000:]
    final = RunFile.load(out)
    assert [(r.batch_size, r.status) for r in final.rows] == [(1, "ok"), (2, "ok")]
    assert final.rows[0].samples_ms == interrupted.rows[0].samples_ms  # kept, not measured again
    assert [n["node_id"] for n in final.env["nodes"]] == [n["node_id"] for n in interrupted.env["nodes"]]


def test_gpu_tasks_get_one_gpu_each_and_rows_say_which(cluster, tmp_path):
    """One (logical) GPU per task, as on a GPU suite: Ray gives each task its own CUDA_VISIBLE_DEVICES,
    which the measuring process inherits and the row records."""
    cases = expand(load_suite(faults.write_suite(tmp_path / "suite.yaml", batch_sizes=[1, 2])), "cpu")
    out = tmp_path / "run.json"
    with RayExecutor(gpus_per_task=1) as executor:
        env = executor.environment("cpu")
        run = run_suite(cases, RunFile(env=env, suite={}), out, executor=executor)

    assert [(r.batch_size, r.status) for r in run.rows] == [(1, "ok"), (2, "ok")]
    for row in run.rows:
        placement = row.placement
        assert placement.gpu_index in (0, 1) and placement.cuda_visible_devices == str(placement.gpu_index)
        assert placement.node == socket.gethostname() and placement.device_name == env["device"]
        assert placement.niceness == 0   # the cluster was started with RAY_worker_niceness=0 (Ray's default: 15)
    assert ray.is_initialized()  # a cluster the caller connected to is left to the caller
