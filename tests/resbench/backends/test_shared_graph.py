"""One QDQ model per group: the onnxruntime and openvino int8 rows of the same inputs share the model the
first prepare made (the second row says it reused it), any other input to quantization makes a new one, a
model calibrated on the wrong preprocessing is never served from a sound one, and the shared file is a
private read-only copy that writes to the kept artifact cannot reach."""

from __future__ import annotations

import copy
import os

import pytest

from resbench.backends import get_backend, shared_graph

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install 'resbench[openvino]')")


@pytest.fixture(autouse=True)
def fresh_group(tmp_path, monkeypatch):
    """Quantized models land in this test's folder; each test starts and ends as a group does."""
    monkeypatch.setenv("RESBENCH_CACHE_DIR", str(tmp_path))
    shared_graph.release()
    yield
    shared_graph.release()


def prepare(backend_name, make_case, tiny_model, example, **case_fields):
    case = make_case(backend_name, "int8", **case_fields)
    backend = get_backend(backend_name)
    fn = backend.prepare(copy.deepcopy(tiny_model), example(case), case)
    return fn, backend.artifacts(), case


def test_openvino_reuses_the_qdq_model_onnxruntime_made_and_both_pass_parity(make_case, tiny_model, example,
                                                                            check_parity):
    ort_fn, ort, ort_case = prepare("onnxruntime", make_case, tiny_model, example)
    ov_fn, openvino, ov_case = prepare("openvino", make_case, tiny_model, example)

    assert ort["int8_onnx_reused"] is False and openvino["int8_onnx_reused"] is True
    assert openvino["int8_onnx"] == ort["int8_onnx"] and os.path.isfile(ort["int8_onnx"])
    assert openvino["qdq_nodes"] == ort["qdq_nodes"] and openvino["quantize_s"] == ort["quantize_s"]
    for fn, case in ((ort_fn, ort_case), (ov_fn, ov_case)):
        verdict = check_parity(fn, case)
        assert verdict.passed, f"{case.backend}: {verdict.rule}"
        assert verdict.rule.startswith("int8 agrees on top-1 for ")


@pytest.mark.parametrize("other", [
    {"batch_size": 1},                                          # the export's traced shape
    {"calibration": {"samples": 16}},                           # the calibration images
    {"calibration": {"method": "percentile"}},                  # the range estimator
], ids=["batch", "samples", "method"])
def test_a_different_input_to_quantization_makes_its_own_model(make_case, tiny_model, example, other):
    _, first, _ = prepare("onnxruntime", make_case, tiny_model, example)
    _, second, _ = prepare("openvino", make_case, tiny_model, example, **other)
    assert first["int8_onnx_reused"] is False and second["int8_onnx_reused"] is False


def test_other_weights_make_their_own_model(make_case, tiny_model, example):
    _, first, _ = prepare("onnxruntime", make_case, tiny_model, example)
    changed = copy.deepcopy(tiny_model)
    changed.fc.bias.data += 1.0
    case = make_case("onnxruntime", "int8")
    backend = get_backend("onnxruntime")
    backend.prepare(changed, example(case), case)
    assert backend.artifacts()["int8_onnx_reused"] is False


def test_a_model_calibrated_on_raw_pixels_is_not_served_from_the_sound_one(make_case, tiny_model, example,
                                                                          check_parity, request):
    """The same case after a sound quantization, now calibrated on raw 0-255 pixels: a new key (the images
    differ), so the broken model is made and parity fails, as without sharing."""
    sound_fn, _, case = prepare("onnxruntime", make_case, tiny_model, example)
    assert check_parity(sound_fn, case).passed
    request.getfixturevalue("calibrate_on_raw_pixels")
    broken_fn, broken, case = prepare("openvino", make_case, tiny_model, example)
    assert broken["int8_onnx_reused"] is False
    verdict = check_parity(broken_fn, case)
    assert not verdict.passed and verdict.rule.startswith("int8 FAILS: "), verdict.rule


def test_the_shared_file_is_a_private_read_only_copy_until_the_group_ends(make_case, tiny_model, example,
                                                                         check_parity):
    _, ort, case = prepare("onnxruntime", make_case, tiny_model, example)
    with open(ort["int8_onnx"], "wb") as kept:  # a rerun or another worker rewrites the kept artifact
        kept.write(b"not an onnx model")
    ov_fn, openvino, case = prepare("openvino", make_case, tiny_model, example)
    assert openvino["int8_onnx_reused"] is True
    assert check_parity(ov_fn, case).passed  # it ran the group's model, not the rewritten file

    (private,) = [graph.private for graph in shared_graph._SHARED._graphs.values()]
    assert str(private) != ort["int8_onnx"] and private.stat().st_mode & 0o222 == 0  # no write bit
    shared_graph.release()
    assert not private.exists() and not private.parent.exists()
    _, again, _ = prepare("openvino", make_case, tiny_model, example)
    assert again["int8_onnx_reused"] is False  # a new group quantizes again


def test_fp32_rows_share_one_export_and_both_pass_parity(make_case, tiny_model, example, check_parity):
    """The fp32 rows of onnxruntime and openvino export the same model on the same example: once a group."""
    made = {}
    for name in ("onnxruntime", "openvino"):
        case = make_case(name, "fp32")
        backend = get_backend(name)
        fn = backend.prepare(copy.deepcopy(tiny_model), example(case), case)
        made[name] = backend.artifacts()
        verdict = check_parity(fn, case)
        assert verdict.passed, f"{name}: {verdict.rule}"
    assert made["onnxruntime"]["onnx_export_reused"] is False and made["openvino"]["onnx_export_reused"] is True
    other = make_case("openvino", "fp32", batch_size=1)   # another traced shape: its own export
    backend = get_backend("openvino")
    backend.prepare(copy.deepcopy(tiny_model), example(other), other)
    assert backend.artifacts()["onnx_export_reused"] is False
