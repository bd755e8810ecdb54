"""aot-inductor backend: options, availability, a real compile-package-load-run on CPU with parity, and the
failure path of a model torch.export cannot capture."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from resbench.backends import get_backend
from resbench.backends.aot_inductor import AotInductorOptions
from resbench.backends.base import PrepareError


def test_available_here():
    assert get_backend("aot-inductor").available(torch.device("cpu")) == (True, "")


@pytest.mark.parametrize("bad, message", [
    ({"cuda_graphs": True}, "not captured in a CUDA graph"),
    ({"max_autotune": "fast"}, "valid boolean"),
    ({"dynamic": True}, "Extra inputs are not permitted"),
])
def test_bad_options_are_rejected(bad, message):
    with pytest.raises(ValidationError) as info:
        AotInductorOptions.model_validate(bad)
    assert message in str(info.value)


def test_graph_timing_mode_on_cuda_is_skipped(case):
    ok, reason = get_backend("aot-inductor").supports(case("aot-inductor", device="cuda", timing_mode="graph"))
    assert not ok and "capture-safe" in reason
    assert get_backend("aot-inductor").supports(case("aot-inductor")) == (True, "")


def test_numerics_record_max_autotune(case):
    assert get_backend("aot-inductor").numerics(case("aot-inductor", max_autotune=True)) == {
        "inductor_max_autotune": True}


@pytest.mark.slow
def test_compiles_packages_loads_and_runs_with_parity(tiny_model, case, example, check_parity):
    c = case("aot-inductor")
    backend = get_backend("aot-inductor")
    x = example(c)
    with torch.no_grad():
        forward = backend.prepare(tiny_model, x, c)
        out = forward(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10) and out.dtype == torch.float32
    verdict = check_parity(forward, c)
    assert verdict.passed, verdict.rule
    artifacts = backend.artifacts()
    assert artifacts["package_bytes"] > 0
    assert artifacts["compile_s"] > 0 and artifacts["export_s"] > 0 and artifacts["load_s"] >= 0
    assert artifacts["inductor_configs"] == {}


def test_unexportable_model_fails_with_the_exporters_message(unexportable_model, case, example):
    c = case("aot-inductor")
    with pytest.raises(PrepareError) as info:
        get_backend("aot-inductor").prepare(unexportable_model, example(c), c)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("torch.export failed: GuardOnDataDependentSymNode: Could not guard on "
                                 "data-dependent expression"), first_line
