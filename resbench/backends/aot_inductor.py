"""AOTInductor: ahead-of-time compilation of the model into a self-contained package (a shared library with
the weights), loaded and run from Python here as a deployment would from C++.

`torch.export.export` on the example (static shapes: one package per batch size, like the engine of a
TensorRT row), `torch._inductor.aoti_compile_and_package` into a `.pt2` in a temporary directory per case,
`torch._inductor.aoti_load_package`, one call. `prepare_s` holds all of it; export, compile and load
times and the package size are recorded. Inductor's on-disk caches apply as they do for `compile`.

No `cuda_graphs`: the AOTInductor runner is not documented as safe to capture, so resbench does not
capture it (the option is rejected with that reason)."""

from __future__ import annotations

import importlib.util
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import field_validator

from resbench.backends.base import Backend, BackendOptions, Forward, PrepareError, cast_model, register
from resbench.backends.onnx_export import first_line

NO_CAPTURE = ("aot-inductor is not captured in a CUDA graph by resbench: the AOTInductor runner is not "
              "documented as capture-safe; use cuda_graphs: false")


class AotInductorOptions(BackendOptions):
    max_autotune: bool = False  # Inductor's max_autotune (GEMM/conv template autotuning at compile time)
    cuda_graphs: bool | Literal["auto"] = False  # present only to say why it cannot be enabled

    @field_validator("cuda_graphs")
    @classmethod
    def _not_capturable(cls, v: bool | str) -> bool | str:
        if v is not False:
            raise ValueError(NO_CAPTURE)
        return v


@register
class AotInductorBackend(Backend):
    name = "aot-inductor"
    description = "torch.export + AOTInductor compile-and-package, loaded and run (static shapes)"
    Options = AotInductorOptions

    def available(self, device: torch.device) -> tuple[bool, str]:
        # a version check, not an import: importing torch._inductor takes seconds
        version = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
        if version < (2, 6) or importlib.util.find_spec("torch._inductor") is None:
            return False, (f"torch {torch.__version__} lacks AOTInductor packaging "
                           "(torch._inductor.aoti_compile_and_package); install torch>=2.6")
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        if case.device == "cuda" and case.timing.mode == "graph":
            return False, ("timing mode 'graph' captures the call in a CUDA graph, and resbench does not "
                           "capture the AOTInductor runner (not documented as capture-safe); "
                           "use timing mode device or e2e")
        return True, ""

    def numerics(self, case) -> dict[str, Any]:
        return {"inductor_max_autotune": self.options(case).max_autotune}

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        options: AotInductorOptions = self.options(case)
        self._artifacts = {}
        model = cast_model(model, case)
        t0 = time.perf_counter()
        try:
            exported = torch.export.export(model, (example,))
        except Exception as exc:
            raise PrepareError(f"torch.export failed: {first_line(exc)}") from exc
        export_s = time.perf_counter() - t0
        configs = {"max_autotune": True} if options.max_autotune else {}
        with tempfile.TemporaryDirectory(prefix="resbench-aoti-") as tmp:
            t0 = time.perf_counter()
            try:
                path = torch._inductor.aoti_compile_and_package(
                    exported, package_path=str(Path(tmp) / "model.pt2"), inductor_configs=configs)
            except Exception as exc:
                raise PrepareError(f"AOTInductor compile failed: {first_line(exc)}") from exc
            compile_s = time.perf_counter() - t0
            package_bytes = Path(path).stat().st_size
            t0 = time.perf_counter()
            runner = torch._inductor.aoti_load_package(path)  # extracts what it needs; the .pt2 may go
            load_s = time.perf_counter() - t0
        del exported
        t0 = time.perf_counter()
        try:
            runner(example)
        except Exception as exc:
            raise PrepareError(f"AOTInductor package failed on the example batch: {first_line(exc)}") from exc
        if example.is_cuda:
            torch.cuda.synchronize(example.device)
        self._artifacts = {
            "torch": torch.__version__,
            "export_s": export_s,
            "compile_s": compile_s,
            "load_s": load_s,
            "warmup_run_s": time.perf_counter() - t0,
            "package_bytes": package_bytes,
            "inductor_configs": configs,
        }
        return runner
