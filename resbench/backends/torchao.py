"""torchao: PyTorch 2 Export (PT2E) static int8 quantization for x86 CPUs, compiled by TorchInductor.

`torch.export.export(strict=True)` at the case's input shape -> `prepare_pt2e(model, X86InductorQuantizer)`
(BatchNorm folded into the convolutions; observers for weights int8 per output channel and activations
uint8 per tensor) -> the calibration images through the observed model (resbench/calibration.py) ->
`convert_pt2e` (quantize/dequantize pairs) -> `torch.compile` with Inductor's `freezing` on, which lowers
the dequantize -> conv -> quantize patterns to oneDNN int8 convolutions with prepacked weights (without
freezing the weights stay float and nothing runs in int8). `prepare_s` holds export, calibration, convert
and compile; the compile's cache verdict is recorded as for the `compile` backend.

A backend, not an option of `compile`: `compile` runs the model it is given, in the row's float dtype;
this path rewrites the model first (export, quantizer, observers, calibration data, convert), needs its
own package (the `torchao` extra, which `compile` must not depend on), has its own failure modes
(export, quantizer patterns) and its own options (`calibration:`), and runs int8 rows only. As its own
backend its rows read "torchao int8" next to "compile fp32", and `compile` stays available without torchao.

- Strict export: in torch 2.13 the default non-strict export records no `source_fn_stack`, so the
  quantizer's pattern matcher groups both calls of a block's shared `self.relu` into one partition and
  fails ("Input partition has more than one output node"); TorchDynamo's strict export records it.
- Imports come from `torchao.quantization.pt2e`: the old `torch.ao.quantization` PT2E path quantizes
  nothing in recent torch (pytorch#160095).
- `reduce_range` (7-bit activations) is on for CPUs without VNNI, as the quantizer's docs advise.

Installed with `pip install "resbench[torchao]"`."""

from __future__ import annotations

import dataclasses
import importlib.util
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from resbench import calibration
from resbench.backends import inductor_cache
from resbench.backends.base import Backend, BackendOptions, Forward, PrepareError, register
from resbench.backends.logs import quiet
from resbench.backends.onnx_export import first_line
from resbench.dtypes import is_quantized
from resbench.parity import in_batches

INSTALL = 'pip install "resbench[torchao]"'
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class TorchaoCalibration(calibration.CalibrationOptions):
    """histogram: the quantizer's own activation observer (HistogramObserver, range by minimising the
    quantization error); minmax: MinMaxObserver (the observed extremes), as onnxruntime's default."""

    method: Literal["histogram", "minmax"] = "histogram"


class TorchaoOptions(BackendOptions):
    calibration: TorchaoCalibration = TorchaoCalibration()


def has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (VNNI or AMX-INT8), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in VNNI_FLAGS)


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


@register
class TorchaoBackend(Backend):
    name = "torchao"
    description = "torchao PT2E static int8 (X86InductorQuantizer) compiled by TorchInductor (x86 CPU)"
    Options = TorchaoOptions
    quantizes = True

    def available(self, device: torch.device) -> tuple[bool, str]:
        if importlib.util.find_spec("torchao") is None:
            return False, f"torchao not installed; {INSTALL}"
        if torch.device(device).type != "cpu":
            return False, ("torchao's X86InductorQuantizer lowers to oneDNN int8 kernels on x86 CPUs; this run "
                           f"is on {torch.device(device).type} (for int8 on an NVIDIA GPU use tensorrt)")
        if not _is_x86():
            return False, f"X86InductorQuantizer needs an x86-64 CPU; this is {platform.machine()}"
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        if not is_quantized(case.dtype):
            return False, (f"torchao rows are int8 (PT2E static quantization); the same Inductor path in "
                           f"{case.dtype} is the compile backend")
        return True, ""

    def numerics(self, case) -> dict[str, Any]:
        options: TorchaoOptions = self.options(case)
        activations = f"uint8{' (7-bit range)' if not has_vnni() else ''}, per tensor, static"
        return {**calibration.numerics("int8, per output channel, symmetric", activations,
                                       options.calibration.method, options.calibration.samples),
                "inductor_freezing": True}

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        options: TorchaoOptions = self.options(case)
        self._artifacts = {}
        quantized = quantize(model, example, case, options.calibration)
        t0 = time.perf_counter()
        compiled = torch.compile(quantized.graph)
        # Inductor freezes (folds and prepacks the int8 weights) only graphs compiled without autograd and
        # with the global `freezing` flag (as a torch.compile option it is read too late in torch 2.13:
        # prepack ops then see the weights as graph inputs, "UnsupportedOperatorException:
        # onednn.qconv_prepack"). Every later call runs under no_grad too (runner, parity), so no recompile.
        lowered_before = _int8_lowerings()
        with (inductor_cache.tracked(False) as cache, torch.no_grad(), torch._inductor.config.patch(freezing=True),
              warnings.catch_warnings()):
            # torch 2.13's int8 conv lowering warns once per conv ("To copy construct from a tensor, ...",
            # mkldnn_lowerings.py): its own internals, noise in the run's output
            warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
            compiled(example)  # compiles inside prepare
        lowered = {k: n - lowered_before.get(k, 0) for k, n in _int8_lowerings().items()
                   if n > lowered_before.get(k, 0)}
        self._artifacts = {
            "torchao": _version(), "export": "torch.export (strict)", "export_s": quantized.export_s,
            "quantize_s": quantized.quantize_s, "compile_s": time.perf_counter() - t0, "qdq_nodes": quantized.qdq,
            # Inductor's int8 lowerings (qconv/qlinear onto oneDNN) in this compile; empty on a cache hit
            "int8_lowerings": lowered, **cache,
        }
        return compiled


@dataclass(frozen=True)
class Quantized:
    graph: torch.fx.GraphModule  # convert_pt2e's output: quantize/dequantize pairs around fp32 ops
    export_s: float
    quantize_s: float            # prepare_pt2e + calibration + convert_pt2e
    qdq: dict[str, int]


def quantize(model: torch.nn.Module, example: torch.Tensor, case, options: TorchaoCalibration) -> Quantized:
    """Everything before compilation: strict export at the example's shape, the X86InductorQuantizer's
    observers, calibration on the case's seeded calibration images, convert. Run eagerly, the result
    computes what the compiled int8 kernels compute (same scales and zero points, float arithmetic)."""
    pt2e, quantizer = _quantizer(options.method)
    model = model.float()
    t0 = time.perf_counter()
    try:
        exported = torch.export.export(model, (example,), strict=True).module()
    except Exception as exc:
        raise PrepareError(f"torch.export (strict) failed: {first_line(exc)}") from exc
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        observed = pt2e.prepare_pt2e(exported, quantizer)
    except Exception as exc:
        raise PrepareError(f"torchao prepare_pt2e (X86InductorQuantizer) failed: {first_line(exc)}") from exc
    images = calibration.case_images(case, options)
    memory_format = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    with torch.no_grad():
        for chunk in in_batches(images, case.batch_size):  # the export is specialised to the batch shape
            observed(chunk.contiguous(memory_format=memory_format))
    converted = pt2e.convert_pt2e(observed)
    qdq = _count_qdq(converted)
    if not qdq["quantize"]:
        raise PrepareError("torchao's quantizer annotated no op of this model (no quantize node after convert_pt2e)")
    return Quantized(converted, export_s, time.perf_counter() - t0, qdq)


def _quantizer(method: str):
    """(torchao's pt2e module, an X86InductorQuantizer configured for `method`)."""
    with _quiet_import():
        import torchao.quantization.pt2e as observers
        import torchao.quantization.pt2e.quantize_pt2e as pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    config = x86.get_default_x86_inductor_quantization_config(reduce_range=not has_vnni())
    if method == "minmax":
        activation = dataclasses.replace(config.input_activation,
                                         observer_or_fake_quant_ctr=observers.MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return pt2e, x86.X86InductorQuantizer().set_global(config)


def _int8_lowerings() -> dict[str, int]:
    """Inductor's counters of quantized patterns lowered to oneDNN int8 kernels ('qconv_unary_lower_count':
    3, ...), cumulative for this process."""
    from torch._dynamo.utils import counters

    return {k: v for k, v in counters["inductor"].items() if k.startswith("q") and k.endswith("_lower_count")}


def _count_qdq(graph_module: torch.fx.GraphModule) -> dict[str, int]:
    """Quantize and dequantize nodes in the converted graph (per-tensor activations, per-channel weights)."""
    names = [getattr(node.target, "__name__", str(node.target)) for node in graph_module.graph.nodes
             if node.op == "call_function"]
    return {"quantize": sum(n.startswith("quantize_per") for n in names),
            "dequantize": sum(n.startswith("dequantize_per") for n in names)}


def _quiet_import():
    """torchao 0.18 logs a WARNING per CUDA extension it cannot load on a CPU build ("Failed to load
    .../_C_mxfp8...so"), and torch's pytree one about an Enum registration: noise for a CPU int8 run."""
    return quiet("torchao", "torch.utils._pytree")


def _version() -> str:
    with _quiet_import():
        import torchao

    return torchao.__version__
