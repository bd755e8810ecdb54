"""The shared ONNX export: a checker-clean file with a dynamic batch axis, and failure messages that keep
the exporter's root cause in one clean line."""

from __future__ import annotations

import onnx
import pytest
import torch

from resbench.backends.base import PrepareError
from resbench.backends.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, first_line


def test_first_line_is_the_innermost_cause_without_colour_codes():
    try:
        try:
            raise ValueError("\x1b[96mshape mismatch\x1b[0m\nmore detail")
        except ValueError as inner:
            raise RuntimeError("Failed to export the model.\nSee above.") from inner
    except RuntimeError as outer:
        assert first_line(outer) == "ValueError: shape mismatch"


def test_first_line_of_an_empty_message_is_the_type():
    assert first_line(KeyError()) == "KeyError"


def test_export_from_a_channels_last_fp16_model(tiny_model, tmp_path):
    """The graph keeps the run dtype, names its input and output, leaves the batch axis symbolic, and has
    no layout artifacts from channels_last weights (one Reshape before the classifier, no Gather)."""
    model = tiny_model.half()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    exported = export_onnx(model, x, tmp_path / "m.onnx")
    proto = onnx.load(str(exported.path))
    assert exported.dtype == "float16" and exported.opset == proto.opset_import[0].version
    assert (exported.input_name, exported.output_name) == (INPUT_NAME, OUTPUT_NAME)
    assert exported.onnx_bytes == (tmp_path / "m.onnx").stat().st_size
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    ops = [n.op_type for n in proto.graph.node]
    assert "Gather" not in ops and ops.count("Reshape") == 1


def test_a_failed_export_is_a_prepare_error(unexportable_model, tmp_path):
    with pytest.raises(PrepareError, match=r"^ONNX export failed: GuardOnDataDependentSymNode"):
        export_onnx(unexportable_model, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
