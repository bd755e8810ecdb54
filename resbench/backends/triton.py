"""resbench's own fused Triton kernels (`kernels/`): every conv -> BatchNorm (-> residual add) -> ReLU chain of
the model runs as one launch of `resbench::conv_bn_act`, a BN-ReLU in front of a conv (pre-activation ResNets,
DenseNet) as that launch's prologue, grouped convs (ResNeXt) too; the ResNet downsample branch rides in the
block's last kernel. Pooling and the classifier stay eager.

`prepare` (all inside `prepare_s`): fold BN in fp32 from the fp32 copy (`kernels.fuse_model`, which also packs
the weights), cast to the run dtype (the epilogue's scale and shift stay fp32), one forward inside
`kernels.autotuning()` (each distinct layer shape times its candidate tile configs, each cross-checked against
a PyTorch reference), one warm-up forward (every kernel variant compiled, and each layer's launch plan
cached: `kernels.conv_bn_act.run_cached`), then the CUDA-graph capture. `fp32` rows run exact-fp32 dots
(`ieee`: TF32 off, like the rest of resbench's fp32 rows); `tf32` rows run TF32 dots. On CPU the backend is
skipped: the Triton interpreter runs these kernels there for the tests, but it is a simulator, not something to
time. The module imports neither Triton nor `kernels` until
`prepare`, so listing backends stays cheap and works without a GPU.

`cuda_graphs` defaults to `auto` (captured on CUDA): without a graph a forward is 49 fused launches issued from
Python. Through the custom op each cost about 27 us of host work before its launch (dispatch, checks, config
key, argument binding; notes/gpu-audit.md item 6), 1.3 ms per ResNet-50 forward, more than the H200 needs for
the whole forward at batch 1 to 32, so such a row timed the host. The cached launch path now skips all but the
launch itself (208 -> 13 us per call on a loaded 2-core CPU, launch excluded), but Triton's own launch remains
per kernel; the graph replays the 49 launches with none of it. `cuda_graphs: false` measures the eager path.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import torch

from resbench.backends.base import Backend, BackendOptions, Forward, cast_model, register
from resbench.backends.cuda_graphs import CudaGraphSetting, graph_supported, maybe_capture, wants_graph

CPU_REASON = "the triton backend needs a CUDA GPU; the Triton interpreter is for tests, not timing"


class TritonOptions(BackendOptions):
    cuda_graphs: CudaGraphSetting = "auto"  # captured on CUDA (see the module docstring), plain on CPU
    fuse_downsample: bool = True  # False: the downsample 1x1 conv + BN as its own launch (option A)
    autotune: bool = True  # False: untuned default tiles (kernels/configs.py `default_config`)


def input_precision(dtype: str) -> str:
    """The dot precision of fp32 activations: TF32 only for `tf32` rows."""
    return "tf32" if dtype == "tf32" else "ieee"


@register
class TritonBackend(Backend):
    name = "triton"
    description = ("resbench fused Triton kernels: conv + folded BN + residual add + ReLU in one launch "
                   "(+ a BN-ReLU prologue, grouped convs)")
    Options = TritonOptions

    def available(self, device: torch.device) -> tuple[bool, str]:
        if torch.device(device).type != "cuda":
            return False, CPU_REASON
        if not torch.cuda.is_available():
            return False, "the triton backend needs a CUDA GPU, and torch sees none (CPU build or no driver)"
        if importlib.util.find_spec("triton") is None:
            return False, "the triton backend needs Triton; install it with `pip install triton`"
        if not hasattr(torch.library, "triton_op"):
            return False, f"the triton backend needs torch>=2.6 (torch.library.triton_op); this is {torch.__version__}"
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        if major < 8:
            return False, (f"the triton backend needs compute capability 8.0+ (bf16 and TF32 tensor cores); "
                           f"this GPU is {major}.{minor}")
        return True, ""

    def case_limits(self, case) -> tuple[bool, str]:
        return graph_supported(self.options(case).cuda_graphs, case.device, case.timing.mode)

    def numerics(self, case) -> dict[str, Any]:
        options: TritonOptions = self.options(case)
        numerics: dict[str, Any] = {"triton_fuse_downsample": options.fuse_downsample}
        if case.dtype in ("fp32", "tf32"):
            numerics["triton_fp32_dot"] = input_precision(case.dtype)
        return numerics

    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case) -> Forward:
        from kernels import FusedConvBnAct, autotuning, fuse_model

        options: TritonOptions = self.options(case)
        fused = fuse_model(model, fuse_downsample=options.fuse_downsample,
                           input_precision=input_precision(case.dtype))
        fused = cast_model(fused, case)
        modules = [m for m in fused.modules() if isinstance(m, FusedConvBnAct)]
        batchnorms_left = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return fused(x)

        tuned: dict[str, Any] = {}
        t0 = time.perf_counter()
        if options.autotune and example.is_cuda:
            with autotuning() as log:
                forward(example)
            torch.cuda.synchronize(example.device)
            tuned = {"tuned_problems": len(log.winners),
                     "rejected_configs": sum(len(r) for r in log.rejected.values())}
        tune_s = time.perf_counter() - t0
        forward(example)  # every kernel variant compiled and each layer's launch plan cached, before any capture
        if example.is_cuda:
            torch.cuda.synchronize(example.device)
        captured = wants_graph(options.cuda_graphs, example.device)
        self._artifacts = {"fused_convs": len(modules),
                           "fused_downsamples": sum(1 for m in modules if m.stride_ds),
                           "fused_prologues": sum(1 for m in modules if m.has_prologue),
                           "grouped_convs": sum(1 for m in modules if m.groups > 1),
                           "batchnorms_left": batchnorms_left, "autotune_s": round(tune_s, 3),
                           "cuda_graph": captured, **tuned}
        if example.is_cuda:
            self._artifacts["launch_plans"] = sum(len(m._plans) for m in modules)
        return maybe_capture(forward, example, options.cuda_graphs) if captured else forward
