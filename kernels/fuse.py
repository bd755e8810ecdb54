"""`fuse_model`: an inference copy of a CNN in which every conv -> BatchNorm (-> add) (-> ReLU) chain runs on
the fused kernel. The original model is not touched.

How: `torch.fx.symbolic_trace`, then a rewrite of graph *nodes* (never of modules by call site: a ResNet block
calls one `relu` module twice). Two passes:

1. Residual adds. `add(bn(conv(x)), other)` (optionally followed by a ReLU) becomes one fused call with `other`
   as the residual. When `other` is itself `bn_ds(conv1x1_ds(z))` (a ResNet downsample) it is fused into the
   same kernel (option B: its weight pre-multiplied by its BN scale, its shift merged); the separate-launch
   path (option A) remains as a runtime fallback when shapes do not line up.
2. Remaining `conv -> bn (-> relu)` chains: the stem, Bottleneck conv1/conv2, BasicBlock conv1, any CNN's.

Grouped convolutions (ResNeXt's 3x3) and convolutions the kernel does not cover (non-zero padding modes,
asymmetric 'same' padding) take another path: BN folded exactly into the conv's weight and bias, the conv
left to cuDNN, the ReLU left as is. Either way no BatchNorm module remains on a fused path. A model that does
not trace is fused child by child. Matching rules: conv and BN each called once in the graph, the conv's
only user is the BN, the BN's only user is the add/ReLU, BN in eval mode with running statistics.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from kernels.conv_bn_act import INPUT_PRECISIONS, PlanCache, pack_downsample_weight, pack_weight, run_cached
from kernels.fold import fold_bn, fold_into_weight

_FP32_BUFFERS = ("scale", "shift", "shift_fused", "shift_ds", "scale_ds")


class FusedConvBnAct(nn.Module):
    """conv + folded BN (+ downsample) (+ residual) (+ ReLU) on `torch.ops.resbench.conv_bn_act`.

    Buffers: `weight` packed [R, S, C, K] in the model dtype; `scale`, `shift` fp32 (they stay fp32 under
    `.half()` / `.to(dtype)`). With a downsample branch: `weight_ds` [C_ds, K] pre-multiplied by the
    downsample BN scale, `shift_ds` its BN shift, `shift_fused` = shift + shift_ds."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], relu: bool,
                 downsample: tuple[torch.Tensor, torch.Tensor, int] | None = None,
                 input_precision: str = "tf32"):
        super().__init__()
        if input_precision not in INPUT_PRECISIONS:
            raise ValueError(f"input_precision {input_precision!r} is not allowed; one of: tf32, ieee")
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1]
        self.kernel_size = tuple(weight.shape[2:])
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.relu = relu
        self.input_precision = input_precision
        self._plans = PlanCache()  # eager CUDA launches by input shape (kernels.conv_bn_act.run_cached)
        self.register_buffer("weight", pack_weight(weight.detach()))
        self.register_buffer("scale", scale.detach().to(torch.float32).clone())
        self.register_buffer("shift", shift.detach().to(torch.float32).clone())
        self.stride_ds = 0
        if downsample is not None:
            weight_ds, shift_ds, self.stride_ds = downsample
            self.register_buffer("weight_ds", pack_downsample_weight(weight_ds.detach()))
            self.register_buffer("shift_ds", shift_ds.detach().to(torch.float32).clone())
            self.register_buffer("shift_fused", (self.shift.double() + self.shift_ds.double()).float())
            self.register_buffer("scale_ds", torch.ones_like(self.shift_ds))  # weight_ds is pre-scaled

    @classmethod
    def from_conv_bn(cls, conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm, *, relu: bool,
                     downsample: tuple[nn.Conv2d, nn.modules.batchnorm._BatchNorm] | None = None,
                     input_precision: str = "tf32") -> FusedConvBnAct:
        weight, scale, shift = fold_bn(conv, bn)
        ds = None
        if downsample is not None:
            weight_ds, scale_ds, shift_ds = fold_bn(*downsample)
            ds = (fold_into_weight(weight_ds, scale_ds), shift_ds, downsample[0].stride[0])
        return cls(weight, scale, shift, stride=conv.stride, padding=_int_padding(conv), dilation=conv.dilation,
                   relu=relu, downsample=ds, input_precision=input_precision)

    def _apply(self, fn, recurse=True):
        # Let dtype casts reach the weights but not the fp32 epilogue vectors (notes/kernels.md §12, rule 2).
        kept = {name: self._buffers.pop(name) for name in _FP32_BUFFERS if name in self._buffers}
        try:
            super()._apply(fn, recurse)
        finally:
            for name, tensor in kept.items():
                self._buffers[name] = tensor.to(device=fn(tensor).device)
        for name in ("weight", "weight_ds"):  # packed layouts: a memory_format conversion must not stick
            if name in self._buffers:
                self._buffers[name] = self._buffers[name].contiguous()
        self._plans.clear()
        return self

    def output_size(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        (r, s), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        p = (x.shape[2] + 2 * ph - dh * (r - 1) - 1) // sh + 1
        q = (x.shape[3] + 2 * pw - dw * (s - 1) - 1) // sw + 1
        return (x.shape[0], self.out_channels, p, q)

    def _call(self, x, scale, shift, residual=None, x_ds=None, weight_ds=None, relu=None):
        relu = self.relu if relu is None else relu
        out = run_cached(self._plans, x, self.weight, scale, shift, residual, x_ds, weight_ds, self.stride,
                         self.padding, self.dilation, max(self.stride_ds, 1), relu, self.input_precision)
        if out is not None:  # eager CUDA: the cached launch (minimal host work per call)
            return out
        return torch.ops.resbench.conv_bn_act(
            x, self.weight, scale, shift, residual, x_ds, weight_ds, list(self.stride), list(self.padding),
            list(self.dilation), max(self.stride_ds, 1), relu, self.input_precision)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                downsample_input: torch.Tensor | None = None) -> torch.Tensor:
        out_size = self.output_size(x)
        if downsample_input is not None:
            n, _, h_ds, w_ds = downsample_input.shape
            stride = self.stride_ds
            if (n, (h_ds - 1) // stride + 1, (w_ds - 1) // stride + 1) == (out_size[0], *out_size[2:]):
                return self._call(x, self.scale, self.shift_fused, x_ds=downsample_input, weight_ds=self.weight_ds)
            # Option A: the downsample as its own launch, then the general residual path below.
            c_ds = self.weight_ds.shape[0]
            residual = torch.ops.resbench.conv_bn_act(
                downsample_input, self.weight_ds.view(1, 1, c_ds, self.out_channels), self.scale_ds,
                self.shift_ds, None, None, None, [stride, stride], [0, 0], [1, 1], 1, False, self.input_precision)
        if residual is not None and (tuple(residual.shape) != out_size or residual.dtype != x.dtype):
            # Broadcasting or mixed-dtype add: eager semantics after the fused conv + BN.
            out = self._call(x, self.scale, self.shift, relu=False) + residual
            return torch.relu(out) if self.relu else out
        return self._call(x, self.scale, self.shift, residual=residual)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, relu={self.relu}")
        if self.stride_ds:
            text += f", downsample=(1x1, stride={self.stride_ds}, in_channels={self.weight_ds.shape[0]})"
        return text


# ---------------------------------------------------------------------------------------------------------
# Graph matching helpers

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


def _int_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """conv.padding as two symmetric ints, or None where the kernel cannot express it."""
    if conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return None if any(t % 2 for t in total) else (total[0] // 2, total[1] // 2)
    return tuple(conv.padding)


def _kernel_can_run(conv: nn.Conv2d) -> bool:
    return conv.groups == 1 and _int_padding(conv) is not None


class _Graph:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    def module(self, node: object, kind: type) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module" and isinstance(self.modules.get(node.target), kind):
            return self.modules[node.target]
        return None

    def conv_bn(self, bn_node: object) -> fx.Node | None:
        """The conv node feeding `bn_node` when the pair is a foldable, exclusively used chain."""
        bn = self.module(bn_node, nn.BatchNorm2d)
        if bn is None or len(bn_node.args) != 1 or bn_node.kwargs or self.calls[bn_node.target] != 1:
            return None
        conv_node = bn_node.args[0]
        conv = self.module(conv_node, nn.Conv2d)
        if conv is None or len(conv_node.users) != 1 or len(conv_node.args) != 1 or conv_node.kwargs:
            return None
        if self.calls[conv_node.target] != 1 or bn.running_mean is None or bn.training:
            return None
        if bn.num_features != conv.out_channels:
            return None
        return conv_node

    def is_relu(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.modules.get(node.target), nn.ReLU)
        if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
            return len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
        return node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1

    def add_operands(self, node: fx.Node) -> tuple[object, object] | None:
        if node.kwargs or len(node.args) != 2:
            return None
        if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
            return node.args
        if node.op == "call_method" and node.target in ("add", "add_"):
            return node.args
        return None

    def in_place(self, node: fx.Node) -> bool:
        return node.target in (operator.iadd, "add_")

    def single_relu_user(self, node: fx.Node) -> fx.Node | None:
        if len(node.users) == 1:
            user = next(iter(node.users))
            if self.is_relu(user) and user.args[0] is node:
                return user
        return None

    def is_downsample(self, bn_node: fx.Node) -> bool:
        conv = self.modules[self.conv_bn(bn_node).target]
        return (conv.kernel_size == (1, 1) and _int_padding(conv) == (0, 0) and conv.dilation == (1, 1)
                and conv.stride[0] == conv.stride[1] and conv.groups == 1)


def _set_module(gm: fx.GraphModule, qualified_name: str, module: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, child, module)


def _erase(graph: fx.Graph, *nodes: fx.Node) -> None:
    for node in nodes:  # in reverse dependency order: users first
        graph.erase_node(node)


def _fuse_residual_adds(g: _Graph, fuse_downsample: bool, input_precision: str) -> int:
    graph, fused = g.gm.graph, 0
    for add in list(graph.nodes):
        if add.op not in ("call_function", "call_method"):
            continue
        operands = g.add_operands(add)
        if operands is None or not all(isinstance(o, fx.Node) for o in operands) or operands[0] is operands[1]:
            continue
        chains = [o for o in operands
                  if len(o.users) == 1 and g.conv_bn(o) is not None
                  and _kernel_can_run(g.modules[g.conv_bn(o).target])]
        if g.in_place(add):  # the add writes into its first operand: only fine when that is the BN output
            chains = [o for o in chains if o is operands[0]]
        if not chains:
            continue
        main, downsample = chains[0], None
        if len(chains) == 2 and fuse_downsample:
            eligible = [c for c in chains if g.is_downsample(c)]
            if len(eligible) == 1:
                downsample = eligible[0]
            elif len(eligible) == 2:  # e.g. a Bottleneck's 1x1 conv3 and its downsample: the branch point wins
                first, second = (len(g.conv_bn(c).args[0].users) for c in chains)
                downsample = chains[0] if first > second else chains[1]
            if downsample is not None:
                main = chains[1] if downsample is chains[0] else chains[0]
        other = operands[1] if main is operands[0] else operands[0]
        relu = g.single_relu_user(add)
        tail = relu or add
        conv_node = g.conv_bn(main)
        ds_pair = None
        if downsample is not None:
            ds_conv_node = g.conv_bn(downsample)
            ds_pair = (g.modules[ds_conv_node.target], g.modules[downsample.target])
        module = FusedConvBnAct.from_conv_bn(g.modules[conv_node.target], g.modules[main.target],
                                             relu=relu is not None, downsample=ds_pair,
                                             input_precision=input_precision)
        _set_module(g.gm, conv_node.target, module)
        args = (conv_node.args[0], None, ds_conv_node.args[0]) if downsample is not None else (conv_node.args[0], other)
        with graph.inserting_before(tail):
            new = graph.call_module(conv_node.target, args=args)
        tail.replace_all_uses_with(new)
        _erase(graph, *([relu] if relu else []), add, main, conv_node)
        if downsample is not None:
            _erase(graph, downsample, ds_conv_node)
        fused += 1
    return fused


def _fuse_conv_bn_chains(g: _Graph, input_precision: str) -> int:
    graph, fused = g.gm.graph, 0
    for bn_node in list(graph.nodes):
        conv_node = g.conv_bn(bn_node)
        if conv_node is None:
            continue
        conv, bn = g.modules[conv_node.target], g.modules[bn_node.target]
        if not _kernel_can_run(conv):
            # Grouped (ResNeXt) or unsupported padding: BN folded into the conv, which stays on cuDNN.
            _set_module(g.gm, conv_node.target, _folded_conv(conv, bn))
            bn_node.replace_all_uses_with(conv_node)
            _erase(graph, bn_node)
            fused += 1
            continue
        relu = g.single_relu_user(bn_node)
        tail = relu or bn_node
        module = FusedConvBnAct.from_conv_bn(conv, bn, relu=relu is not None, input_precision=input_precision)
        _set_module(g.gm, conv_node.target, module)
        with graph.inserting_before(tail):
            new = graph.call_module(conv_node.target, args=(conv_node.args[0],))
        tail.replace_all_uses_with(new)
        _erase(graph, *([relu] if relu else []), bn_node, conv_node)
        fused += 1
    return fused


def _folded_conv(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    weight, scale, shift = fold_bn(conv, bn)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(fold_into_weight(weight, scale), requires_grad=False)
    folded.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=False)
    return folded


def _fuse_traced(gm: fx.GraphModule, fuse_downsample: bool, input_precision: str) -> int:
    count = _fuse_residual_adds(_Graph(gm), fuse_downsample, input_precision)
    count += _fuse_conv_bn_chains(_Graph(gm), input_precision)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return count


def _fuse_module(module: nn.Module, fuse_downsample: bool, input_precision: str) -> nn.Module:
    if not any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        return module
    try:
        gm = fx.symbolic_trace(module)
    except Exception:  # any tracing failure (data-dependent control flow...): fuse the children instead
        for name, child in list(module.named_children()):
            setattr(module, name, _fuse_module(child, fuse_downsample, input_precision))
        return module
    _fuse_traced(gm, fuse_downsample, input_precision)
    return gm


def fuse_model(model: nn.Module, *, fuse_downsample: bool = True, input_precision: str = "tf32") -> nn.Module:
    """An inference copy of eval-mode `model` whose conv -> BN (-> add) (-> ReLU) chains run fused.

    BN is folded in fp32 from the model's fp32 buffers: fuse the fp32 model, then cast the result
    (`.half()`, `.to(torch.bfloat16)`; the epilogue's scale and shift stay fp32). `fuse_downsample=False`
    keeps ResNet downsample branches as their own launch. `input_precision` ("tf32" or "ieee") is used for
    fp32 activations. The returned module is usually a `torch.fx.GraphModule`."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse_model needs an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("fuse_model needs an eval-mode model (BN must use running statistics); call model.eval()")
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision {input_precision!r} is not allowed; one of: tf32, ieee")
    fused = _fuse_module(copy.deepcopy(model), fuse_downsample, input_precision)
    return fused.eval()
