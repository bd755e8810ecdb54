"""tensorrt backend. TensorRT cannot be installed on CI machines, so these tests cover everything around
the engine build that runs here: availability and its install hint, option validation, the builder plan
(flags, IO type, static profile, timing-cache path) and the ONNX graph the builder would parse."""

from __future__ import annotations

import importlib.util

import onnx
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError

from resbench.backends import get_backend
from resbench.backends.tensorrt import (
    CALIBRATORS,
    CalibrationFeed,
    TensorRTOptions,
    engine_plan,
    export_for_engine,
    make_calibrator,
)
from resbench.errors import SuiteError
from resbench.suite import parse_suite

TENSORRT_INSTALLED = importlib.util.find_spec("tensorrt") is not None
# Operators of a ResNet export that TensorRT's ONNX parser supports (onnx/onnx-tensorrt, docs/operators.md).
PARSER_SUPPORTED = {"Conv", "BatchNormalization", "Relu", "Add", "MaxPool", "AveragePool", "GlobalAveragePool",
                    "ReduceMean", "Flatten", "Reshape", "Gemm", "MatMul", "Transpose", "Constant", "Identity",
                    "Shape", "Gather", "Unsqueeze", "Concat", "Cast", "Squeeze"}


@pytest.mark.skipif(TENSORRT_INSTALLED, reason="TensorRT is installed here")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_absence_is_a_skip_reason_that_says_how_to_install(device):
    ok, reason = get_backend("tensorrt").available(torch.device(device))
    assert not ok
    assert 'pip install "resbench[tensorrt]"' in reason
    assert ("needs an NVIDIA GPU" in reason) == (device == "cpu")


def test_a_cpu_run_is_never_available():
    ok, reason = get_backend("tensorrt").available(torch.device("cpu"))
    assert not ok and "NVIDIA GPU" in reason


@pytest.mark.parametrize("bad, message", [
    ({"builder_optimization_level": 6}, "less than or equal to 5"),
    ({"builder_optimization_level": -1}, "greater than or equal to 0"),
    ({"workspace_mb": 0}, "greater than or equal to 1"),
    ({"cuda_graphs": "sometimes"}, "cuda_graphs"),
    ({"fp16": True}, "Extra inputs are not permitted"),
])
def test_bad_options_are_rejected(bad, message):
    with pytest.raises(ValidationError) as info:
        TensorRTOptions.model_validate(bad)
    assert message in str(info.value)


def test_suite_loader_names_the_bad_option():
    text = ("name: t\nmodels: [resnet18]\nbackends:\n  - {name: tensorrt, precision: fp8}\n"
            "batch_sizes: [1]\ndtypes: [fp16]\n")
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "s.yaml")
    assert "unknown option 'precision' for backend 'tensorrt'" in str(info.value)
    assert "builder_optimization_level" in str(info.value)  # the allowed ones are listed


@pytest.mark.parametrize("dtype, flags, io", [
    ("fp32", (), "FLOAT"), ("tf32", ("TF32",), "FLOAT"), ("fp16", ("FP16",), "HALF"), ("bf16", ("BF16",), "BF16"),
    ("int8", ("INT8",), "FLOAT"),
])
def test_builder_plan_per_precision(case, dtype, flags, io):
    c = case("tensorrt", dtype, batch_size=8, device="cuda", workspace_mb=512)
    plan = engine_plan(c, TensorRTOptions.model_validate(c.options), "10.9.0.34", "NVIDIA H200")
    assert plan.builder_flags == flags
    assert plan.io_dtype == io
    assert plan.input_shape == (8, 3, 32, 32)  # min = opt = max: a static engine per batch size
    assert plan.workspace_bytes == 512 << 20
    assert plan.optimization_level == 3
    numerics = get_backend("tensorrt").numerics(c)
    assert numerics["trt_builder_flags"] == list(flags)
    assert numerics["trt_tf32"] == (dtype == "tf32")
    assert numerics["trt_io_dtype"] == io


def test_one_timing_cache_per_trt_version_and_gpu_shared_across_cases(case, tmp_path, monkeypatch):
    monkeypatch.setenv("RESBENCH_CACHE_DIR", str(tmp_path))
    options = TensorRTOptions()
    a = engine_plan(case("tensorrt", "fp16", batch_size=1, device="cuda"), options, "10.9.0.34", "NVIDIA H200")
    b = engine_plan(case("tensorrt", "bf16", batch_size=256, device="cuda"), options, "10.9.0.34", "NVIDIA H200")
    other_gpu = engine_plan(case("tensorrt", device="cuda"), options, "10.9.0.34", "NVIDIA A100-SXM4-80GB")
    assert a.timing_cache == b.timing_cache == tmp_path / "tensorrt" / "timing-10.9.0.34-nvidia-h200.cache"
    assert other_gpu.timing_cache != a.timing_cache
    explicit = engine_plan(case("tensorrt", device="cuda"), TensorRTOptions(timing_cache=str(tmp_path / "t.cache")),
                           "10.9.0.34", "NVIDIA H200")
    assert explicit.timing_cache == tmp_path / "t.cache"


def test_the_graph_the_builder_parses(tiny_model, case, example, tmp_path):
    """An fp16 case still hands TensorRT an fp32 graph (precision is the builder's job) with a dynamic batch
    axis (the profile pins it), made of operators TensorRT's ONNX parser supports, computing the model."""
    c = case("tensorrt", "fp16", batch_size=2)
    exported = export_for_engine(tiny_model, example(c), tmp_path / "model.onnx")
    proto = onnx.load(str(exported.path))
    onnx.checker.check_model(proto, full_check=True)
    assert exported.dtype == "float"
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    assert {n.op_type for n in proto.graph.node} <= PARSER_SUPPORTED
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 32, 32)
    (logits,) = session.run(None, {exported.input_name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), tiny_model.float()(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ int8


def test_int8_numerics_name_the_calibrator(case):
    c = case("tensorrt", "int8", batch_size=4, device="cuda", calibration={"method": "minmax", "samples": 8})
    numerics = get_backend("tensorrt").numerics(c)
    assert numerics["int8_calibration"] == "IInt8MinMaxCalibrator over 8 seeded images"
    assert get_backend("tensorrt").supports(c) == (True, "")
    assert TensorRTOptions().calibration.method == "entropy"


def test_calibration_feed_hands_out_each_batch_once_then_none():
    batches = [torch.full((4, 3, 2, 2), float(i)) for i in range(3)]
    feed = CalibrationFeed(batches)
    assert feed.batch_size == 4
    pointers = [feed.next_pointers() for _ in range(3)]
    assert pointers == [[b.data_ptr()] for b in feed.batches]
    assert feed.next_pointers() is None and feed.next_pointers() is None
    with pytest.raises(ValueError, match="at least one batch"):
        CalibrationFeed([])


class _StandInTensorRT:
    """TensorRT's calibrator base classes are pybind11 classes; stand-ins with the same names check that
    make_calibrator picks the right one and implements the interface TensorRT calls."""

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            self.base_initialised = True

    class IInt8MinMaxCalibrator(IInt8EntropyCalibrator2):
        pass


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_calibrator_reads_the_feed_and_keeps_no_cache(method):
    feed = CalibrationFeed([torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)])
    calibrator = make_calibrator(_StandInTensorRT, method, feed)
    assert type(calibrator).__mro__[1].__name__ == CALIBRATORS[method]
    assert calibrator.base_initialised
    assert calibrator.get_batch_size() == 2
    assert calibrator.get_batch(["input"]) == [feed.batches[0].data_ptr()]
    assert calibrator.get_batch(["input"]) == [feed.batches[1].data_ptr()]
    assert calibrator.get_batch(["input"]) is None
    assert calibrator.read_calibration_cache() is None
