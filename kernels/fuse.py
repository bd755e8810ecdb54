"""`fuse_model`: an inference copy of a CNN in which its convolutions, and the BatchNorms and ReLUs around them,
run on the fused kernel. The original model is not touched.

How: `torch.fx.symbolic_trace`, then rewrites of graph *nodes* (never of modules by call site: a ResNet block
calls one `relu` module twice), matched on the graph's shape, never on module classes. Five passes, in order:

1. Residual adds. `add(bn(conv(x)), other)` or `add(conv(x), other)` (optionally followed by a ReLU) becomes one
   fused call with `other` as the residual (a pre-activation unit's last conv has no BN). When `other` is itself
   `bn_ds(conv1x1_ds(z))` (a ResNet downsample) it is fused into the same kernel (option B: its weight
   pre-multiplied by its BN scale, its shift merged); the separate-launch path (option A) remains as a runtime
   fallback when shapes do not line up.
2. `conv -> bn (-> relu)` chains: the BN folds into the epilogue (the stem, VGG, GoogLeNet's parallel branches,
   DenseNet's 1x1 bottleneck, grouped ResNeXt convs).
3. `bn (-> relu) -> conv` chains whose BN is still there: the BN becomes the kernel's *prologue*, applied to each
   activation tile as it is loaded (pre-activation ResNets, DenseNet: BN-ReLU before the conv, where no folding
   into weights is possible because the ReLU sits between, and zero padding belongs to the post-ReLU tensor).
   Every user of the BN(-ReLU) output must be a conv the kernel runs (a pre-activation projection shortcut and
   the unit's first conv share one); the input may be anything, a concatenation included (DenseNet).
4. Remaining convolutions (no BN on either side, e.g. DenseNet's 3x3) run on the kernel with scale 1 and their
   bias as the shift, a following ReLU fused.
5. Remaining BatchNorms (no conv on either side, e.g. DenseNet's `norm5`, a pre-activation ResNet's final BN)
   become `ChannelAffine`: the same per-channel scale and shift in fp32, with a following ReLU.

Convolutions the kernel does not cover (non-zero padding modes, asymmetric 'same' padding) take another path: a
following BN folded exactly into the conv's weight and bias, the conv left to cuDNN. After fusion no BatchNorm
module remains, except in convs called more than once (left as they are) and in a model whose BN layers lack
running statistics. A model that does not trace is fused child by child. Matching rules: conv and BN each
called once in the graph, the conv's only user is the BN (pass 2), the BN's only user is the add/ReLU/convs.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from kernels.conv_bn_act import INPUT_PRECISIONS, PlanCache, pack_downsample_weight, pack_weight, run_cached
from kernels.fold import bn_affine, conv_affine, fold_bn, fold_into_weight

Prologue = tuple[torch.Tensor, torch.Tensor, bool]  # per-input-channel scale, shift (fp32), ReLU after them


def _apply_keeping_fp32(module: nn.Module, fn, recurse: bool, names: tuple[str, ...]) -> None:
    """nn.Module._apply, except that the buffers `names` keep fp32 (only their device follows): dtype casts
    reach weights, never the epilogue/prologue vectors (notes/kernels.md §12, rule 2)."""
    kept = {name: module._buffers.pop(name) for name in names if module._buffers.get(name) is not None}
    try:
        nn.Module._apply(module, fn, recurse)
    finally:
        for name, tensor in kept.items():
            module._buffers[name] = tensor.to(device=fn(tensor).device)


class FusedConvBnAct(nn.Module):
    """[prologue: relu(x * prologue_scale + prologue_shift)] -> conv + folded BN (+ downsample) (+ residual)
    (+ ReLU) on `torch.ops.resbench.conv_bn_act`.

    Buffers: `weight` packed [R, S, C, K] ([R, S, C_WINDOW, K] when grouped: kernels.conv_bn_act.pack_weight)
    in the model dtype; `scale`, `shift` fp32 (they stay fp32
    under `.half()` / `.to(dtype)`). With a downsample branch: `weight_ds` [C_ds, K] pre-multiplied by the
    downsample BN scale, `shift_ds` its BN shift, `shift_fused` = shift + shift_ds. With a prologue (a BN, and
    optionally its ReLU, in front of the conv): `prologue_scale`, `prologue_shift` fp32 of length C."""

    _fp32_buffers = ("scale", "shift", "shift_fused", "shift_ds", "scale_ds", "prologue_scale", "prologue_shift")

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], relu: bool,
                 downsample: tuple[torch.Tensor, torch.Tensor, int] | None = None,
                 input_precision: str = "tf32", groups: int = 1, prologue: Prologue | None = None):
        super().__init__()
        if input_precision not in INPUT_PRECISIONS:
            raise ValueError(f"input_precision {input_precision!r} is not allowed; one of: tf32, ieee")
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"groups {groups} must be >= 1 and divide the {weight.shape[0]} output channels")
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1] * groups
        self.kernel_size = tuple(weight.shape[2:])
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups = groups
        self.relu = relu
        self.input_precision = input_precision
        self._plans = PlanCache()  # eager CUDA launches by input shape (kernels.conv_bn_act.run_cached)
        self.register_buffer("weight", pack_weight(weight.detach(), groups))
        self.register_buffer("scale", scale.detach().to(torch.float32).clone())
        self.register_buffer("shift", shift.detach().to(torch.float32).clone())
        self.stride_ds = 0
        if downsample is not None:
            weight_ds, shift_ds, self.stride_ds = downsample
            self.register_buffer("weight_ds", pack_downsample_weight(weight_ds.detach()))
            self.register_buffer("shift_ds", shift_ds.detach().to(torch.float32).clone())
            self.register_buffer("shift_fused", (self.shift.double() + self.shift_ds.double()).float())
            self.register_buffer("scale_ds", torch.ones_like(self.shift_ds))  # weight_ds is pre-scaled
        self.register_buffer("prologue_scale", None)
        self.register_buffer("prologue_shift", None)
        self.prologue_relu = False
        if prologue is not None:
            self.set_prologue(*prologue)

    @classmethod
    def from_conv_bn(cls, conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm | None, *, relu: bool,
                     downsample: tuple[nn.Conv2d, nn.modules.batchnorm._BatchNorm] | None = None,
                     input_precision: str = "tf32") -> FusedConvBnAct:
        """From a conv and the BN after it; `bn=None`: a conv with no BN (scale 1, its bias as the shift)."""
        weight, scale, shift = fold_bn(conv, bn) if bn is not None else conv_affine(conv)
        ds = None
        if downsample is not None:
            weight_ds, scale_ds, shift_ds = fold_bn(*downsample)
            ds = (fold_into_weight(weight_ds, scale_ds), shift_ds, downsample[0].stride[0])
        return cls(weight, scale, shift, stride=conv.stride, padding=_int_padding(conv), dilation=conv.dilation,
                   relu=relu, downsample=ds, input_precision=input_precision, groups=conv.groups)

    def set_prologue(self, scale: torch.Tensor, shift: torch.Tensor, relu: bool) -> None:
        """Apply relu?(x * scale + shift) per input channel to every activation tile as it is loaded (a BN and
        its ReLU in front of the conv); the conv's zero padding stays zero (it pads the transformed tensor)."""
        for name, vec in (("prologue scale", scale), ("prologue shift", shift)):
            if vec.shape != (self.in_channels,):
                raise ValueError(f"{name} must have shape ({self.in_channels},) (one per input channel), "
                                 f"got {tuple(vec.shape)}")
        self.prologue_scale = scale.detach().to(device=self.weight.device, dtype=torch.float32).clone()
        self.prologue_shift = shift.detach().to(device=self.weight.device, dtype=torch.float32).clone()
        self.prologue_relu = bool(relu)
        self._plans.clear()

    @property
    def has_prologue(self) -> bool:
        return self.prologue_scale is not None

    def _apply(self, fn, recurse=True):
        _apply_keeping_fp32(self, fn, recurse, self._fp32_buffers)
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
                         self.padding, self.dilation, max(self.stride_ds, 1), relu, self.input_precision,
                         self.prologue_scale, self.prologue_shift, self.prologue_relu, self.groups)
        if out is not None:  # eager CUDA: the cached launch (minimal host work per call)
            return out
        return torch.ops.resbench.conv_bn_act(
            x, self.weight, scale, shift, residual, x_ds, weight_ds, list(self.stride), list(self.padding),
            list(self.dilation), max(self.stride_ds, 1), relu, self.input_precision,
            self.prologue_scale, self.prologue_shift, self.prologue_relu, self.groups)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                downsample_input: torch.Tensor | None = None) -> torch.Tensor:
        if residual is None and downsample_input is None:  # most convs: no shape to check on the per-call path
            return self._call(x, self.scale, self.shift)
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
                self.shift_ds, None, None, None, [stride, stride], [0, 0], [1, 1], 1, False, self.input_precision,
                None, None, False, 1)
        if residual is not None and (tuple(residual.shape) != out_size or residual.dtype != x.dtype):
            # Broadcasting or mixed-dtype add: eager semantics after the fused conv + BN.
            out = self._call(x, self.scale, self.shift, relu=False) + residual
            return torch.relu(out) if self.relu else out
        return self._call(x, self.scale, self.shift, residual=residual)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, relu={self.relu}")
        if self.groups > 1:
            text += f", groups={self.groups}"
        if self.has_prologue:
            text += f", prologue=(bn{', relu' if self.prologue_relu else ''})"
        if self.stride_ds:
            text += f", downsample=(1x1, stride={self.stride_ds}, in_channels={self.weight_ds.shape[0]})"
        return text


class ChannelAffine(nn.Module):
    """relu?(x * scale + shift) per channel: an eval-mode BatchNorm (and its ReLU) with no conv to fuse into.
    Computed in fp32 from fp32 `scale`/`shift` (kept fp32 under dtype casts), one rounding to x's dtype."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, relu: bool):
        super().__init__()
        self.register_buffer("scale", scale.detach().to(torch.float32).clone())
        self.register_buffer("shift", shift.detach().to(torch.float32).clone())
        self.relu = relu

    def _apply(self, fn, recurse=True):
        _apply_keeping_fp32(self, fn, recurse, ("scale", "shift"))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = torch.addcmul(self.shift.view(shape), x.float(), self.scale.view(shape))
        return (torch.relu(y) if self.relu else y).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.scale.numel()}, relu={self.relu}"


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
    return _int_padding(conv) is not None


class _Graph:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    def module(self, node: object, kind: type) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module" and isinstance(self.modules.get(node.target), kind):
            return self.modules[node.target]
        return None

    def single_call(self, node: object, kind: type) -> nn.Module | None:
        """The module of `node` when it is a `kind` module called once in the graph, on one argument."""
        module = self.module(node, kind)
        if module is None or len(node.args) != 1 or node.kwargs or self.calls[node.target] != 1:
            return None
        return module

    def eval_bn(self, node: object) -> nn.BatchNorm2d | None:
        """The BN of `node` when it is the only call of an eval-mode BN with running statistics, on one argument."""
        bn = self.single_call(node, nn.BatchNorm2d)
        return None if bn is None or bn.running_mean is None or bn.training else bn

    def single_conv(self, node: object) -> nn.Conv2d | None:
        """The conv of `node` when it is the only call of a conv the kernel runs, on one argument."""
        conv = self.single_call(node, nn.Conv2d)
        return conv if conv is not None and _kernel_can_run(conv) else None

    def conv_bn(self, bn_node: object) -> fx.Node | None:
        """The conv node feeding `bn_node` when the pair is a foldable, exclusively used chain."""
        bn = self.eval_bn(bn_node)
        if bn is None:
            return None
        conv_node = bn_node.args[0]
        conv = self.single_call(conv_node, nn.Conv2d)
        if conv is None or len(conv_node.users) != 1 or bn.num_features != conv.out_channels:
            return None
        return conv_node

    def residual_chain(self, node: object) -> fx.Node | None:
        """The conv node of an add operand the kernel can take as its main branch, `bn(conv(x))` or a bare
        `conv(x)` (a pre-activation unit's last conv), used by the add only."""
        if not isinstance(node, fx.Node) or len(node.users) != 1:
            return None
        conv_node = self.conv_bn(node)
        if conv_node is not None:
            return conv_node if _kernel_can_run(self.modules[conv_node.target]) else None
        return node if self.single_conv(node) is not None else None

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

    def is_downsample(self, operand: fx.Node) -> bool:
        """`operand` is bn(conv1x1(z)), the shape of a ResNet downsample that option B fuses."""
        conv_node = self.conv_bn(operand)
        if conv_node is None:
            return False
        conv = self.modules[conv_node.target]
        return (conv.kernel_size == (1, 1) and _int_padding(conv) == (0, 0) and conv.dilation == (1, 1)
                and conv.stride[0] == conv.stride[1] and conv.groups == 1)


def _set_module(gm: fx.GraphModule, qualified_name: str, module: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, child, module)


def _erase(graph: fx.Graph, *nodes: fx.Node) -> None:
    for node in nodes:  # in reverse dependency order: users first
        graph.erase_node(node)


def _absorb(graph: fx.Graph, node: fx.Node, relu: fx.Node | None) -> None:
    """`node`'s module now applies the ReLU that followed it: route the ReLU's users to `node`, drop the ReLU."""
    if relu is not None:
        relu.replace_all_uses_with(node)
        _erase(graph, relu)


def _main_and_downsample(g: _Graph, chains: list[fx.Node], fuse_downsample: bool) -> tuple[fx.Node, fx.Node | None]:
    """Which add operand runs as the kernel's main branch, and which (if any) rides along as option B."""
    if len(chains) == 1:
        return chains[0], None
    eligible = [c for c in chains if g.is_downsample(c)] if fuse_downsample else []
    if len(eligible) == 1:
        side = eligible[0]
    else:
        # both or neither could ride along (e.g. a Bottleneck's 1x1 conv3 and its downsample): the one reading a
        # branch point (its input has other users) is the side branch
        first, second = (len(g.residual_chain(c).args[0].users) for c in chains)
        side = chains[0] if first > second else chains[1]
    main = chains[1] if side is chains[0] else chains[0]
    return main, (side if eligible else None)


def _fuse_residual_add(g: _Graph, add: fx.Node, fuse_downsample: bool, input_precision: str) -> None:
    if add.op not in ("call_function", "call_method"):
        return
    operands = g.add_operands(add)
    if operands is None or not all(isinstance(o, fx.Node) for o in operands) or operands[0] is operands[1]:
        return
    chains = [o for o in operands if g.residual_chain(o) is not None]
    if g.in_place(add):  # the add writes into its first operand: only fine when that is the conv/BN output
        chains = [o for o in chains if o is operands[0]]
    if not chains:
        return
    graph = g.gm.graph
    main, downsample = _main_and_downsample(g, chains, fuse_downsample)
    other = operands[1] if main is operands[0] else operands[0]
    relu = g.single_relu_user(add)
    tail = relu or add
    conv_node = g.residual_chain(main)
    bn = g.modules[main.target] if main is not conv_node else None
    ds_pair = None
    if downsample is not None:
        ds_conv_node = g.conv_bn(downsample)
        ds_pair = (g.modules[ds_conv_node.target], g.modules[downsample.target])
    module = FusedConvBnAct.from_conv_bn(g.modules[conv_node.target], bn, relu=relu is not None,
                                         downsample=ds_pair, input_precision=input_precision)
    _set_module(g.gm, conv_node.target, module)
    args = (conv_node.args[0], None, ds_conv_node.args[0]) if downsample is not None else (conv_node.args[0], other)
    with graph.inserting_before(tail):
        new = graph.call_module(conv_node.target, args=args)
    tail.replace_all_uses_with(new)
    _erase(graph, *([relu] if relu else []), add, *([main] if bn is not None else []), conv_node)
    if downsample is not None:
        _erase(graph, downsample, ds_conv_node)


def _fuse_conv_bn_chain(g: _Graph, bn_node: fx.Node, input_precision: str) -> None:
    conv_node = g.conv_bn(bn_node)
    if conv_node is None:
        return
    graph = g.gm.graph
    conv, bn = g.modules[conv_node.target], g.modules[bn_node.target]
    if not _kernel_can_run(conv):
        # Unsupported padding: BN folded into the conv, which stays on cuDNN.
        _set_module(g.gm, conv_node.target, _folded_conv(conv, bn))
        bn_node.replace_all_uses_with(conv_node)
        _erase(graph, bn_node)
        return
    relu = g.single_relu_user(bn_node)
    tail = relu or bn_node
    module = FusedConvBnAct.from_conv_bn(conv, bn, relu=relu is not None, input_precision=input_precision)
    _set_module(g.gm, conv_node.target, module)
    with graph.inserting_before(tail):
        new = graph.call_module(conv_node.target, args=(conv_node.args[0],))
    tail.replace_all_uses_with(new)
    _erase(graph, *([relu] if relu else []), bn_node, conv_node)


def _takes_prologue(g: _Graph, node: fx.Node, source: fx.Node, channels: int) -> bool:
    """`node`, a user of `source` (a BN(-ReLU) output with `channels` channels), can load it through a prologue:
    a fused conv (from passes 1-2) or a plain conv, called once, reading `source` as its main input only."""
    fused = g.module(node, FusedConvBnAct)
    if fused is not None:
        return (g.calls[node.target] == 1 and not fused.has_prologue and node.args[0] is source
                and source not in node.args[1:] and not node.kwargs and fused.in_channels == channels)
    conv = g.single_conv(node)
    return conv is not None and conv.in_channels == channels


def _fuse_prologue(g: _Graph, bn_node: fx.Node, input_precision: str) -> None:
    bn = g.eval_bn(bn_node)
    if bn is None:
        return
    relu = g.single_relu_user(bn_node)
    source = relu or bn_node
    users = list(source.users)
    if not users or not all(_takes_prologue(g, user, source, bn.num_features) for user in users):
        return
    scale, shift = bn_affine(bn)
    for user in users:
        module = g.module(user, FusedConvBnAct)
        if module is None:  # a conv with no BN after it: scale 1, its bias as the shift
            module = FusedConvBnAct.from_conv_bn(g.modules[user.target], None, relu=False,
                                                 input_precision=input_precision)
            _set_module(g.gm, user.target, module)
            g.modules[user.target] = module
        module.set_prologue(scale, shift, relu is not None)
        user.args = (bn_node.args[0], *user.args[1:])
    _erase(g.gm.graph, *([relu] if relu else []), bn_node)


def _fuse_lone_conv(g: _Graph, conv_node: fx.Node, input_precision: str) -> None:
    conv = g.single_conv(conv_node)
    if conv is None:
        return
    relu = g.single_relu_user(conv_node)
    _set_module(g.gm, conv_node.target,
                FusedConvBnAct.from_conv_bn(conv, None, relu=relu is not None, input_precision=input_precision))
    _absorb(g.gm.graph, conv_node, relu)


def _replace_lone_batchnorm(g: _Graph, bn_node: fx.Node) -> None:
    bn = g.eval_bn(bn_node)
    if bn is None:
        return
    relu = g.single_relu_user(bn_node)
    _set_module(g.gm, bn_node.target, ChannelAffine(*bn_affine(bn), relu=relu is not None))
    _absorb(g.gm.graph, bn_node, relu)


def _folded_conv(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    weight, scale, shift = fold_bn(conv, bn)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(fold_into_weight(weight, scale), requires_grad=False)
    folded.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=False)
    return folded


def _run_pass(gm: fx.GraphModule, rewrite: Callable[..., None], *options: object) -> None:
    """One pass: `rewrite(graph, node, *options)` at every node the graph had when the pass began, on a fresh
    view of its modules (as the previous pass left them)."""
    g = _Graph(gm)
    for node in list(gm.graph.nodes):
        rewrite(g, node, *options)


def _fuse_traced(gm: fx.GraphModule, fuse_downsample: bool, input_precision: str) -> None:
    _run_pass(gm, _fuse_residual_add, fuse_downsample, input_precision)
    _run_pass(gm, _fuse_conv_bn_chain, input_precision)
    _run_pass(gm, _fuse_prologue, input_precision)
    _run_pass(gm, _fuse_lone_conv, input_precision)
    _run_pass(gm, _replace_lone_batchnorm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()


def _fuse_module(module: nn.Module, fuse_downsample: bool, input_precision: str) -> nn.Module:
    if not any(isinstance(m, nn.BatchNorm2d | nn.Conv2d) for m in module.modules()):
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
    """An inference copy of eval-mode `model` whose convolutions run on the fused kernel together with the
    BatchNorms and ReLUs around them (after: epilogue, before: prologue) and their residual adds.

    BN is folded in fp32 from the model's fp32 buffers: fuse the fp32 model, then cast the result
    (`.half()`, `.to(torch.bfloat16)`; the epilogue's and prologue's scale and shift stay fp32).
    `fuse_downsample=False` keeps ResNet downsample branches as their own launch. `input_precision` ("tf32"
    or "ieee") is used for fp32 activations. The returned module is usually a `torch.fx.GraphModule`."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse_model needs an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("fuse_model needs an eval-mode model (BN must use running statistics); call model.eval()")
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision {input_precision!r} is not allowed; one of: tf32, ieee")
    fused = _fuse_module(copy.deepcopy(model), fuse_downsample, input_precision)
    return fused.eval()
