"""The `cuda_graphs: true | false | auto` option of eager and compile: validation (impossible
combinations rejected with the reason), the CPU behaviour, and real capture on a GPU where there is one."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from resbench.backends import get_backend
from resbench.backends.compile import CompileOptions
from resbench.backends.eager import EagerOptions
from resbench.errors import SuiteError
from resbench.suite import parse_suite

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_eager_accepts_the_three_settings(value):
    assert EagerOptions(cuda_graphs=value).cuda_graphs == value


def test_eager_rejects_anything_else():
    with pytest.raises(ValidationError) as info:
        EagerOptions.model_validate({"cuda_graphs": "always"})
    assert "cuda_graphs" in str(info.value)


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
@pytest.mark.parametrize("value", [True, "auto"])
def test_compile_modes_with_their_own_cuda_graphs_reject_a_second_capture(mode, value):
    with pytest.raises(ValidationError) as info:
        CompileOptions.model_validate({"mode": mode, "cuda_graphs": value})
    assert f"mode {mode} already replays CUDA graphs" in str(info.value)


@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs"])
def test_compile_modes_without_cuda_graphs_can_be_captured(mode):
    assert CompileOptions(mode=mode, cuda_graphs=True).cuda_graphs is True


def test_suite_loader_reports_the_impossible_combination_at_its_key():
    text = ("name: t\nmodels: [resnet18]\nbackends:\n  - {name: compile, mode: reduce-overhead, cuda_graphs: true}\n"
            "batch_sizes: [1]\ndtypes: [fp32]\n")
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "s.yaml")
    assert "backends[0].cuda_graphs" in str(info.value)
    assert "already replays CUDA graphs" in str(info.value)


@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_true_on_a_cpu_case_is_a_skip_reason(case, backend):
    ok, reason = get_backend(backend).supports(case(backend, cuda_graphs=True))
    assert not ok and "needs a CUDA device" in reason
    assert get_backend(backend).supports(case(backend, cuda_graphs="auto")) == (True, "")


def test_eager_auto_on_cpu_runs_uncaptured(tiny_model, case, example, check_parity):
    c = case("eager", cuda_graphs="auto")
    backend = get_backend("eager")
    with torch.no_grad():
        forward = backend.prepare(tiny_model, example(c), c)
    assert forward is tiny_model
    assert backend.artifacts() == {"cuda_graph": False}
    verdict = check_parity(forward, c)
    assert verdict.passed, verdict.rule


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_eager_capture_replays_the_same_logits(tiny_model, case, example, check_parity, dtype):
    c = case("eager", dtype, device="cuda", cuda_graphs=True)
    backend = get_backend("eager")
    x = example(c)
    reference_model = tiny_model.to(device="cuda")
    with torch.no_grad():
        expected = reference_model.to(dtype=x.dtype)(x).clone()
        forward = backend.prepare(reference_model, x, c)
        replayed = forward(x)
    assert hasattr(forward, "graph") and backend.artifacts() == {"cuda_graph": True}
    torch.testing.assert_close(replayed, expected)
    verdict = check_parity(forward, c)  # fresh inputs are copied into the graph's static input
    assert verdict.passed, verdict.rule


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_compile_default_capture_replays(tiny_model, case, example, check_parity):
    c = case("compile", device="cuda", cuda_graphs=True)
    backend = get_backend("compile")
    x = example(c)
    with torch.no_grad():
        forward = backend.prepare(tiny_model.to("cuda"), x, c)
        forward(x)
    assert hasattr(forward, "graph") and backend.artifacts() == {"cuda_graph": True}
    verdict = check_parity(forward, c)
    assert verdict.passed, verdict.rule


def test_graph_timing_mode_and_a_captured_backend_do_not_nest() -> None:
    from resbench.backends.cuda_graphs import graph_supported

    assert graph_supported(True, "cuda", "device") == (True, "")
    assert graph_supported(False, "cuda", "graph") == (True, "")
    for setting in (True, "auto"):
        ok, reason = graph_supported(setting, "cuda", "graph")
        assert not ok and "timing mode 'graph' already captures" in reason
    assert graph_supported("auto", "cpu", "graph") == (True, "")  # nothing is captured on CPU
    ok, reason = graph_supported(True, "cpu", "device")
    assert not ok and "needs a CUDA device" in reason
