"""The ONNX graph a QDQ runtime (onnxruntime, openvino) loads for a row: the torch.onnx export, or for an
int8 row the QDQ model (onnx_quantize.py) — made once per group and shared by every backend whose inputs to
it are identical.

The fp32 rows of both backends export the same model on the same example: the export is made once too
(key: the model and the example's shape and dtype; rows record `onnx_export_reused`). An fp16 onnxruntime
row on a GPU exports a half model, openvino a float one: different keys, no sharing.

The onnxruntime and openvino int8 rows of a group quantize the same fp32 model with the same calibration
(both backends export the model in fp32 and run onnxruntime's quantizer), so the second prepare would spend
export + calibration + quantization again on a byte-identical file (ResNet-18, 64 px: figures in
docs/backends.md). Here the first prepare makes it and the second reuses it when the key matches.

- The key is a digest of every input of the QDQ model: the model (class, module tree, every state tensor's
  name, dtype, shape and bytes), the example's shape and dtype (the export's trace), the calibration images
  (their bytes: a changed seed, sample count or preprocessing is a different key), the range estimator,
  quantize_static's settings, and the kept artifact's path. Hashing ResNet-50's 100 MB of state takes
  about 0.2 s, against 10-30 s of export and quantization.
- The graph (for int8 the QDQ model) is written into a private, read-only copy in this process's temporary
  folder, which both backends load; for int8 the kept artifact (`<cache>/int8/...onnx`,
  onnx_quantize.artifact_path) is then replaced atomically with a copy of it. A later write to the kept
  file (a rerun, another worker with another batch size) cannot change what the group's backends run.
- At most MAX_SHARED models are held; `release()` (measure.run_group calls it when a group ends) deletes
  them, so no group sees another group's model and the folder does not outlive the work. A worker that is
  killed leaves its folder (`resbench-qdq-*` under the temporary directory) behind.
- Each row records `int8_onnx_reused` (false for the prepare that made the model). `export_s` and
  `quantize_s` describe the shared model, so on a reused row they are times this prepare did not spend."""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from resbench import calibration
from resbench.backends.base import PrepareError
from resbench.backends.onnx_export import OnnxExport, export_onnx
from resbench.backends.onnx_quantize import SETTINGS, QdqCalibration, QuantizedOnnx, artifact_path, quantize_onnx
from resbench.dtypes import is_quantized

MAX_SHARED = 2  # QDQ models held at once: one group needs one; a second covers a test or an in-process mix


@dataclass(frozen=True)
class RowGraph:
    """The ONNX file a QDQ runtime loads for a row: the export, or for an int8 row the private copy of its
    QDQ model (`quantized.path` is the kept artifact the row names)."""

    exported: OnnxExport
    quantized: QuantizedOnnx | None
    private: Path | None = None  # int8: this process's read-only copy, the file the runtime loads
    reused: bool = False         # int8: made by an earlier prepare of this group, not by this one

    @property
    def path(self) -> Path:
        if self.private is not None:
            return self.private
        return self.quantized.path if self.quantized is not None else self.exported.path

    def artifacts(self) -> dict[str, object]:
        if self.quantized is None:
            return {**self.exported.artifacts(), "onnx_export_reused": self.reused}
        return {**self.exported.artifacts(), **self.quantized.artifacts(), "int8_onnx_reused": self.reused}


def row_graph(case, model: torch.nn.Module, example: torch.Tensor, folder: Path, options: QdqCalibration) -> RowGraph:
    """Export `model` on `example` (export_onnx) and, for an int8 case, quantize it (the fp32 export goes to
    `folder`), unless this group already made the graph of the same inputs: then that one, `reused` set."""
    if not is_quantized(case.dtype):
        key = export_key(model, example)
        shared = _SHARED.get(key)
        if shared is not None:
            return dataclasses.replace(shared, reused=True)
        private = _SHARED.path_for(key)
        graph = RowGraph(export_onnx(model, example, private), None, private=private)
        _SHARED.put(key, graph)
        return graph
    images = calibration.case_images(case, options)
    kept = artifact_path(case, options.method, options.samples)
    key = quantization_key(model, example, images, options.method, kept)
    shared = _SHARED.get(key)
    if shared is not None:
        return dataclasses.replace(shared, reused=True)
    exported = export_onnx(model, example, folder / "model.onnx")
    private = _SHARED.path_for(key)
    quantized = quantize_onnx(exported.path, private, images, exported.input_name, options.method)
    _keep(private, kept)
    graph = RowGraph(exported, dataclasses.replace(quantized, path=kept), private=private)
    _SHARED.put(key, graph)
    return graph


def export_key(model: torch.nn.Module, example: torch.Tensor) -> str:
    """A digest of everything the ONNX export depends on: the model and the example's shape and dtype."""
    digest = hashlib.sha256(b"export\n")
    _add_model(digest, model, example)
    return digest.hexdigest()


def quantization_key(model: torch.nn.Module, example: torch.Tensor, images: torch.Tensor, method: str,
                     kept: Path) -> str:
    """A digest of everything the QDQ model depends on (module docstring)."""
    digest = hashlib.sha256(b"qdq\n")
    _add_model(digest, model, example)
    _add_tensor(digest, images)
    digest.update(f"{method}\n{sorted(SETTINGS.items())}\n{kept}".encode())
    return digest.hexdigest()


def _add_model(digest, model: torch.nn.Module, example: torch.Tensor) -> None:
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model}\n".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _add_tensor(digest, tensor)
    digest.update(f"example {example.dtype}{tuple(example.shape)}\n".encode())


def _add_tensor(digest, tensor: torch.Tensor) -> None:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # bytes independent of the memory format
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy())


def release() -> None:
    """Forget every shared QDQ model and delete the private copies (the end of a group)."""
    _SHARED.clear()


def _keep(private: Path, kept: Path) -> None:
    """Replace the kept artifact atomically with a copy of the private QDQ model."""
    staged = kept.with_name(f".{kept.name}.{os.getpid()}.tmp")
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(private, staged)
        os.replace(staged, kept)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise PrepareError(f"cannot keep the int8 model at {str(kept)!r}: {exc.strerror or exc}") from exc


class _SharedModels:
    """This process's QDQ models by key, oldest first, and the temporary folder of their private copies."""

    def __init__(self) -> None:
        self._graphs: OrderedDict[str, RowGraph] = OrderedDict()
        self._folder: Path | None = None

    def get(self, key: str) -> RowGraph | None:
        graph = self._graphs.get(key)
        if graph is not None and not graph.private.is_file():  # its folder was cleaned from outside
            del self._graphs[key]
            return None
        return graph

    def path_for(self, key: str) -> Path:
        if self._folder is None or not self._folder.is_dir():
            self._folder = Path(tempfile.mkdtemp(prefix="resbench-qdq-"))
        return self._folder / f"{key[:32]}.onnx"

    def put(self, key: str, graph: RowGraph) -> None:
        graph.private.chmod(0o444)  # read-only: no backend writes the file another one runs
        self._graphs[key] = graph
        while len(self._graphs) > MAX_SHARED:
            _, oldest = self._graphs.popitem(last=False)
            oldest.private.unlink(missing_ok=True)

    def clear(self) -> None:
        self._graphs.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


_SHARED = _SharedModels()
atexit.register(release)  # an in-process run or a test session; a worker ends with its group's release()
