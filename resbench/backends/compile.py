"""torch.compile (TorchInductor). Compilation is lazy in PyTorch, so `prepare` runs the first call itself:
`prepare_s` then holds the whole compile (Dynamo trace, Inductor codegen, autotuning for max-autotune,
CUDA-graph recording for reduce-overhead) and `first_call_s` the first steady call after it.

`cuda_graphs` captures the compiled call with resbench's own capture, after compilation and autotuning,
for the modes that do not already use CUDA graphs (default, max-autotune-no-cudagraphs). reduce-overhead
and max-autotune replay Inductor's cudagraph trees themselves, so `cuda_graphs` must stay false there.

Each row's artifacts say whether Inductor's on-disk caches served the compile (`compile_cache`: hit, miss,
mixed); `cold_start: true` disables them so `prepare_s` is a cold compile (inductor_cache.py)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ValidationInfo, field_validator

from resbench.backends import inductor_cache
from resbench.backends.base import Backend, BackendOptions, Forward, cast_model, register
from resbench.backends.cuda_graphs import CudaGraphSetting, graph_supported, maybe_capture, wants_graph

MODES_WITH_CUDA_GRAPHS = ("reduce-overhead", "max-autotune")  # Inductor's own cudagraph trees


class CompileOptions(BackendOptions):
    mode: Literal["default", "max-autotune", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    fullgraph: bool = False
    dynamic: bool | None = None  # None: PyTorch's automatic dynamic shapes; each case compiles one batch size
    cuda_graphs: CudaGraphSetting = False
    cold_start: bool = False  # compile with Inductor's caches disabled: prepare_s is a cold compile

    @field_validator("cuda_graphs")
    @classmethod
    def _not_twice(cls, v: CudaGraphSetting, info: ValidationInfo) -> CudaGraphSetting:
        mode = info.data.get("mode")
        if v is not False and mode in MODES_WITH_CUDA_GRAPHS:
            raise ValueError(f"mode {mode} already replays CUDA graphs (Inductor's cudagraph trees), so "
                             "cuda_graphs must be false with it; for resbench's capture use mode default or "
                             "max-autotune-no-cudagraphs")
        return v


@register
class CompileBackend(Backend):
    name = "compile"
    description = "torch.compile with TorchInductor (modes: default, max-autotune, reduce-overhead)"
    Options = CompileOptions

    def available(self, device: torch.device) -> tuple[bool, str]:
        if not hasattr(torch, "compile"):
            return False, f"torch {torch.__version__} has no torch.compile; install torch>=2.4"
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        return graph_supported(self.options(case).cuda_graphs, case.device, case.timing.mode)

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        options: CompileOptions = self.options(case)
        self._artifacts = {}
        with inductor_cache.tracked(options.cold_start) as cache:
            compiled = torch.compile(
                cast_model(model, case),
                mode=None if options.mode == "default" else options.mode,
                fullgraph=options.fullgraph,
                dynamic=options.dynamic,
            )
            compiled(example)  # triggers compilation (and max-autotune's tuning) inside prepare
            if example.is_cuda:
                torch.cuda.synchronize()
        captured = wants_graph(options.cuda_graphs, example.device)
        inductor_graphs = options.mode in MODES_WITH_CUDA_GRAPHS and example.is_cuda
        self._artifacts = {"cuda_graph": captured or inductor_graphs, **cache}
        return maybe_capture(compiled, example, options.cuda_graphs) if captured else compiled
