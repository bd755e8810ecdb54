"""Static int8 quantization of an exported ONNX graph with ONNX Runtime's quantizer: the QDQ model the
onnxruntime backend runs and the openvino backend compiles.

`quant_pre_process` (ONNX shape inference + ORT's basic graph optimizations, which fold BatchNorm into
Conv) -> `quantize_static` in QDQ format: weights QInt8 per output channel, activations QUInt8 (the U8S8
pair x86 VNNI kernels take), ranges calibrated on the calibration images (resbench/calibration.py). The
result is a standard ONNX graph with QuantizeLinear/DequantizeLinear pairs around every quantized op, which
ORT's CPU EP fuses into QLinearConv and OpenVINO reads as FakeQuantize.

Measured on this 2-core CPU (ResNet-18, 64 px, 32 calibration images): 1-4 s; against fp64, cosine 0.998
and top-1 agreement 14/16 (random weights; parity.py says why the verdict has two clauses).

The export and quantization of a row, and their reuse within a group, are in shared_graph.py.

The quantized model is the deployable artifact of an int8 row, so it is kept (not a temporary file):
`<cache>/int8/<model>-<size>px-<method>-<samples>img-seed<seed>[-w<weights hash>].onnx`, written
atomically; rerunning the same case replaces it with an identical one. Its path is in the row's artifacts.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from resbench import calibration
from resbench.backends.base import PrepareError
from resbench.backends.cache_dir import cache_dir, slug
from resbench.backends.logs import quiet
from resbench.backends.onnx_export import first_line

METHODS: dict[str, str] = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
CALIBRATION_BATCH = 8  # images per calibration run (the export's batch axis is dynamic)
# quantize_static's settings (onnxruntime.quantization enum member names): what, with the calibration images
# and range estimator, decides the QDQ model; shared_graph.py keys its reuse on them
SETTINGS: dict[str, object] = {"quant_format": "QDQ", "per_channel": True, "weight_type": "QInt8",
                               "activation_type": "QUInt8", "calibration_batch": CALIBRATION_BATCH}


class QdqCalibration(calibration.CalibrationOptions):
    """`calibration:` of the backends that run the QDQ model (onnxruntime, openvino): onnxruntime's range
    estimator over `samples` seeded images."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"


@dataclass(frozen=True)
class QuantizedOnnx:
    path: Path
    quantize_s: float
    onnx_bytes: int
    quantize_linear: int    # QuantizeLinear nodes in the graph
    dequantize_linear: int  # DequantizeLinear nodes (weights and activations)
    method: str
    samples: int

    def artifacts(self) -> dict[str, object]:
        return {"int8_onnx": str(self.path), "int8_onnx_bytes": self.onnx_bytes, "quantize_s": self.quantize_s,
                "quantizer": _quantizer_version(), "quant_format": "QDQ (weights QInt8 per channel, "
                "activations QUInt8)", "qdq_nodes": {"QuantizeLinear": self.quantize_linear,
                                                    "DequantizeLinear": self.dequantize_linear}}


def int8_numerics(options: QdqCalibration) -> dict[str, Any]:
    """What a QDQ int8 row's numbers depend on, recorded in its numerics."""
    return calibration.numerics("int8, per output channel, symmetric", "uint8, per tensor, static", options.method,
                                options.samples)


def artifact_path(case, method: str, samples: int) -> Path:
    """Where the int8 model of `case` is kept: one file per model, weights, image size and calibration
    (batch sizes share it: its batch axis is dynamic)."""
    weights = ""
    if case.model.weights:
        weights = "-w" + hashlib.sha1(str(Path(case.model.weights).resolve()).encode()).hexdigest()[:8]
    name = (f"{slug(case.model.name)}-{case.image_size}px-{method}-{samples}img-seed{case.parity.seed}"
            f"{weights}.onnx")
    return cache_dir() / "int8" / name


class _Batches:
    """ORT's CalibrationDataReader protocol (`get_next` until None) over the calibration images."""

    def __init__(self, input_name: str, images: torch.Tensor, batch_size: int) -> None:
        self._feeds = iter([{input_name: chunk.contiguous().numpy()} for chunk in images.split(batch_size)])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize_onnx(fp32_path: Path, out_path: Path, images: torch.Tensor, input_name: str,
                  method: str = "minmax") -> QuantizedOnnx:
    """Quantize the fp32 graph at `fp32_path` into a QDQ model at `out_path` (atomically), calibrated on
    `images` (fp32 NCHW, the preprocessing the model is fed) with the range estimator `method`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staged = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        # ORT's quantizer logs INFO/WARNING lines through the root logger (e.g. a pre-processing hint even
        # for pre-processed models): noise inside a progress display
        with tempfile.TemporaryDirectory(prefix="resbench-int8-") as tmp, quiet(""):
            prepared = Path(tmp) / "preprocessed.onnx"
            # symbolic shape inference is for symbolic dims inside the graph (transformers); ONNX's own
            # shape inference covers a CNN with a dynamic batch axis
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(staged), _Batches(input_name, images.float(), SETTINGS["calibration_batch"]),
                quant_format=getattr(QuantFormat, SETTINGS["quant_format"]), per_channel=SETTINGS["per_channel"],
                weight_type=getattr(QuantType, SETTINGS["weight_type"]),
                activation_type=getattr(QuantType, SETTINGS["activation_type"]),
                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                # No CalibMaxIntermediateOutputs: in ORT 1.32 reaching it discards the collected outputs
                # unmerged ("No data is collected."); MinMax keeps only reduced min/max values anyway.
            )
        os.replace(staged, out_path)
    except Exception as exc:
        staged.unlink(missing_ok=True)
        raise PrepareError(f"int8 quantization (onnxruntime.quantization, {method}) failed: "
                           f"{first_line(exc)}") from exc
    quantize_s = time.perf_counter() - t0
    ops = [node.op_type for node in onnx.load(str(out_path), load_external_data=False).graph.node]
    return QuantizedOnnx(path=out_path, quantize_s=quantize_s, onnx_bytes=out_path.stat().st_size,
                         quantize_linear=ops.count("QuantizeLinear"), dequantize_linear=ops.count("DequantizeLinear"),
                         method=method, samples=int(images.shape[0]))


def _quantizer_version() -> str:
    import onnxruntime

    return f"onnxruntime.quantization {onnxruntime.__version__}"


assert set(QdqCalibration.model_fields["method"].annotation.__args__) == set(METHODS)
