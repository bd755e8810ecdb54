"""ONNX Runtime: the model exported with torch.onnx (dynamic batch axis, `onnx.checker`-clean), run by an
InferenceSession whose execution providers are tried in order of preference (TensorRT EP, CUDA EP, CPU).

- The graph is exported in the run dtype (the model cast to fp16 for fp16 rows), so the session's inputs
  and logits are in the run dtype like every other backend's. bf16 is skipped: ORT's type check rejects
  `tensor(bfloat16)` for Conv (torch.onnx emits opset 20, whose Conv allows float16/float/double only).
- On x86-64 the CPU EP has no fp16 Conv kernel: ORT inserts Casts and computes the convolutions in fp32
  (observed with ORT 1.31; the row's artifacts say so). The row still times what an fp16 ONNX model costs
  on that CPU.
- On CUDA the session runs on PyTorch's current stream (`user_compute_stream`) and reads and writes
  torch tensors in place through IO binding, so device timing contains no host copies. The graph takes
  NCHW: a channels_last input is made contiguous on the device inside the call (one device copy, timed).
- `prepare` exports, builds the session and runs it once (the TensorRT EP builds its engines on the first
  run), so `prepare_s` holds export + session + engine build.
- A CUDA case whose session falls back to the CPU EP fails rather than timing the CPU.
- ORT's intra-op pool gets `torch.get_num_threads()` threads: the run's thread policy (threads.py), read
  when the session is built and recorded in the row's numerics.
- int8 (CPU EP): the fp32 export is quantized statically to a QDQ model (onnx_quantize.py: weights int8 per
  channel, activations uint8, calibrated on seeded images, `calibration:` options), once per group for
  this backend and openvino (shared_graph.py); the session runs that model, whose kept file's path is in
  the row. `prepare_s` holds export + calibration + quantization + session, or session only on a reuse."""

from __future__ import annotations

import importlib.util
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import field_validator

from resbench.backends.base import Backend, BackendOptions, Forward, PrepareError, cast_model, register
from resbench.backends.onnx_export import first_line
from resbench.backends.onnx_quantize import QdqCalibration, int8_numerics
from resbench.backends.shared_graph import row_graph
from resbench.dtypes import is_quantized

INSTALL = 'pip install "resbench[onnx]"'
GPU_INSTALL = "pip install onnxruntime-gpu (in place of onnxruntime)"
ProviderName = Literal["tensorrt", "cuda", "cpu"]
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PREFERENCE: tuple[ProviderName, ...] = ("tensorrt", "cuda", "cpu")
LEVELS: dict[str, str] = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
NO_CAPTURE = ("onnxruntime cannot be captured in a CUDA graph by resbench: a session run synchronizes its "
              "stream, which capture forbids; use cuda_graphs: false")


class OnnxRuntimeOptions(BackendOptions):
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    # Execution providers in order of preference; None: tensorrt, cuda, cpu (those this build offers).
    providers: tuple[ProviderName, ...] | None = None
    cuda_graphs: bool | Literal["auto"] = False  # present only to say why it cannot be enabled
    calibration: QdqCalibration = QdqCalibration()  # int8 rows only

    @field_validator("providers")
    @classmethod
    def _distinct(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError(f"providers must name at least one of: {', '.join(PROVIDERS)}")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"providers lists a provider twice: {list(v)}")
        return v

    @field_validator("cuda_graphs")
    @classmethod
    def _not_capturable(cls, v: bool | str) -> bool | str:
        if v is not False:
            raise ValueError(NO_CAPTURE)
        return v


def requested_providers(options: OnnxRuntimeOptions, device: str) -> tuple[str, ...]:
    """Short provider names in order of preference for a case on `device` (before availability)."""
    if options.providers is not None:
        wanted = options.providers
    else:
        wanted = PREFERENCE if device == "cuda" else ("cpu",)
    if device == "cpu":  # a CPU case runs on the CPU EP only: a GPU provider would time host<->device copies
        return tuple(p for p in wanted if p == "cpu")
    return tuple(p for p in wanted if p != "cpu") + (("cpu",) if "cpu" in wanted else ())


@register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime InferenceSession on a torch.onnx export (TensorRT EP > CUDA EP > CPU EP)"
    Options = OnnxRuntimeOptions
    quantizes = True

    def __init__(self) -> None:
        super().__init__()
        self._threads: int | None = None  # the intra-op pool size of the last session (set in prepare)

    def available(self, device: torch.device) -> tuple[bool, str]:
        missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed; {INSTALL}"
        if torch.device(device).type == "cuda":
            import onnxruntime as ort

            offered = ort.get_available_providers()
            if not any(PROVIDERS[p] in offered for p in ("tensorrt", "cuda")):
                return False, (f"onnxruntime {ort.__version__} here is a CPU-only build (providers: "
                               f"{', '.join(offered)}); for GPU runs: {GPU_INSTALL}")
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        options: OnnxRuntimeOptions = self.options(case)
        if case.dtype == "bf16":
            return False, ("ONNX Runtime cannot run a bf16 ResNet: its type check rejects tensor(bfloat16) "
                           "for Conv (opset 20 Conv allows float16, float, double); run fp16 or fp32")
        if is_quantized(case.dtype) and case.device == "cuda":
            return False, ("onnxruntime int8 rows run the QDQ model on the CPU EP (the CUDA EP has no int8 "
                           "convolutions); for int8 on an NVIDIA GPU use the tensorrt backend")
        if case.device == "cuda" and case.timing.mode == "graph":
            return False, ("timing mode 'graph' captures the call in a CUDA graph, and an onnxruntime "
                           "session run synchronizes its stream, which capture forbids; "
                           "use timing mode device or e2e")
        wanted = requested_providers(options, case.device)
        if not wanted:
            return False, (f"providers {list(options.providers or ())} include no provider for a "
                           f"{case.device} case; add {'cpu' if case.device == 'cpu' else 'cuda or tensorrt'}")
        if case.device == "cuda" and wanted == ("cpu",):
            return False, ("providers [cpu] on a CUDA case would time host<->device copies; "
                           "run the suite on cpu")
        import onnxruntime as ort

        offered = ort.get_available_providers()
        if not any(PROVIDERS[p] in offered for p in wanted):
            hint = GPU_INSTALL if case.device == "cuda" else INSTALL
            return False, (f"onnxruntime {ort.__version__} offers {', '.join(offered)}; none of the "
                           f"requested {list(wanted)}; {hint}")
        return True, ""

    def numerics(self, case) -> dict[str, Any]:
        options: OnnxRuntimeOptions = self.options(case)
        out: dict[str, Any] = {
            "ort_graph_optimization_level": LEVELS[options.graph_optimization_level],
            "ort_providers_requested": [PROVIDERS[p] for p in requested_providers(options, case.device)],
        }
        if self._threads is not None:  # known once prepare built the session
            out["ort_intra_op_num_threads"] = self._threads
        if is_quantized(case.dtype):
            out.update(int8_numerics(options.calibration))
        if case.device == "cuda":
            out["ort_cuda_use_tf32"] = case.dtype == "tf32"
            out["ort_trt_fp16_enable"] = case.dtype == "fp16"
        return out

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        import onnxruntime as ort

        options: OnnxRuntimeOptions = self.options(case)
        self._artifacts = {}
        model = cast_model(model, case)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                           LEVELS[options.graph_optimization_level])
        session_options.log_severity_level = 3  # errors only
        # the run's thread policy (threads.py): ORT's own pool gets the count torch was given, not every core
        self._threads = session_options.intra_op_num_threads = torch.get_num_threads()
        session_options.inter_op_num_threads = 1  # sequential execution: the inter-op pool is unused
        providers = self._providers(options, case, example.device)
        with tempfile.TemporaryDirectory(prefix="resbench-onnx-") as tmp:
            graph = row_graph(case, model, example, Path(tmp), options.calibration)
            t0 = time.perf_counter()
            try:
                session = ort.InferenceSession(str(graph.path), session_options, providers=providers)
            except Exception as exc:
                reason = first_line(exc)
                raise PrepareError(f"onnxruntime could not load the exported graph: {reason}") from exc
            session_s = time.perf_counter() - t0
        active = session.get_providers()
        if case.device == "cuda" and active[0] == PROVIDERS["cpu"]:
            raise PrepareError(f"onnxruntime fell back to the CPU EP on a CUDA case (session providers: "
                               f"{', '.join(active)}); check the CUDA/cuDNN libraries onnxruntime-gpu needs")
        exported = graph.exported
        if example.is_cuda:
            forward = _bound_forward(session, exported.input_name, exported.output_name, example)
        else:
            forward = _host_forward(session, exported.input_name, exported.output_name)
        t0 = time.perf_counter()
        try:
            forward(example)  # the TensorRT EP builds its engines here; any EP fails here if it cannot run
        except Exception as exc:
            raise PrepareError(f"onnxruntime session failed on the example batch: {first_line(exc)}") from exc
        if example.is_cuda:
            torch.cuda.synchronize(example.device)
        self._artifacts = {
            "onnxruntime": ort.__version__,
            "provider": active[0],
            "providers": active,
            "graph_optimization_level": LEVELS[options.graph_optimization_level],
            "intra_op_num_threads": session_options.intra_op_num_threads,
            "io_binding": example.is_cuda,
            **graph.artifacts(),
            "session_s": session_s,
            "warmup_run_s": time.perf_counter() - t0,
        }
        if active[0] == PROVIDERS["cpu"] and case.dtype == "fp16" and _is_x86():
            self._artifacts["note"] = ("the CPU EP has no fp16 Conv kernel on x86-64: ORT inserts Casts and "
                                       "computes the convolutions in fp32")
        return forward

    def _providers(self, options: OnnxRuntimeOptions, case, device: torch.device) -> list[Any]:
        """ORT's `providers` argument: (name, options) pairs, in order, limited to what this build offers."""
        import onnxruntime as ort

        offered = ort.get_available_providers()
        out: list[Any] = []
        for short in requested_providers(options, case.device):
            name = PROVIDERS[short]
            if name not in offered:
                continue
            if short == "cpu":
                out.append(name)
                continue
            index = device.index if device.index is not None else torch.cuda.current_device()
            provider_options: dict[str, Any] = {
                "device_id": index,
                # run on torch's stream: inputs are ready when ORT reads them, device timers see ORT's work
                "user_compute_stream": str(torch.cuda.current_stream(device).cuda_stream),
            }
            if short == "cuda":
                provider_options["use_tf32"] = int(case.dtype == "tf32")
            else:
                provider_options["trt_fp16_enable"] = case.dtype == "fp16"
            out.append((name, provider_options))
        return out


def _host_forward(session, input_name: str, output_name: str) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run([output_name], {input_name: x.contiguous().numpy()})
        return torch.from_numpy(logits)

    return forward


def _bound_forward(session, input_name: str, output_name: str, example: torch.Tensor) -> Forward:
    """IO binding on torch's device memory: no host copies inside the timed call."""
    import numpy as np

    element = {torch.float32: np.float32, torch.float16: np.float16}[example.dtype]
    device_id = example.device.index if example.device.index is not None else torch.cuda.current_device()
    (probe,) = session.run([output_name], {input_name: example.contiguous().cpu().numpy()})
    tail = tuple(probe.shape[1:])  # logits per image, from one host run (also builds TensorRT EP engines)
    binding = session.io_binding()

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty((x.shape[0], *tail), dtype=x.dtype, device=x.device)
        binding.bind_input(input_name, "cuda", device_id, element, tuple(x.shape), x.data_ptr())
        binding.bind_output(output_name, "cuda", device_id, element, tuple(out.shape), out.data_ptr())
        session.run_with_iobinding(binding)
        return out

    return forward


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
