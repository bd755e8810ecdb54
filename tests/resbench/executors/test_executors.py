"""Choosing an executor: names, --address, and the ray extra's absence, each a one-line usage error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from resbench.errors import UsageError
from resbench.executors import get_executor

sys.path.insert(0, str(Path(__file__).parent.parent))  # faults.py: run_main
import faults  # noqa: E402


def test_an_unknown_executor_lists_the_known_ones():
    with pytest.raises(UsageError, match=r"executor 'slurm' is not known; one of: workers, in-process, ray"):
        get_executor("slurm")


def test_address_is_for_ray_only():
    with pytest.raises(UsageError, match=r"--address 'head:6379' is for --executor ray, not 'workers'"):
        get_executor("workers", address="head:6379")


def test_ray_without_its_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is absent
    with pytest.raises(UsageError, match=r"executor 'ray' needs the package ray; install it with "
                                         r"`pip install 'resbench\[ray\]'`"):
        get_executor("ray", address="head:6379")


def test_wait_idle_is_refused_with_ray(monkeypatch, capsys):
    """--wait-idle watches this machine; on a cluster the groups run elsewhere."""
    code, lines = faults.run_main(monkeypatch, capsys, "run", "suite.yaml", "--executor", "ray", "--wait-idle", "5")
    assert code == 2
    assert lines == [
        "error: --wait-idle watches this machine; with --executor ray the groups run on the cluster's nodes: "
        "leave it out"]
