"""The run file's environment records the version of every runtime resbench can measure with."""

import re
from importlib import metadata
from pathlib import Path

import pytest

from resbench.environment import OPTIONAL_PACKAGES, fingerprint

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
TEST_TOOLS = {"pytest", "pytest-benchmark", "ruff"}   # the `test` extra's tools measure nothing


def _distribution(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


def test_every_optional_runtime_is_recorded_in_the_environment():
    # `resbench merge` refuses runs of different optional packages and `compare` warns on them, so a runtime
    # installed by an extra (openvino, torchao, LoadGen, ray...) whose version the run file leaves out
    # would merge shards measured with two different versions of it without a word.
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    runtimes = {_distribution(req) for reqs in extras.values() for req in reqs} - TEST_TOOLS
    assert runtimes - set(OPTIONAL_PACKAGES) == set()


def test_an_installed_extra_runtime_is_in_the_fingerprint():
    pytest.importorskip("openvino", reason="openvino not installed (pip install 'resbench[openvino]')")
    assert fingerprint("cpu")["packages"]["openvino"] == metadata.version("openvino")
