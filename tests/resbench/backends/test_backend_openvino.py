"""openvino backend: options, availability and per-case support, real compiled models on the CPU (fp32 at
fp32 with the precision read back, the THROUGHPUT split over several requests), the thread policy, and
the bf16 trap: unpinned, OpenVINO runs an "fp32" model in bf16 on CPUs with bf16 units, which resbench
refuses and the parity verdict would fail."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import torch

from resbench.backends import get_backend
from resbench.backends import openvino as openvino_backend
from resbench.backends.base import PrepareError
from resbench.backends.onnx_export import export_onnx
from resbench.backends.openvino import OpenVinoOptions, performance_hint, requests_per_call

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install 'resbench[openvino]')")
CPU_CAPABILITIES = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_hint_is_latency_at_batch_one_and_throughput_above():
    assert performance_hint(OpenVinoOptions(), 1) == "LATENCY"
    assert performance_hint(OpenVinoOptions(), 8) == "THROUGHPUT"
    assert performance_hint(OpenVinoOptions(performance_hint="latency"), 8) == "LATENCY"


@pytest.mark.parametrize("batch, optimal, expected", [(8, 2, 2), (8, 4, 4), (6, 4, 3), (7, 2, 1), (1, 4, 1),
                                                      (3, 8, 3)])
def test_requests_per_call_split_the_batch_evenly(batch, optimal, expected):
    assert requests_per_call(batch, optimal) == expected


def test_available_on_cpu_not_on_cuda():
    backend = get_backend("openvino")
    assert backend.available(torch.device("cpu")) == (True, "")
    ok, reason = backend.available(torch.device("cuda"))
    assert not ok and "--device cpu" in reason


def test_tf32_and_a_missing_device_are_skipped_before_any_work(make_case):
    backend = get_backend("openvino")
    ok, reason = backend.supports(make_case("openvino", "tf32"))
    assert not ok and "no tf32 mode" in reason and "fp32, bf16, fp16, int8" in reason
    if "GPU" not in ov.Core().available_devices:
        on_gpu = make_case("openvino", "fp32").model_copy(update={"options": {"device": "GPU"}})
        ok, reason = backend.supports(on_gpu)
        assert not ok and "device GPU is not present here (devices: CPU" in reason


def test_fp32_row_runs_at_fp32_and_passes_parity(make_case, tiny_model, example, check_parity, torch_threads):
    case = make_case("openvino", "fp32", batch_size=1)
    backend = get_backend("openvino")
    with torch_threads(1):
        fn = backend.prepare(tiny_model, example(case), case)
    numerics, artifacts = backend.numerics(case), backend.artifacts()
    assert numerics["ov_inference_precision_hint"] == "f32" and numerics["ov_execution_precision"] == "f32"
    assert numerics["ov_performance_hint"] == "LATENCY" and numerics["ov_requests_per_call"] == 1
    assert numerics["ov_inference_num_threads"] == 1
    assert "f32" in artifacts["runtime_precisions"] and "bf16" not in artifacts["runtime_precisions"]

    verdict = check_parity(fn, case)
    assert verdict.passed, verdict.rule
    assert verdict.rel_l2 < 1e-5, verdict.rule  # fp32, not bf16 (whose rel-L2 here is ~1e-2)


def test_throughput_splits_the_batch_over_requests_and_keeps_the_order(make_case, tiny_model, example,
                                                                         check_parity):
    case = make_case("openvino", "fp32", batch_size=4)
    backend = get_backend("openvino")
    fn = backend.prepare(tiny_model, example(case), case)
    numerics = backend.numerics(case)
    assert numerics["ov_performance_hint"] == "THROUGHPUT"
    assert numerics["ov_requests_per_call"] == requests_per_call(4, numerics["ov_num_streams"])
    verdict = check_parity(fn, case)  # images in 4 different positions: a shuffled split would fail
    assert verdict.passed and verdict.top1_agree == 1.0, verdict.rule


@pytest.mark.skipif("BF16" not in CPU_CAPABILITIES, reason="this CPU has no bf16 units: OpenVINO's default is f32")
def test_the_bf16_trap_unpinned_fp32_runs_in_bf16_and_fails_fp32_parity(make_case, tiny_model, example,
                                                                          check_parity, monkeypatch):
    case = make_case("openvino", "fp32", batch_size=2)
    # what OpenVINO does by default with the same export: bf16, and fp32 parity fails
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(copy.deepcopy(tiny_model), example(case), Path(tmp) / "m.onnx")
        core = ov.Core()
        default = core.compile_model(core.read_model(str(exported.path)), "CPU")
    assert default.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"

    def unpinned(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(default.create_infer_request().infer({0: x.contiguous().numpy()})[0].copy())

    trapped = check_parity(unpinned, case)
    assert not trapped.passed and trapped.rel_l2 > 1e-3, trapped.rule

    # a wrong pin in resbench's table (bf16 for fp32) would compile bf16 ops: prepare refuses to time the row
    monkeypatch.setitem(openvino_backend.PRECISION_HINTS, "fp32", "bf16")
    with pytest.raises(PrepareError, match=r"would run ops of the fp32 row in lower precision: \{'bf16': \d+\}"):
        get_backend("openvino").prepare(tiny_model, example(case), case)


def test_a_compiled_precision_other_than_the_pin_is_refused():
    with pytest.raises(PrepareError, match="compiled the fp32 row at inference precision bf16, not the requested f32"):
        openvino_backend._check_precision("fp32", "f32", "bf16", {"f32": 10, "bf16": 8})


def test_int8_row_without_integer_ops_is_refused():
    with pytest.raises(PrepareError, match="runs no op of the int8 row in int8"):
        openvino_backend._check_precision("int8", "f32", "f32", {"f32": 30, "i32": 6})
