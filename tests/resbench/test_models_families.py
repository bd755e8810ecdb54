"""The non-ResNet built-ins (DenseNet, VGG-16-BN, GoogLeNet) and the pre-activation ResNets: torchvision's
state_dict layout written out independently here from torchvision's architecture, its released-checkpoint
quirks (DenseNet's legacy keys, GoogLeNet's auxiliary heads, pre-0.4.1 files without `num_batches_tracked`),
the pre-activation parameter count from the paper's layer table, seeded weights with calibrated BN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.fx

from resbench.models import ModelSpec, build_model, construct, model_cost
from resbench.models.googlenet import GoogLeNet
from resbench.models.preact_resnet import preact_resnet18

Layout = dict[str, tuple[int, ...]]  # state_dict key -> shape


def _bn(layout: Layout, prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        layout[f"{prefix}.{name}"] = (channels,)
    layout[f"{prefix}.num_batches_tracked"] = ()


def densenet_layout(growth: int, blocks: tuple[int, ...], init: int, legacy: bool = False) -> Layout:
    """torchvision DenseNet; `legacy`: the key names of its released checkpoints ('norm.1', no
    num_batches_tracked: saved before PyTorch 0.4.1)."""
    layout: Layout = {"features.conv0.weight": (init, 3, 7, 7)}
    _bn(layout, "features.norm0", init)
    features = init
    for b, count in enumerate(blocks, start=1):
        for i in range(count):
            prefix = f"features.denseblock{b}.denselayer{i + 1}"
            cin = features + i * growth
            _bn(layout, f"{prefix}.norm1", cin)
            layout[f"{prefix}.conv1.weight"] = (4 * growth, cin, 1, 1)
            _bn(layout, f"{prefix}.norm2", 4 * growth)
            layout[f"{prefix}.conv2.weight"] = (growth, 4 * growth, 3, 3)
        features += count * growth
        if b != len(blocks):
            _bn(layout, f"features.transition{b}.norm", features)
            layout[f"features.transition{b}.conv.weight"] = (features // 2, features, 1, 1)
            features //= 2
    _bn(layout, "features.norm5", features)
    layout["classifier.weight"], layout["classifier.bias"] = (1000, features), (1000,)
    if legacy:
        old = {}
        for key, shape in layout.items():
            if key.endswith("num_batches_tracked"):
                continue
            for module in ("norm1", "norm2", "conv1", "conv2"):
                key = key.replace(f".{module}.", f".{module[:-1]}.{module[-1]}.")
            old[key] = shape
        layout = old
    return layout


def vgg16_bn_layout() -> Layout:
    layout: Layout = {}
    index, cin = 0, 3
    for entry in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if entry == "M":
            index += 1
            continue
        layout[f"features.{index}.weight"], layout[f"features.{index}.bias"] = (entry, cin, 3, 3), (entry,)
        _bn(layout, f"features.{index + 1}", entry)
        index, cin = index + 3, entry
    for i, (out, inp) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096)), strict=True):
        layout[f"classifier.{i}.weight"], layout[f"classifier.{i}.bias"] = (out, inp), (out,)
    return layout


def googlenet_layout(aux: bool) -> Layout:
    """torchvision GoogLeNet; `aux`: with the training-only heads its released checkpoint carries."""
    layout: Layout = {}

    def basic(prefix: str, cin: int, cout: int, k: int) -> None:
        layout[f"{prefix}.conv.weight"] = (cout, cin, k, k)
        _bn(layout, f"{prefix}.bn", cout)

    basic("conv1", 3, 64, 7)
    basic("conv2", 64, 64, 1)
    basic("conv3", 64, 192, 3)
    modules = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
               "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
               "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
               "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
               "5b": (832, 384, 192, 384, 48, 128, 128)}
    for name, (cin, c1, c3r, c3, c5r, c5, pool) in modules.items():
        p = f"inception{name}"
        basic(f"{p}.branch1", cin, c1, 1)
        basic(f"{p}.branch2.0", cin, c3r, 1)
        basic(f"{p}.branch2.1", c3r, c3, 3)
        basic(f"{p}.branch3.0", cin, c5r, 1)
        basic(f"{p}.branch3.1", c5r, c5, 3)
        basic(f"{p}.branch4.1", cin, pool, 1)
    if aux:
        for head, cin in (("aux1", 512), ("aux2", 528)):
            basic(f"{head}.conv", cin, 128, 1)
            layout[f"{head}.fc1.weight"], layout[f"{head}.fc1.bias"] = (1024, 2048), (1024,)
            layout[f"{head}.fc2.weight"], layout[f"{head}.fc2.bias"] = (1000, 1024), (1000,)
    layout["fc.weight"], layout["fc.bias"] = (1000, 1024), (1000,)
    return layout


LAYOUTS = {
    "densenet121": lambda: densenet_layout(32, (6, 12, 24, 16), 64),
    "densenet161": lambda: densenet_layout(48, (6, 12, 36, 24), 96),
    "densenet169": lambda: densenet_layout(32, (6, 12, 32, 32), 64),
    "densenet201": lambda: densenet_layout(32, (6, 12, 48, 32), 64),
    "vgg16_bn": vgg16_bn_layout,
    "googlenet": lambda: googlenet_layout(aux=False),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_state_dict_is_torchvision_layout(name: str) -> None:
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in construct(ModelSpec(name)).state_dict().items()}
    expected = LAYOUTS[name]()
    assert sorted(own) == sorted(expected)
    assert own == expected


def _write(layout: Layout, path: Path, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(90 * 5000, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("legacy", [False, True], ids=["current-keys", "released-checkpoint-keys"])
def test_torchvision_densenet_checkpoint_loads_unchanged(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "densenet121.pth"
    written = _write(densenet_layout(32, (6, 12, 24, 16), 64, legacy=legacy), path, seed=1)
    model = build_model(ModelSpec("densenet121", weights=str(path)))
    loaded = model.state_dict()
    key = "features.denseblock3.denselayer7.conv2.weight"
    source = key.replace(".conv2.", ".conv.2.") if legacy else key
    assert torch.equal(loaded[key], written[source])
    assert torch.equal(loaded["features.denseblock4.denselayer16.norm1.running_var"],
                       written["features.denseblock4.denselayer16.norm.1.running_var" if legacy
                               else "features.denseblock4.denselayer16.norm1.running_var"])
    assert torch.equal(loaded["classifier.weight"], written["classifier.weight"])
    assert len(loaded) == len(densenet_layout(32, (6, 12, 24, 16), 64))


def test_torchvision_googlenet_checkpoint_with_aux_heads_loads(tmp_path: Path) -> None:
    path = tmp_path / "googlenet.pth"
    written = _write(googlenet_layout(aux=True), path, seed=2)
    model = build_model(ModelSpec("googlenet", weights=str(path)))
    loaded = model.state_dict()
    assert not any(k.startswith(("aux1.", "aux2.")) for k in loaded)
    for key in ("conv1.conv.weight", "inception4e.branch3.1.bn.running_mean", "fc.bias"):
        assert torch.equal(loaded[key], written[key]), key
    assert model.transform_input is False and model.aux_logits is False


def test_googlenet_transform_input_is_torchvisions() -> None:
    """transform_input maps ImageNet-normalised inputs to the [-1, 1] scaling of the original model."""
    model = GoogLeNet(transform_input=True).eval()
    x = torch.randn(1, 3, 8, 8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    torch.testing.assert_close(model._transform_input(x), (pixels - 0.5) / 0.5)
    assert torch.equal(GoogLeNet()._transform_input(x), x)


def preact_param_count(bottleneck: bool, blocks: tuple[int, int, int, int]) -> int:
    """Parameters of the pre-activation ResNet from its definition: He et al. 2015's Table 1 convolutions,
    one BN (2 parameters per channel) before each conv of a unit, a bias-free 1x1 projection where a unit
    changes shape, a final BN, the 1000-way fc."""
    total = 3 * 64 * 7 * 7  # stem conv, no BN of its own
    inplanes = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            if bottleneck:
                out = 4 * planes
                total += 2 * inplanes + inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
                total += planes * out
            else:
                out = planes
                total += 2 * inplanes + 9 * inplanes * planes + 2 * planes + 9 * planes * planes
            if stride != 1 or inplanes != out:
                total += inplanes * out
            inplanes = out
    return total + 2 * inplanes + inplanes * 1000 + 1000


@pytest.mark.parametrize("name, bottleneck, blocks, resnet_gmac", [
    ("preact_resnet18", False, (2, 2, 2, 2), 1.814),
    ("preact_resnet50", True, (3, 4, 6, 3), 4.089),
])
def test_preact_counts_follow_the_layer_table(name: str, bottleneck: bool, blocks, resnet_gmac: float) -> None:
    with torch.device("meta"):
        cost = model_cost(construct(ModelSpec(name)), 224)
    assert cost.params == preact_param_count(bottleneck, blocks)
    # the convolutions are torchvision's resnet18 / resnet50 ones (its published `_ops`): only BNs moved
    assert cost.gflops / 2 == pytest.approx(resnet_gmac, abs=0.0006)


def test_preact_unit_structure() -> None:
    model = preact_resnet18()
    assert not hasattr(model, "bn1")  # the stem has no BN-ReLU of its own
    block = model.layer2[0]
    assert [name for name, _ in block.named_children()] == ["bn1", "conv1", "bn2", "conv2", "relu", "downsample"]
    assert len(block.downsample) == 1  # a bare 1x1 projection, no BN
    graph = torch.fx.symbolic_trace(block).graph
    # the projection takes the pre-activated input, and nothing follows the addition
    projection = next(n for n in graph.nodes if n.target == "downsample.0")
    assert projection.args[0].target == "relu" and projection.args[0].args[0].target == "bn1"
    output = next(n for n in graph.nodes if n.op == "output")
    assert output.args[0].op == "call_function" and "add" in str(output.args[0].target)


def test_preact_weights_are_seeded_with_calibrated_batchnorm() -> None:
    a, b = build_model(ModelSpec("preact_resnet18"), seed=0), build_model(ModelSpec("preact_resnet18"), seed=0)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
    for bn in (a.layer1[0].bn1, a.layer3[1].bn2, a.bn_final):
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    with torch.no_grad():
        logits = a(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    assert torch.isfinite(logits).all() and 1.0 < float(logits.std()) < 20.0


@pytest.mark.parametrize("name", ["densenet121", "vgg16_bn", "googlenet", "preact_resnet50"])
def test_runs_and_traces_at_the_smallest_image(name: str) -> None:
    model = construct(ModelSpec(name)).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(x)
        traced = torch.fx.symbolic_trace(model)(x)  # fuse_model works on the FX graph
    assert eager.shape == (1, 1000) and torch.isfinite(eager).all()
    assert torch.equal(eager, traced)
