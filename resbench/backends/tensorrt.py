"""TensorRT: the model exported with torch.onnx (the same exporter as the onnxruntime backend), parsed by
TensorRT's ONNX parser and built into an engine with the builder API, then run through an execution
context on torch tensors (no host copies).

Why this route and not Torch-TensorRT's dynamo path: the builder API gives direct, documented control of
everything a row must pin and record (precision flags, TF32, builder optimization level, workspace, the
timing cache, the serialized engine whose size is the `engine_bytes` artifact), with no partitioning
fallback that could silently run part of the model in PyTorch; and the graph TensorRT consumes is the
same ONNX file ONNX Runtime runs, which CI (no GPU, no TensorRT) exports, checks and runs on CPU.

- Precision by builder flags on an fp32 graph: fp32 (TF32 cleared), tf32 (TF32), fp16 (FP16), bf16
  (BF16). The network's input and output are set to the run dtype, so the engine reads and writes the
  same tensors as every other backend. TensorRT may still pick higher-precision kernels per layer.
- int8: the INT8 flag (TF32 cleared; layers without an int8 kernel stay fp32) with an entropy
  calibrator (IInt8EntropyCalibrator2; `calibration: {method: minmax}` for IInt8MinMaxCalibrator) over the
  seeded calibration images every int8 backend uses (resbench/calibration.py), fed as device batches of
  the case's shape. This is TensorRT's implicit quantization, deprecated since TensorRT 10.1 in favour of
  explicit Q/DQ graphs but still supported; calibration runs inside the build, so `build_s` includes it.
- Static shapes: one optimization profile with min = opt = max = the case's input shape.
- A timing cache per TensorRT version and GPU model, under the resbench cache directory, is loaded before
  and saved after every build, so later cases (and runs) reuse the kernel timings; its path is recorded.
- `cuda_graphs`: an engine's `execute_async_v3` may be captured (TensorRT's developer guide, "CUDA
  Graphs"; trtexec --useCudaGraph); capture happens after the first, uncaptured call.

Installed with `pip install "resbench[tensorrt]"`; needs an NVIDIA GPU."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from resbench import calibration
from resbench.backends.base import Backend, BackendOptions, Forward, PrepareError, register
from resbench.backends.cache_dir import cache_dir, slug
from resbench.backends.cuda_graphs import CudaGraphSetting, graph_supported, maybe_capture
from resbench.backends.onnx_export import OnnxExport, export_onnx, first_line
from resbench.dtypes import is_quantized
from resbench.parity import in_batches

INSTALL = 'pip install "resbench[tensorrt]"'
# Builder flags per run precision; TF32 is on by default in a builder config, so every plan clears it first.
BUILDER_FLAGS: dict[str, tuple[str, ...]] = {
    "fp32": (), "tf32": ("TF32",), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8",),
}
IO_DTYPES: dict[str, str] = {"fp32": "FLOAT", "tf32": "FLOAT", "fp16": "HALF", "bf16": "BF16",  # trt.DataType
                             "int8": "FLOAT"}  # an int8 engine takes and returns fp32, like every int8 row
CALIBRATORS: dict[str, str] = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}


class TensorRTCalibration(calibration.CalibrationOptions):
    """int8 rows: TensorRT's calibrator (entropy: IInt8EntropyCalibrator2, TensorRT's recommendation for
    CNNs; minmax: IInt8MinMaxCalibrator) over `samples` seeded images."""

    method: Literal["entropy", "minmax"] = "entropy"


class TensorRTOptions(BackendOptions):
    builder_optimization_level: int = Field(3, ge=0, le=5)  # TensorRT's default is 3
    workspace_mb: int | None = Field(None, ge=1)  # None: TensorRT's default (the device's memory)
    timing_cache: str | None = None  # a file path; None: <cache dir>/tensorrt/timing-<trt>-<gpu>.cache
    cuda_graphs: CudaGraphSetting = False
    calibration: TensorRTCalibration = TensorRTCalibration()  # int8 rows only


@dataclass(frozen=True)
class EnginePlan:
    """Everything the builder is told for one case: computed without TensorRT, applied in `prepare`."""

    builder_flags: tuple[str, ...]
    io_dtype: str
    input_shape: tuple[int, ...]
    optimization_level: int
    workspace_bytes: int | None
    timing_cache: Path


def engine_plan(case, options: TensorRTOptions, trt_version: str, gpu_name: str) -> EnginePlan:
    """The builder settings for `case`: flags and IO type from the dtype, a static profile, the cache path."""
    timing_cache = (Path(options.timing_cache) if options.timing_cache else
                    cache_dir() / "tensorrt" / f"timing-{slug(trt_version)}-{slug(gpu_name)}.cache")
    return EnginePlan(
        builder_flags=BUILDER_FLAGS[case.dtype],
        io_dtype=IO_DTYPES[case.dtype],
        input_shape=(case.batch_size, 3, case.image_size, case.image_size),
        optimization_level=options.builder_optimization_level,
        workspace_bytes=options.workspace_mb << 20 if options.workspace_mb else None,
        timing_cache=timing_cache,
    )


def export_for_engine(model: torch.nn.Module, example: torch.Tensor, path: Path) -> OnnxExport:
    """The graph the builder consumes: the fp32 model, batch axis dynamic (the profile pins it). Precision
    is the builder's job, so the graph stays fp32 whatever the run dtype."""
    return export_onnx(model.float(), example.float(), path)


@register
class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "TensorRT engine built from the torch.onnx export with the builder API (static shapes)"
    Options = TensorRTOptions
    quantizes = True

    def available(self, device: torch.device) -> tuple[bool, str]:
        missing = [m for m in ("tensorrt", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        kind = torch.device(device).type
        if missing:
            needs_gpu = "" if kind == "cuda" else f"; it also needs an NVIDIA GPU (this run is on {kind})"
            return False, f"TensorRT backend needs {', '.join(missing)}: {INSTALL}{needs_gpu}"
        if kind != "cuda":
            return False, f"TensorRT needs an NVIDIA GPU; this run is on {kind}"
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        return graph_supported(self.options(case).cuda_graphs, case.device, case.timing.mode)

    def numerics(self, case) -> dict[str, Any]:
        options: TensorRTOptions = self.options(case)
        return {
            "trt_builder_flags": list(BUILDER_FLAGS[case.dtype]),
            "trt_tf32": "TF32" in BUILDER_FLAGS[case.dtype],
            "trt_io_dtype": IO_DTYPES[case.dtype],
            "trt_builder_optimization_level": options.builder_optimization_level,
            **(calibration.numerics("int8, per output channel (TensorRT implicit quantization)",
                                    "int8, per tensor, static", CALIBRATORS[options.calibration.method],
                                    options.calibration.samples) if is_quantized(case.dtype) else {}),
        }

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        import tensorrt as trt

        options: TensorRTOptions = self.options(case)
        self._artifacts = {}
        device = example.device
        plan = engine_plan(case, options, trt.__version__, torch.cuda.get_device_name(device))
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        with tempfile.TemporaryDirectory(prefix="resbench-trt-") as tmp:
            exported = export_for_engine(model, example, Path(tmp) / "model.onnx")
            if not parser.parse_from_file(str(exported.path)):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise PrepareError(f"TensorRT's ONNX parser rejected the graph: {errors}")

        config = builder.create_builder_config()
        config.builder_optimization_level = plan.optimization_level
        if plan.workspace_bytes is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        config.clear_flag(trt.BuilderFlag.TF32)
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        network_input, network_output = network.get_input(0), network.get_output(0)
        network_input.dtype = getattr(trt.DataType, plan.io_dtype)
        network_output.dtype = getattr(trt.DataType, plan.io_dtype)
        profile = builder.create_optimization_profile()
        profile.set_shape(network_input.name, plan.input_shape, plan.input_shape, plan.input_shape)
        config.add_optimization_profile(profile)
        calibrator = None
        if is_quantized(case.dtype):
            images = calibration.case_images(case, options.calibration)
            feed = CalibrationFeed([b.to(device) for b in in_batches(images, case.batch_size)])
            calibrator = make_calibrator(trt, options.calibration.method, feed)
            config.int8_calibrator = calibrator  # the builder keeps a reference; so does this frame until built
            config.set_calibration_profile(profile)
        cache_status = _load_timing_cache(config, plan.timing_cache)

        t0 = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - t0
        if serialized is None:
            raise PrepareError("TensorRT engine build failed (build_serialized_network returned None; "
                               "TensorRT's log above says why)")
        cache_bytes = _save_timing_cache(config, plan.timing_cache)

        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise PrepareError("TensorRT could not deserialize the engine it just built")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise PrepareError(f"expected an engine with one input and one output; got inputs {inputs}, "
                               f"outputs {outputs}")
        input_name, output_name = inputs[0], outputs[0]
        context.set_input_shape(input_name, plan.input_shape)
        output_shape = tuple(context.get_tensor_shape(output_name))
        output_dtype = _torch_dtype(trt, engine.get_tensor_dtype(output_name))

        def forward(x: torch.Tensor) -> torch.Tensor:
            x = x.contiguous()  # the engine's input is linear NCHW
            out = torch.empty(output_shape, dtype=output_dtype, device=x.device)
            context.set_tensor_address(input_name, x.data_ptr())
            context.set_tensor_address(output_name, out.data_ptr())
            if not context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 returned False (TensorRT's log says why)")
            return out

        forward.keepalive = (logger, runtime, engine, context)  # the context must not outlive its engine
        try:
            forward(example)
            torch.cuda.synchronize(device)
        except Exception as exc:
            raise PrepareError(f"TensorRT engine failed on the example batch: {first_line(exc)}") from exc
        self._artifacts = {
            "tensorrt": trt.__version__,
            **exported.artifacts(),
            "build_s": build_s,
            "engine_bytes": serialized.nbytes,
            "builder_flags": list(plan.builder_flags),
            "io_dtype": plan.io_dtype,
            "profile_shape": list(plan.input_shape),
            "timing_cache": str(plan.timing_cache),
            "timing_cache_loaded": cache_status,
            "timing_cache_bytes": cache_bytes,
            **({"calibrator": CALIBRATORS[options.calibration.method], "calibration_batches": len(feed.batches)}
               if calibrator is not None else {}),
        }
        return maybe_capture(forward, example, options.cuda_graphs)


class CalibrationFeed:
    """The calibration batches as TensorRT's calibrator reads them: the device pointer of one batch per
    `get_batch` call, then None (calibration done). Plain Python, so CI tests it without TensorRT."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        if not batches:
            raise ValueError("calibration needs at least one batch")
        self.batches = [b.float().contiguous() for b in batches]  # the engine's input: linear NCHW fp32
        self.batch_size = int(self.batches[0].shape[0])
        self._next = 0

    def next_pointers(self) -> list[int] | None:
        if self._next >= len(self.batches):
            return None
        batch = self.batches[self._next]
        self._next += 1
        return [int(batch.data_ptr())]


def make_calibrator(trt, method: str, feed: CalibrationFeed):
    """A TensorRT int8 calibrator (`CALIBRATORS[method]`) reading `feed`; no calibration cache (every build
    calibrates, so `build_s` is comparable across runs)."""
    base = getattr(trt, CALIBRATORS[method])

    class Calibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # the pybind11 base must be initialised explicitly
            self.feed = feed

        def get_batch_size(self) -> int:
            return self.feed.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            return self.feed.next_pointers()

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache) -> None:
            return None

    return Calibrator()


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.BF16: torch.bfloat16}
    if dtype not in table:
        raise PrepareError(f"engine output has TensorRT type {dtype}; expected FLOAT, HALF or BF16")
    return table[dtype]


def _load_timing_cache(config, path: Path) -> str:
    """Attach the timing cache at `path` (or a new one) to `config`; say which."""
    blob = path.read_bytes() if path.is_file() else b""
    status = f"{len(blob)} bytes from {path}" if blob else "new (no cache file yet)"
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):  # False: do not ignore a device mismatch
        config.set_timing_cache(config.create_timing_cache(b""), False)
        status = "new (the cache file was made on another device and was not used)"
    return status


def _save_timing_cache(config, path: Path) -> int:
    """Write the (grown) timing cache back atomically; return its size in bytes."""
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)
