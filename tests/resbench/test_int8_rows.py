"""int8 rows end to end through the runner (in this process): ResNet-18 at 32 px, one int8 group with
eager (no int8 path: skipped, known before work), torchao (PT2E + torch.compile, cold, so Inductor's int8
lowerings are counted), onnxruntime and openvino (the kept QDQ model), each with a parity verdict against
the fp64 reference and the int8 yardstick."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import yaml

from resbench.measure import run_group
from resbench.suite import expand, parse_suite

pytest.importorskip("torchao", reason="torchao not installed (pip install 'resbench[torchao]')")
pytest.importorskip("openvino", reason="openvino not installed (pip install 'resbench[openvino]')")

SUITE = {
    "name": "int8-rows", "models": ["resnet18"], "backends": ["eager", "torchao", "onnxruntime", "openvino"],
    "batch_sizes": [2], "dtypes": ["int8"], "image_size": 32,
    "timing": {"warmup_s": 0.05, "min_iters": 5, "min_time_s": 0.05, "max_time_s": 0.5, "rounds": 2},
    "parity": {"samples": 16},
}


@pytest.mark.slow
def test_resnet18_int8_rows_have_parity_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("RESBENCH_CACHE_DIR", str(tmp_path))
    cases = expand(parse_suite(yaml.safe_dump(SUITE)), "cpu")
    with torch._inductor.config.patch(force_disable_caches=True):  # a cold compile: lowerings are counted
        eager, torchao, onnxruntime, openvino = run_group(cases)

    assert eager.status == "skipped"
    assert eager.reason == ("eager has no int8 path (it runs the model in floating point); "
                            "int8 runs on: torchao, onnxruntime, openvino, tensorrt")
    for row in (torchao, onnxruntime, openvino):
        assert row.status == "ok", f"{row.backend}: {row.reason}"
        assert row.parity is not None and row.parity.images == 16
        assert row.parity.passed, f"{row.backend}: {row.parity.rule}"
        assert row.parity.rule.startswith("int8 agrees on top-1 for "), row.parity.rule
        assert row.parity.err_ratio is not None  # vs int8 weight rounding: computed for the group
        assert row.numerics["int8_weights"].startswith("int8, per output channel")
        assert row.latency_ms is not None and row.latency_ms.median > 0

    lowered = torchao.artifacts["int8_lowerings"]  # the compiled graph runs oneDNN int8 convolutions
    assert lowered.get("qconv_unary_lower_count", 0) + lowered.get("qconv2d_binary_lower_count", 0) >= 8, lowered

    kept = Path(onnxruntime.artifacts["int8_onnx"])
    assert kept.is_file() and kept.parent == tmp_path / "int8"
    assert openvino.artifacts["int8_onnx"] == str(kept)  # one QDQ model for both runtimes
    assert onnxruntime.artifacts["int8_onnx_reused"] is False  # made once, by the first of them
    assert openvino.artifacts["int8_onnx_reused"] is True
    ops = [node.op_type for node in onnx.load(str(kept)).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 20
    assert "i8" in openvino.artifacts["runtime_precisions"] or "u8" in openvino.artifacts["runtime_precisions"]
    assert onnxruntime.numerics["ort_intra_op_num_threads"] == torch.get_num_threads()
    assert openvino.numerics["ov_inference_num_threads"] == torch.get_num_threads()
