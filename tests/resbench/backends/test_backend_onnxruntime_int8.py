"""onnxruntime int8: static QDQ quantization of the export (per-channel int8 weights, uint8 activations,
calibrated on seeded images), the kept artifact, the thread policy, and the parity verdict: a sound
quantization passes, a model calibrated on the wrong preprocessing FAILS."""

from __future__ import annotations

import onnx
import pytest

from resbench import calibration
from resbench.backends import get_backend
from resbench.backends.onnx_quantize import artifact_path
from resbench.errors import SuiteError
from resbench.suite import parse_suite


def suite_with(backend_entry: str, dtypes: str = "[int8]") -> str:
    return f"name: t\nmodels: [resnet18]\nbackends:\n  - {backend_entry}\nbatch_sizes: [1]\ndtypes: {dtypes}\n"


@pytest.fixture(autouse=True)
def artifacts_in(tmp_path, monkeypatch):
    """Quantized models land in this test's folder, not the user's cache."""
    monkeypatch.setenv("RESBENCH_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("entry, key, words", [
    ("{name: onnxruntime, calibration: {method: kl}}", "backends[0].calibration.method",
     ["'minmax', 'entropy' or 'percentile'", "'kl'"]),
    ("{name: onnxruntime, calibration: {samples: 0}}", "backends[0].calibration.samples",
     ["greater than or equal to 1"]),
    ("{name: onnxruntime, calibration: {images: 8}}", "backends[0].calibration.images",
     ["unknown key of calibration 'images' for backend 'onnxruntime'; allowed: samples, method"]),
    ("{name: openvino, calibration: {method: entropy, bins: 3}}", "backends[0].calibration.bins",
     ["unknown key of calibration 'bins'", "allowed: samples, method"]),
    ("{name: torchao, calibration: {method: percentile}}", "backends[0].calibration.method",
     ["'histogram' or 'minmax'"]),
    ("{name: tensorrt, calibration: {method: histogram}}", "backends[0].calibration.method",
     ["'entropy' or 'minmax'"]),
])
def test_bad_calibration_options_name_their_key(entry, key, words):
    with pytest.raises(SuiteError) as info:
        parse_suite(suite_with(entry), "s.yaml")
    assert f"s.yaml: {key}: " in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_calibration_options_are_part_of_the_case():
    suite = parse_suite(suite_with("{name: onnxruntime, calibration: {method: entropy, samples: 8}}"))
    assert suite.backends[0].label == "onnxruntime[calibration={'method': 'entropy', 'samples': 8}]"


def test_int8_on_a_cuda_case_is_skipped_with_where_int8_runs_on_a_gpu(make_case):
    ok, reason = get_backend("onnxruntime").supports(make_case("onnxruntime", "int8", device="cuda"))
    assert not ok and "CPU EP" in reason and "tensorrt backend" in reason


def test_int8_row_runs_a_kept_qdq_model_and_passes_parity(make_case, tiny_model, example, check_parity, artifacts_in,
                                                          torch_threads):
    case = make_case("onnxruntime", "int8", batch_size=2)
    backend = get_backend("onnxruntime")
    assert backend.supports(case) == (True, "")
    with torch_threads(1):
        fn = backend.prepare(tiny_model, example(case), case)

    artifacts, numerics = backend.artifacts(), backend.numerics(case)
    kept = artifacts["int8_onnx"]
    assert kept == str(artifact_path(case, "minmax", calibration.DEFAULT_SAMPLES))
    assert kept.startswith(str(artifacts_in / "int8")) and kept.endswith("-32px-minmax-32img-seed0.onnx")
    graph = onnx.load(kept).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") == artifacts["qdq_nodes"]["QuantizeLinear"] > 0
    assert ops.count("DequantizeLinear") == artifacts["qdq_nodes"]["DequantizeLinear"] > 0
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 4  # every conv of the tiny net: conv1, block conv1/conv2, downsample
    scales = {t.name: t for t in graph.initializer}
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in
                   {t.name for t in int8_weights}]
    assert all(len(scales[n.input[1]].dims) == 1 and scales[n.input[1]].dims[0] > 1 for n in per_channel)
    assert numerics["ort_intra_op_num_threads"] == 1
    assert numerics["int8_calibration"] == "minmax over 32 seeded images"

    verdict = check_parity(fn, case)
    assert verdict.passed, verdict.rule
    assert verdict.rule.startswith("int8 agrees on top-1 for ")


def test_calibrating_on_unnormalised_pixels_fails_parity(make_case, tiny_model, example, check_parity,
                                                         calibrate_on_raw_pixels):
    """The classic int8 mistake: calibrate on raw 0-255 pixels while the model is fed normalised images;
    every activation range is ~60x too wide, so the model quantizes its real inputs to a few levels."""
    case = make_case("onnxruntime", "int8", batch_size=2)
    fn = get_backend("onnxruntime").prepare(tiny_model, example(case), case)

    verdict = check_parity(fn, case)
    assert not verdict.passed
    assert verdict.rule.startswith("int8 FAILS: ") and "the error of int8 weight rounding alone (> 2)" in verdict.rule
    assert verdict.err_ratio > 10, verdict.rule


def test_entropy_calibration_is_its_own_artifact(make_case, tiny_model, example, check_parity):
    case = make_case("onnxruntime", "int8", batch_size=2, calibration={"method": "entropy", "samples": 16})
    backend = get_backend("onnxruntime")
    fn = backend.prepare(tiny_model, example(case), case)
    assert backend.artifacts()["int8_onnx"].endswith("-32px-entropy-16img-seed0.onnx")
    assert backend.numerics(case)["int8_calibration"] == "entropy over 16 seeded images"
    assert check_parity(fn, case).passed
