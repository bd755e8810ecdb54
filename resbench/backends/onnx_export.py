"""One ONNX export for the runtimes that consume ONNX (ONNX Runtime, TensorRT).

torch.onnx's current exporter (`dynamo=True`: torch.export, then translation through onnxscript, then
onnxscript's graph optimizer) with a dynamic batch axis, one self-contained file (every ResNet here is
well under protobuf's 2 GB limit), then `onnx.checker`. The TorchScript exporter (`dynamo=False`) is
about 6x faster here (ResNet-50: 1.7 s vs 8-11 s on 2 cores) but deprecated and slated for removal, so
resbench uses the maintained one; the time is part of `prepare_s` and recorded as `export_s`.

A failure becomes `PrepareError` whose first line names the stage and the exporter's own root cause
(torch.onnx wraps it in a multi-line, colour-coded "Failed to export the model..." banner)."""

from __future__ import annotations

import contextlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from resbench.backends.base import PrepareError
from resbench.backends.logs import quiet

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    input_name: str
    output_name: str
    export_s: float
    onnx_bytes: int
    opset: int
    dtype: str  # the ONNX element type of the graph's input: "float", "float16", "bfloat16"

    def artifacts(self) -> dict[str, object]:
        return {"exporter": f"torch.onnx (dynamo=True, torch {torch.__version__})", "export_s": self.export_s,
                "onnx_bytes": self.onnx_bytes, "onnx_opset": self.opset}


def first_line(exc: BaseException) -> str:
    """`Type: first line` of the innermost cause: the message that says what actually went wrong."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(root)).splitlines() if line.strip()]
    return f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> OnnxExport:
    """Export `model` (already in the dtype the graph should have; converted to contiguous format in
    place) traced on `example` to `path`, batch axis dynamic, and check the file with `onnx.checker`."""
    import onnx

    path = Path(path)
    # ONNX tensors have no strides: export from NCHW-contiguous weights and input. A channels_last model
    # exports its flatten as an as_strided (Shape/Range/Mul/Gather) instead of one Reshape.
    model = model.to(memory_format=torch.contiguous_format)  # in place: callers pass their private copy
    example = example.contiguous()
    t0 = time.perf_counter()
    try:
        # The exporter prints its progress ("[torch.onnx] Obtain model graph...") to stdout.
        # torch 2.13's exporter logs one WARNING per torchvision op it cannot register when torchvision is
        # absent ("torchvision is not installed. Skipping torchvision::nms"): noise for a ResNet export.
        with contextlib.redirect_stdout(io.StringIO()), quiet("torch.onnx._internal.exporter._registration"):
            torch.onnx.export(
                model, (example,), str(path),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamo=True, external_data=False, verbose=False,
                # Dim.DYNAMIC, not Dim("batch"): a named Dim needs an example batch >= 2 (0/1 specialization)
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
            )
    except Exception as exc:
        raise PrepareError(f"ONNX export failed: {first_line(exc)}") from exc
    export_s = time.perf_counter() - t0
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise PrepareError(f"exported ONNX graph fails onnx.checker: {first_line(exc)}") from exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    elem_type = proto.graph.input[0].type.tensor_type.elem_type
    return OnnxExport(path=path, input_name=proto.graph.input[0].name, output_name=proto.graph.output[0].name,
                      export_s=export_s, onnx_bytes=path.stat().st_size, opset=opset,
                      dtype=onnx.TensorProto.DataType.Name(elem_type).lower())
