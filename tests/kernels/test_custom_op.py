"""`resbench::conv_bn_act` as a PyTorch custom op (torch.library.triton_op) under torch.compile and
torch.export, on CPU.

What CPU can show (torch 2.13, Triton 3.9): the Triton interpreter cannot be traced (fake tensors have no
data), so while tracing on CPU the op's body takes its PyTorch fallback (same math: fp32 accumulation and
epilogue, one rounding). That is what torch.compile compiles here. The op's CUDA path is traced separately on
meta tensors, where `wrap_triton` turns the launch into Inductor's triton_kernel_wrapper HOP; compiling and
running that HOP needs a GPU (tests/kernels/test_gpu.py)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from kernels import fuse_model
from kernels.configs import TileConfig, forced_config
from kernels.conv_bn_act import _conv_bn_act_kernel, _split_k_epilogue_kernel, pack_weight
from resbench.models.random_init import random_batchnorm_
from resbench.models.resnet import BasicBlock, conv1x1

OP = torch.ops.resbench.conv_bn_act.default


def _block() -> nn.Module:
    torch.manual_seed(0)
    block = BasicBlock(8, 16, stride=2, downsample=nn.Sequential(conv1x1(8, 16, 2), nn.BatchNorm2d(16)))
    return random_batchnorm_(block)


def _x() -> torch.Tensor:
    return torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)


@pytest.mark.slow
def test_torch_compile_on_cpu_one_graph_with_the_op(no_interpreter):
    from torch._dynamo.testing import CompileCounterWithBackend

    block = _block()
    fused = fuse_model(block)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(fused, backend=counter, fullgraph=True)
    x = _x()
    with torch.no_grad():
        out, eager = compiled(x), block(x)
    assert counter.frame_count == 1
    ops = [n.target for n in counter.graphs[0].graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.resbench.conv_bn_act) == 2  # conv1 (+relu); conv2 + downsample + add + relu
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)  # fp32 fallback vs eager fp32: same math


def test_torch_export_keeps_the_op_as_a_node_and_runs_the_interpreter():
    """Exported under TRITON_INTERPRET=1: tracing used fake tensors, the exported module's calls run the
    interpreted Triton kernel on real tensors."""
    block = _block()
    fused = fuse_model(block)
    x = _x()
    program = torch.export.export(fused, (x,))
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count(OP) == 2 and not any("batch_norm" in str(t) for t in targets)
    with torch.no_grad():
        exported, eager = program.module()(x), block(x)
    torch.testing.assert_close(exported, eager, rtol=1e-4, atol=1e-4)


def test_torch_export_without_the_interpreter(no_interpreter):
    fused = fuse_model(_block())
    program = torch.export.export(fused, (_x(),))
    assert [n.target for n in program.graph.nodes if n.op == "call_function"].count(OP) == 2


def _captured_graph(fn, *args) -> torch.fx.GraphModule:
    from torch._functorch.aot_autograd import aot_function

    graphs = []

    def keep(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module

    out = aot_function(fn, fw_compiler=keep)(*args)
    return graphs[0], out


@pytest.mark.parametrize("split_k", [1, 4])
def test_cuda_path_traces_into_the_triton_kernel_on_meta_tensors(split_k, caplog):
    """The launcher's GPU branch (grid, config, constexprs, split-K workspace) traced without a GPU."""
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    # The HOP's mutation analysis compiles to TTIR for the current GPU target; without one it logs a
    # warning and treats every input as mutated (copies): harmless here.
    caplog.set_level(logging.ERROR, logger="torch._higher_order_ops.triton_kernel_wrap")
    meta = dict(device="meta")
    x = torch.empty(1, 64, 4, 4, **meta).contiguous(memory_format=torch.channels_last)
    weight = pack_weight(torch.empty(32, 64, 3, 3, **meta))
    scale, shift = torch.empty(32, **meta), torch.empty(32, **meta)
    residual = torch.empty(1, 32, 4, 4, **meta).contiguous(memory_format=torch.channels_last)

    def call(x, weight, scale, shift, residual):
        return OP(x, weight, scale, shift, residual, None, None, [1, 1], [1, 1], [1, 1], 1, True, "tf32")

    with forced_config(TileConfig(16, 16, 32, split_k=split_k)):
        graph, out = _captured_graph(call, x, weight, scale, shift, residual)
    assert out.shape == (1, 32, 4, 4) and out.is_contiguous(memory_format=torch.channels_last)
    launches = [n for n in graph.graph.nodes if n.op == "call_function" and "triton_kernel_wrapper" in str(n.target)]
    # num_warps / num_stages become a one-config Autotuner around the JITFunction
    wrappers = [kernel_side_table.get_kernel(n.kwargs["kernel_idx"]) for n in launches]
    assert [w.configs[0].num_warps for w in wrappers] == [4] * len(launches)
    kernels_launched = [w.fn for w in wrappers]
    expected = [_conv_bn_act_kernel] + ([_split_k_epilogue_kernel] if split_k > 1 else [])
    assert kernels_launched == expected
    constants = {**kernel_side_table.get_constant_args(launches[0].kwargs["constant_args_idx"]),
                 **launches[0].kwargs["kwargs"]}
    assert constants["SPLIT_K"] == split_k and constants["R"] == 3
    # with split-K the partial sums stay fp32 and the epilogue kernel adds the residual and applies the ReLU
    assert constants["HAS_RESIDUAL"] is constants["APPLY_RELU"] is (split_k == 1)
    if split_k > 1:
        epilogue = launches[1].kwargs["kwargs"]
        assert epilogue["HAS_RESIDUAL"] is epilogue["APPLY_RELU"] is True and epilogue["SPLIT_K"] == split_k
    assert constants["WIDEN_DOT"] is False and constants["BLOCK_K"] == 32 and constants["EVEN_C"] is True
    assert launches[0].kwargs["grid"] == [(1 * 2, split_k, 1)]  # 16 output pixels x 32 channels, 16x16 tiles
