"""PyTorch eager: the baseline every speedup is measured against.

`cuda_graphs` captures the eager forward after warm-up (cudnn.benchmark's algorithm search happens in
the warm-up calls, outside the graph); replay then launches the whole network as one graph."""

from __future__ import annotations

import torch

from resbench.backends.base import Backend, BackendOptions, Forward, cast_model, register
from resbench.backends.cuda_graphs import CudaGraphSetting, graph_supported, maybe_capture, wants_graph


class EagerOptions(BackendOptions):
    cuda_graphs: CudaGraphSetting = False


@register
class EagerBackend(Backend):
    name = "eager"
    description = "PyTorch eager mode (cuDNN / oneDNN kernels, one launch per op)"
    Options = EagerOptions

    def available(self, device: torch.device) -> tuple[bool, str]:
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        return graph_supported(self.options(case).cuda_graphs, case.device, case.timing.mode)

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        options: EagerOptions = self.options(case)
        model = cast_model(model, case)
        captured = wants_graph(options.cuda_graphs, example.device)
        self._artifacts = {"cuda_graph": captured}
        if not captured:
            return model

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # no autograd state recorded into the graph
                return model(x)

        return maybe_capture(forward, example, options.cuda_graphs)
