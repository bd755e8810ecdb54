"""torch.compile (TorchInductor). Compilation is lazy in PyTorch, so `prepare` runs the first call itself:
`prepare_s` then holds the whole compile (Dynamo trace, Inductor codegen, autotuning for max-autotune,
CUDA-graph recording for reduce-overhead) and `first_call_s` the first steady call after it."""

from __future__ import annotations

from typing import Literal

import torch

from resbench.backends.base import Backend, BackendOptions, Forward, cast_model, register


class CompileOptions(BackendOptions):
    mode: Literal["default", "max-autotune", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    fullgraph: bool = False
    dynamic: bool | None = None  # None: PyTorch's automatic dynamic shapes; each case compiles one batch size


@register
class CompileBackend(Backend):
    name = "compile"
    description = "torch.compile with TorchInductor (modes: default, max-autotune, reduce-overhead)"
    Options = CompileOptions

    def available(self, device: torch.device) -> tuple[bool, str]:
        if not hasattr(torch, "compile"):
            return False, f"torch {torch.__version__} has no torch.compile; install torch>=2.4"
        return True, ""

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        options: CompileOptions = self.options(case)
        compiled = torch.compile(
            cast_model(model, case),
            mode=None if options.mode == "default" else options.mode,
            fullgraph=options.fullgraph,
            dynamic=options.dynamic,
        )
        compiled(example)  # triggers compilation inside prepare
        if example.is_cuda:
            torch.cuda.synchronize()
        return compiled
