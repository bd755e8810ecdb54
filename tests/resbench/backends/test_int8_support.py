"""Which backends run int8: the ones that quantize; every other one skips an int8 row before any work,
saying where int8 runs. int8 rows take fp32 images and return fp32 logits."""

from __future__ import annotations

import pytest
import torch

from resbench.backends import backend_names, get_backend
from resbench.dtypes import DTYPE_NAMES, is_quantized, torch_dtype

INT8_BACKENDS = ["torchao", "onnxruntime", "openvino", "tensorrt"]


def test_the_backends_that_quantize():
    assert [name for name in backend_names() if get_backend(name).quantizes] == INT8_BACKENDS


@pytest.mark.parametrize("name", ["eager", "compile", "aot-inductor", "triton"])
def test_a_backend_without_an_int8_path_skips_int8_and_says_where_it_runs(case, name):
    ok, reason = get_backend(name).supports(case(name, "int8"))
    assert not ok
    assert reason == (f"{name} has no int8 path (it runs the model in floating point); "
                      f"int8 runs on: {', '.join(INT8_BACKENDS)}")
    assert get_backend(name).supports(case(name, "fp32")) == (True, "")


def test_int8_is_a_precision_with_an_fp32_interface():
    assert "int8" in DTYPE_NAMES and is_quantized("int8") and not is_quantized("bf16")
    assert torch_dtype("int8") == torch.float32 and torch_dtype("bf16") == torch.bfloat16
