"""Through the runner: a model ONNX export cannot translate gives the onnxruntime row `failed` with the
exporter's message, TensorRT (absent here) is `skipped` with how to install it, and the group goes on to
measure the backends that can run it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from resbench.measure import run_group
from resbench.suite import expand, parse_suite

SUITE = """
name: failure-rows
device: cpu
models: ["python:unexportable_nets:cummax_net"]
backends: [onnxruntime, tensorrt, eager]
batch_sizes: [1]
dtypes: [fp32]
image_size: 32
timing: {warmup_s: 0.05, min_iters: 5, min_time_s: 0.05, max_time_s: 0.5, rounds: 1}
parity: {samples: 2}
"""


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_unexportable_model_fails_its_onnx_row_and_the_run_goes_on(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cases = expand(parse_suite(SUITE, "failure-rows.yaml"), "cpu")
    rows = {row.backend: row for row in run_group(cases)}

    onnx_row = rows["onnxruntime"]
    assert onnx_row.status == "failed"
    assert "ONNX export failed: DispatchError: No ONNX function found for <OpOverload(op='aten.cummax'" \
        in onnx_row.reason, onnx_row.reason
    assert "\n" not in onnx_row.reason

    assert rows["tensorrt"].status == "skipped"
    assert 'pip install "resbench[tensorrt]"' in rows["tensorrt"].reason

    assert rows["eager"].status == "ok", rows["eager"].reason
    assert rows["eager"].latency_ms is not None and rows["eager"].parity is not None
