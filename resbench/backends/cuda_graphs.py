"""The `cuda_graphs: true | false | auto` option shared by every backend whose call can be captured
(eager, compile default, triton). Capture happens at the end of `prepare`, after warm-up and any
autotuning, so no tuning launch or lazy compilation lands inside the graph.

`auto` captures on CUDA and runs plain on CPU; `true` on a CPU case is an error the runner reports as a
skipped row. The graph's static input is the runner's timing tensor itself (the `example` given to
prepare), so a timed replay copies nothing; any other input (the parity batch) is copied in first."""

from __future__ import annotations

from typing import Literal

import torch

from resbench.backends.base import Forward

CudaGraphSetting = bool | Literal["auto"]
WARMUP_CALLS = 3  # on a side stream before capture, as torch.cuda.graphs recommends


class GraphCaptureError(RuntimeError):
    """The backend's call cannot be captured (host sync, CPU tensor, dynamic allocation...)."""


NEEDS_CUDA = "cuda_graphs: true needs a CUDA device; use cuda_graphs: auto or false on CPU"


def graph_supported(setting: CudaGraphSetting, device: str, timing_mode: str = "device") -> tuple[bool, str]:
    """For a backend's `case_limits(case)`, known before any work: `cuda_graphs: true` on a CPU case, and a
    captured backend under `timing.mode: graph` (which captures the call itself: a graph replay inside
    another capture), are skips."""
    if setting is True and device != "cuda":
        return False, NEEDS_CUDA
    if setting is not False and device == "cuda" and timing_mode == "graph":
        return False, ("timing mode 'graph' already captures each call in a CUDA graph; use cuda_graphs: false "
                       "with it, or timing mode device to time this backend's own graph replay")
    return True, ""


def wants_graph(setting: CudaGraphSetting, device: torch.device | str) -> bool:
    is_cuda = torch.device(device).type == "cuda"
    if setting == "auto":
        return is_cuda
    if setting and not is_cuda:
        raise GraphCaptureError(NEEDS_CUDA)
    return bool(setting)


def capture(fn: Forward, example: torch.Tensor) -> Forward:
    """Warm `fn` up on a side stream, capture one call on `example`, return a replaying callable."""
    static_input = example
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_output = fn(static_input)
    except Exception as exc:
        raise GraphCaptureError(f"CUDA-graph capture failed: {str(exc).splitlines()[0]}") from exc

    def replay(x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() != static_input.data_ptr():
            static_input.copy_(x)
        graph.replay()
        return static_output

    replay.graph = graph  # keep the graph (and its memory pool) alive with the callable
    return replay


def maybe_capture(fn: Forward, example: torch.Tensor, setting: CudaGraphSetting) -> Forward:
    return capture(fn, example) if wants_graph(setting, example.device) else fn
