"""onnxruntime backend: options, availability, per-case support, and real sessions on CPU (export ->
onnx.checker -> InferenceSession -> parity), plus the failure path of a model no exporter can capture."""

from __future__ import annotations

import copy
import platform

import onnxruntime as ort
import psutil
import pytest
import torch
from pydantic import ValidationError

from resbench.backends import get_backend
from resbench.backends.base import PrepareError
from resbench.backends.onnxruntime import OnnxRuntimeOptions, requested_providers
from resbench.errors import SuiteError
from resbench.suite import parse_suite

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
CPU_ONLY_BUILD = not GPU_PROVIDERS & set(ort.get_available_providers())


def suite_with(backend_entry: str) -> str:
    return f"name: t\nmodels: [resnet18]\nbackends:\n  - {backend_entry}\nbatch_sizes: [1]\ndtypes: [fp32]\n"


# --------------------------------------------------------------------------------------------- options


def test_default_options_are_all_optimizations_and_preferred_providers():
    options = OnnxRuntimeOptions()
    assert options.graph_optimization_level == "all"
    assert options.providers is None
    assert requested_providers(options, "cuda") == ("tensorrt", "cuda", "cpu")
    assert requested_providers(options, "cpu") == ("cpu",)


@pytest.mark.parametrize("bad, message", [
    ({"graph_optimization_level": "max"}, "'disable', 'basic', 'extended' or 'all'"),
    ({"providers": []}, "providers must name at least one of: tensorrt, cuda, cpu"),
    ({"providers": ["cuda", "cuda"]}, "lists a provider twice"),
    ({"providers": ["rocm"]}, "'tensorrt', 'cuda' or 'cpu'"),
    ({"cuda_graphs": True}, "cannot be captured in a CUDA graph"),
    ({"cuda_graphs": "auto"}, "cannot be captured in a CUDA graph"),
    ({"intra_op_threads": 2}, "Extra inputs are not permitted"),
])
def test_bad_options_are_rejected_with_a_clear_message(bad, message):
    with pytest.raises(ValidationError) as info:
        OnnxRuntimeOptions.model_validate(bad)
    assert message in str(info.value)


def test_suite_loader_names_the_key_of_a_bad_option():
    with pytest.raises(SuiteError) as info:
        parse_suite(suite_with("{name: onnxruntime, cuda_graphs: true}"), "s.yaml")
    assert "backends[0].cuda_graphs" in str(info.value)
    assert "cannot be captured" in str(info.value)


def test_user_provider_order_is_kept_with_cpu_last_on_cuda():
    options = OnnxRuntimeOptions(providers=["cpu", "cuda"])
    assert requested_providers(options, "cuda") == ("cuda", "cpu")
    assert requested_providers(options, "cpu") == ("cpu",)


# ---------------------------------------------------------------------------------- availability, support


def test_available_on_cpu_here():
    assert get_backend("onnxruntime").available(torch.device("cpu")) == (True, "")


@pytest.mark.skipif(not CPU_ONLY_BUILD, reason="this onnxruntime offers a GPU provider")
def test_cpu_only_build_is_unavailable_for_cuda_and_says_how_to_fix_it():
    ok, reason = get_backend("onnxruntime").available(torch.device("cuda"))
    assert not ok
    assert "CPU-only build" in reason and "pip install onnxruntime-gpu" in reason


def test_bf16_is_skipped_before_any_work(case):
    ok, reason = get_backend("onnxruntime").supports(case("onnxruntime", "bf16"))
    assert not ok
    assert "bfloat16" in reason and "run fp16 or fp32" in reason


@pytest.mark.parametrize("dtype", ["fp32", "tf32", "fp16"])
def test_other_dtypes_are_supported_on_cpu(case, dtype):
    assert get_backend("onnxruntime").supports(case("onnxruntime", dtype)) == (True, "")


def test_gpu_only_providers_on_a_cpu_case_are_skipped(case):
    ok, reason = get_backend("onnxruntime").supports(case("onnxruntime", providers=["cuda"]))
    assert not ok and "include no provider for a cpu case" in reason


def test_cpu_provider_alone_on_a_cuda_case_is_skipped(case):
    ok, reason = get_backend("onnxruntime").supports(case("onnxruntime", device="cuda", providers=["cpu"]))
    assert not ok and "host<->device copies" in reason


def test_graph_timing_mode_on_cuda_is_skipped(case):
    ok, reason = get_backend("onnxruntime").supports(case("onnxruntime", device="cuda", timing_mode="graph"))
    assert not ok and "synchronizes its stream" in reason


def test_numerics_record_the_optimization_level_and_providers(case):
    numerics = get_backend("onnxruntime").numerics(case("onnxruntime", graph_optimization_level="basic"))
    assert numerics == {"ort_graph_optimization_level": "ORT_ENABLE_BASIC",
                        "ort_providers_requested": ["CPUExecutionProvider"]}
    on_cuda = get_backend("onnxruntime").numerics(case("onnxruntime", "tf32", device="cuda"))
    assert on_cuda["ort_cuda_use_tf32"] is True
    assert on_cuda["ort_providers_requested"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider"]


# ------------------------------------------------------------------------------------- real sessions (CPU)


@pytest.mark.parametrize("dtype, level", [("fp32", "all"), ("fp32", "disable"), ("fp16", "all")])
def test_session_runs_end_to_end_with_parity(tiny_model, case, example, check_parity, dtype, level):
    c = case("onnxruntime", dtype, graph_optimization_level=level)
    backend = get_backend("onnxruntime")
    x = example(c)
    with torch.no_grad():
        forward = backend.prepare(tiny_model, x, c)
        out = forward(x)
    assert isinstance(out, torch.Tensor) and out.device == x.device
    assert out.shape == (2, 10) and out.dtype == x.dtype
    verdict = check_parity(forward, c)
    assert verdict.passed, verdict.rule

    artifacts = backend.artifacts()
    assert artifacts["provider"] == "CPUExecutionProvider"
    assert artifacts["graph_optimization_level"] == {"all": "ORT_ENABLE_ALL", "disable": "ORT_DISABLE_ALL"}[level]
    assert artifacts["io_binding"] is False
    assert artifacts["onnx_bytes"] > 0 and artifacts["export_s"] > 0 and artifacts["session_s"] > 0
    assert artifacts["onnx_opset"] >= 18
    fp16_note = "note" in artifacts
    assert fp16_note == (dtype == "fp16" and platform.machine().lower() in ("x86_64", "amd64"))


def test_session_accepts_other_batch_sizes(tiny_model, case, example):
    """The export's batch axis is dynamic: one graph serves every batch size."""
    c = case("onnxruntime", batch_size=1)
    with torch.no_grad():
        forward = get_backend("onnxruntime").prepare(tiny_model, example(c), c)
        reference = tiny_model(example(case("onnxruntime", batch_size=3)))
        out = forward(example(case("onnxruntime", batch_size=3)))
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_unexportable_model_fails_with_the_exporters_message(unexportable_model, case, example):
    c = case("onnxruntime")
    backend = get_backend("onnxruntime")
    with pytest.raises(PrepareError) as info:
        backend.prepare(unexportable_model, example(c), c)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("ONNX export failed: GuardOnDataDependentSymNode: Could not guard on "
                                 "data-dependent expression"), first_line
    assert "\x1b[" not in first_line  # no terminal colour codes in a row's reason
    assert backend.artifacts() == {}


def test_session_pool_follows_the_runs_thread_policy(tiny_model, case, example):
    """ORT's intra-op pool takes torch.get_num_threads() (threads.py), not every core: a session made under
    a policy of N threads starts N - 1 pool threads (the caller's thread is the Nth)."""
    c = case("onnxruntime")
    backend = get_backend("onnxruntime")
    before_policy = torch.get_num_threads()
    started = {}
    try:
        with torch.no_grad():
            backend.prepare(copy.deepcopy(tiny_model), example(c), c)   # exporter and ORT loaded once
            for threads in (1, 3):
                torch.set_num_threads(threads)
                count = psutil.Process().num_threads()
                session_forward = backend.prepare(copy.deepcopy(tiny_model), example(c), c)
                started[threads] = psutil.Process().num_threads() - count
                assert backend.artifacts()["intra_op_num_threads"] == threads
                del session_forward
    finally:
        torch.set_num_threads(before_policy)
    assert started[3] - started[1] == 2, started
