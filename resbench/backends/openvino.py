"""OpenVINO: the torch.onnx export (for int8, the QDQ model the onnxruntime backend runs, made once per
group: shared_graph.py) compiled by OpenVINO for its CPU device (or an Intel GPU, `device: GPU`), with the
precision pinned to the row's.

- Precision: `INFERENCE_PRECISION_HINT` is always set: f32 for fp32 and int8 rows (an int8 row's
  unquantized ops stay fp32; its Q/DQ pairs decide what runs in int8), bf16 / f16 for bf16 / fp16 rows.
  Unpinned, OpenVINO runs an fp32 model in bf16 on CPUs with AVX512-BF16 or AMX (measured here, ResNet-18
  64 px: rel-L2 1.5e-2 against fp64 instead of 2e-6), so an "fp32" row would silently be a bf16 row. The
  compiled model's own precision and the per-op runtime precisions are read back; an fp32 row that would
  still run an op in bf16/f16, or an int8 row with no op in int8, fails instead of being timed.
- Performance hint: LATENCY at batch 1, THROUGHPUT otherwise (option `performance_hint`). THROUGHPUT
  splits the CPU into streams that each run one request (2 streams of 1 thread on 2 cores), so one
  request would use a fraction of the cores: the call splits the batch over
  OPTIMAL_NUMBER_OF_INFER_REQUESTS requests (the largest divisor of the batch up to that number), runs
  them asynchronously and concatenates the logits, as benchmark_app keeps several requests in flight.
- Static shapes: the model is reshaped to the per-request batch before compiling (like a TensorRT
  engine, one compile per batch size).
- Threads: INFERENCE_NUM_THREADS = torch.get_num_threads() (the run's thread policy), read in `prepare`
  and recorded in the row's numerics with the streams OpenVINO chose.
- Host memory: inputs are read in place (`share_inputs`); a bf16/fp16 row's input is cast to fp32 inside
  the call (the graph's interface stays fp32) and the logits cast back, both timed.

Installed with `pip install "resbench[openvino]"` (about 180 MB)."""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch

from resbench.backends.base import Backend, BackendOptions, Forward, PrepareError, register
from resbench.backends.onnx_export import first_line
from resbench.backends.onnx_quantize import QdqCalibration, int8_numerics
from resbench.backends.shared_graph import row_graph
from resbench.dtypes import is_quantized

INSTALL = 'pip install "resbench[openvino]"'
# The run precision -> INFERENCE_PRECISION_HINT; tf32 has no OpenVINO counterpart (NVIDIA tensor-core math).
PRECISION_HINTS: dict[str, str] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# ... and the device capability (OPTIMIZATION_CAPABILITIES) each needs.
CAPABILITIES: dict[str, str] = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16", "int8": "INT8"}
LOWER_PRECISIONS = ("bf16", "f16")  # runtime precisions an fp32 row must not contain
INTEGER_PRECISIONS = ("i8", "u8")   # ... at least one of which an int8 row must contain


class OpenVinoOptions(BackendOptions):
    device: Literal["CPU", "GPU"] = "CPU"  # GPU: an Intel GPU through OpenVINO's GPU plugin
    performance_hint: Literal["auto", "latency", "throughput"] = "auto"  # auto: latency at batch 1
    calibration: QdqCalibration = QdqCalibration()  # int8 rows only


def performance_hint(options: OpenVinoOptions, batch_size: int) -> str:
    if options.performance_hint == "auto":
        return "LATENCY" if batch_size == 1 else "THROUGHPUT"
    return options.performance_hint.upper()


def requests_per_call(batch_size: int, optimal_requests: int) -> int:
    """How many requests one call splits its batch over: the largest divisor of the batch that is at most
    OpenVINO's optimal number of requests (equal static shapes for every request)."""
    return max(n for n in range(1, max(1, min(batch_size, optimal_requests)) + 1) if batch_size % n == 0)


@register
class OpenVinoBackend(Backend):
    name = "openvino"
    description = "OpenVINO compiled model on the torch.onnx export (CPU; Intel GPU with device: GPU)"
    Options = OpenVinoOptions
    quantizes = True

    def __init__(self) -> None:
        super().__init__()
        self._numerics: dict[str, Any] = {}  # what the last compile chose (streams, threads, precision)

    def available(self, device: torch.device) -> tuple[bool, str]:
        missing = [m for m in ("openvino", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed; {INSTALL}"
        if torch.device(device).type != "cpu":
            return False, ("OpenVINO runs on CPUs and Intel GPUs with host tensors, not on a CUDA device; "
                           "run the suite on cpu (--device cpu)")
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        options: OpenVinoOptions = self.options(case)
        if case.dtype not in PRECISION_HINTS:
            return False, (f"OpenVINO has no {case.dtype} mode ({case.dtype} is NVIDIA tensor-core math); "
                           f"it runs {', '.join(PRECISION_HINTS)}")
        import openvino as ov

        core = ov.Core()
        if options.device not in core.available_devices:
            return False, (f"OpenVINO device {options.device} is not present here (devices: "
                           f"{', '.join(core.available_devices)})")
        capabilities = core.get_property(options.device, "OPTIMIZATION_CAPABILITIES")
        if CAPABILITIES[case.dtype] not in capabilities:
            return False, (f"OpenVINO's {options.device} device here has no {case.dtype} inference "
                           f"(OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})")
        return True, ""

    def numerics(self, case) -> dict[str, Any]:
        options: OpenVinoOptions = self.options(case)
        out = {"ov_inference_precision_hint": PRECISION_HINTS.get(case.dtype), **self._numerics}
        if is_quantized(case.dtype):
            out.update(int8_numerics(options.calibration))
        return out

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        import numpy as np
        import openvino as ov

        options: OpenVinoOptions = self.options(case)
        self._artifacts, self._numerics = {}, {}
        hint = performance_hint(options, case.batch_size)
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": PRECISION_HINTS[case.dtype],
                  "INFERENCE_NUM_THREADS": torch.get_num_threads()}  # the run's thread policy
        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="resbench-openvino-") as tmp:
            # the graph's interface stays fp32 for every row: the hint sets the compute precision
            graph = row_graph(case, model.float(), example.float(), Path(tmp), options.calibration)
            try:
                source = core.read_model(str(graph.path))
            except Exception as exc:
                raise PrepareError(f"OpenVINO could not read the ONNX graph: {first_line(exc)}") from exc
        shape = [case.batch_size, 3, case.image_size, case.image_size]
        t0 = time.perf_counter()
        compiled = _compile(core, source, shape, options.device, config)
        requests = 1
        if hint == "THROUGHPUT":
            optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            requests = requests_per_call(case.batch_size, optimal)
            if requests > 1:  # one request per stream, each on its share of the batch
                compiled = _compile(core, source, [case.batch_size // requests, *shape[1:]], options.device, config)
        compile_s = time.perf_counter() - t0
        executed = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        runtime_precisions = _runtime_precisions(compiled)
        self._numerics = {
            "ov_execution_precision": executed,
            "ov_performance_hint": hint,
            "ov_num_streams": int(compiled.get_property("NUM_STREAMS")),
            "ov_inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "ov_requests_per_call": requests,
        }
        _check_precision(case.dtype, PRECISION_HINTS[case.dtype], executed, runtime_precisions)

        infer_requests = [compiled.create_infer_request() for _ in range(requests)]

        def forward(x: torch.Tensor) -> torch.Tensor:
            host = x.float().contiguous().numpy()  # ONNX graphs take NCHW; fp32 interface for every row
            if requests == 1:
                infer_requests[0].infer({0: host}, share_inputs=True)
                logits = np.array(infer_requests[0].get_output_tensor(0).data)  # the request reuses its buffer
            else:
                for request, chunk in zip(infer_requests, np.split(host, requests), strict=True):
                    request.start_async({0: chunk}, share_inputs=True)
                for request in infer_requests:
                    request.wait()
                logits = np.concatenate([request.get_output_tensor(0).data for request in infer_requests])
            return torch.from_numpy(logits).to(x.dtype)

        t0 = time.perf_counter()
        try:
            forward(example)
        except Exception as exc:
            raise PrepareError(f"OpenVINO failed on the example batch: {first_line(exc)}") from exc
        self._artifacts = {
            "openvino": ov.__version__,
            "device": options.device,
            "device_name": core.get_property(options.device, "FULL_DEVICE_NAME"),
            **graph.artifacts(),
            "compile_s": compile_s,
            "warmup_run_s": time.perf_counter() - t0,
            "inference_num_threads": self._numerics["ov_inference_num_threads"],  # the run's thread policy
            "runtime_precisions": runtime_precisions,
        }
        return forward


def _compile(core, source, shape: list[int], device: str, config: dict[str, Any]):
    """Compile a static-shape copy of `source` (reshape works in place, so copy first)."""
    model = source.clone()
    model.reshape(shape)
    try:
        return core.compile_model(model, device, config)
    except Exception as exc:
        raise PrepareError(f"OpenVINO could not compile the model for {device}: {first_line(exc)}") from exc


def _runtime_precisions(compiled) -> dict[str, int]:
    """How many executed ops run in each precision ('f32': 47, 'u8': 25, 'i8': 21, ...), from the runtime
    (execution) graph of the compiled model."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            counts[info["runtimePrecision"].astype(str)] += 1
    return dict(sorted(counts.items()))


def _check_precision(dtype: str, requested: str, executed: str, runtime: dict[str, int]) -> None:
    """Refuse to time a row that would not run in its precision."""
    if executed != requested:
        raise PrepareError(f"OpenVINO compiled the {dtype} row at inference precision {executed}, not the "
                           f"requested {requested}")
    if dtype == "fp32" and any(p in runtime for p in LOWER_PRECISIONS):
        lower = {p: n for p, n in runtime.items() if p in LOWER_PRECISIONS}
        raise PrepareError(f"OpenVINO would run ops of the fp32 row in lower precision: {lower}")
    if is_quantized(dtype) and not any(p in runtime for p in INTEGER_PRECISIONS):
        raise PrepareError(f"OpenVINO runs no op of the {dtype} row in int8 (runtime precisions: {runtime}); "
                           f"its Q/DQ pairs were not applied")
