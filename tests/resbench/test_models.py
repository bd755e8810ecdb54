"""Built-in models: torchvision's published parameter counts and GFLOPs, torchvision state_dict layout,
checkpoint loading (.pth and .safetensors), and clear errors for every way loading can go wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resbench.errors import ModelError
from resbench.models import BUILTIN_NAMES, ModelSpec, build_model, construct, count_flops, model_cost
from resbench.models.resnet import resnet18

# torchvision weight metadata (`num_params`, `_ops` GMAC at 224x224) of each *_Weights.IMAGENET1K_V1
# (pytorch/vision torchvision/models/{resnet,densenet,vgg,googlenet}.py); GoogLeNet's counts exclude the
# auxiliary heads, which torchvision drops after loading.
TORCHVISION = {
    "resnet18": (11_689_512, 1.814),
    "resnet34": (21_797_672, 3.664),
    "resnet50": (25_557_032, 4.089),
    "resnet101": (44_549_160, 7.801),
    "resnet152": (60_192_808, 11.514),
    "wide_resnet50_2": (68_883_240, 11.398),
    "resnext50_32x4d": (25_028_904, 4.230),
    "densenet121": (7_978_856, 2.834),
    "densenet161": (28_681_000, 7.728),
    "densenet169": (14_149_480, 3.36),
    "densenet201": (20_013_928, 4.291),
    "vgg16_bn": (138_365_992, 15.47),
    "googlenet": (6_624_904, 1.498),
}
# No torchvision twin: counted from the paper's layer table in test_models_families.py.
PREACT = ("preact_resnet18", "preact_resnet50")


def test_every_builtin_is_checked_against_a_published_count() -> None:
    assert set(BUILTIN_NAMES) == set(TORCHVISION) | set(PREACT)


@pytest.mark.parametrize("name", TORCHVISION)
def test_params_and_flops_match_torchvision(name: str) -> None:
    params, gmac = TORCHVISION[name]
    with torch.device("meta"):  # shapes only: VGG-16-BN would take 0.55 GB and seconds to initialise
        model = construct(ModelSpec(name))
    cost = model_cost(model, 224)
    assert cost.params == params
    decimals = len(str(gmac).split(".")[1])  # torchvision rounds GMAC to 2 or 3 decimals
    assert cost.gflops / 2 == pytest.approx(gmac, abs=0.6 * 10**-decimals)


def test_state_dict_keys_are_torchvision_layout() -> None:
    keys = set(resnet18().state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias",
                "fc.weight", "fc.bias"):
        assert key in keys
    assert len(keys) == 122  # torchvision resnet18 state_dict has 122 entries


def test_random_weights_are_seeded_and_batchnorm_is_not_identity() -> None:
    a, b = build_model(ModelSpec("resnet18"), seed=0), build_model(ModelSpec("resnet18"), seed=0)
    c = build_model(ModelSpec("resnet18"), seed=1)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    bn = a.layer3[1].bn2
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
    assert not a.training


def test_logits_have_imagenet_like_spread() -> None:
    model = build_model(ModelSpec("resnet50"))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3)))
    assert torch.isfinite(logits).all()
    assert 1.0 < float(logits.std()) < 20.0  # calibrated to ~4 at 224 px


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_layout_checkpoint_loads_unchanged(tmp_path: Path, suffix: str) -> None:
    source = build_model(ModelSpec("resnet18"), seed=7)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = build_model(ModelSpec("resnet18", weights=str(path)))
    for (key, expected), got in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(expected, got), key


def test_wrapped_and_dataparallel_checkpoints_load(tmp_path: Path) -> None:
    source = build_model(ModelSpec("resnet18"), seed=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = build_model(ModelSpec("resnet18", weights=str(path)))
    assert torch.equal(loaded.fc.weight, source.fc.weight)


def _load_error(path: Path, model: str = "resnet18") -> str:
    with pytest.raises(ModelError) as info:
        build_model(ModelSpec(model, weights=str(path)))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_weights_file(tmp_path: Path) -> None:
    assert "does not exist" in _load_error(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint")
    assert "is not a readable checkpoint" in _load_error(path)


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(build_model(ModelSpec("resnet34")).state_dict(), path)
    message = _load_error(path, "resnet18")
    assert "does not fit model 'resnet18'" in message and "unexpected keys" in message


def test_checkpoint_with_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(build_model(ModelSpec("wide_resnet50_2")).state_dict(), path)
    assert "has shape" in _load_error(path, "resnet50")


def test_weights_are_never_unpickled_unsafely(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    assert "is not a readable checkpoint" in _load_error(path)
    assert not (tmp_path / "pwned").exists()


def test_bad_suffix(tmp_path: Path) -> None:
    path = tmp_path / "w.onnx"
    path.write_bytes(b"")
    assert "suffix '.onnx'" in _load_error(path)


def test_missing_package_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="needs the package 'resbench_no_such_package'"):
        build_model(ModelSpec("python:resbench_no_such_package:make"))


def test_python_spec_builds_any_module() -> None:
    model = build_model(ModelSpec("python:resbench.models.resnet:resnet18"))
    assert model_cost(model, 224).params == TORCHVISION["resnet18"][0]


class DataDependent(torch.nn.Module):
    """A forward that branches on a tensor's value: cannot run on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum().item() > 1e30:
            y = y * 2
        return self.fc(y.mean((2, 3)))


def test_flops_of_a_model_that_needs_real_values() -> None:
    cost = model_cost(DataDependent(), 32)
    assert cost.flops_per_image == 2 * 32 * 32 * 8 * 27 + 2 * 8 * 10


def test_a_missing_package_hint_names_the_pip_package(monkeypatch) -> None:
    """`torchvision:NAME` imports torchvision.models; the hint said `pip install torchvision.models`."""
    import importlib

    real = importlib.import_module

    def no_torchvision(name: str, *args):
        if name.startswith("torchvision"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_torchvision)
    with pytest.raises(ModelError) as info:
        construct(ModelSpec("torchvision:resnet18"))
    assert "install it with `pip install torchvision`" in str(info.value)
    assert "torchvision.models`" not in str(info.value)


def test_counting_flops_does_not_import_dynamo(tmp_path: Path) -> None:
    """The count ran on meta tensors, whose elementwise ops import torch._dynamo, which creates the
    TorchInductor cache folder: an eager-only run failed where that folder could not be created."""
    import subprocess
    import sys

    code = ("import sys; from resbench.models import ModelSpec, construct, count_flops; "
            "print(count_flops(construct(ModelSpec('resnet50')), 224), 'torch._dynamo' in sys.modules)")
    env = {**__import__("os").environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "file" / "cache")}
    (tmp_path / "file").write_text("a file where the cache folder would go\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["8178368512", "False"]   # torchvision's 4.089 GMAC, and no dynamo


def test_flops_of_odd_convolutions_match_a_real_forward() -> None:
    """The shape-only count (no conv arithmetic) equals counting a real forward: strides, dilation, groups,
    'same' and 'valid' padding, odd sizes."""
    from resbench.models.flops import _count_flops

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding="same", groups=4), torch.nn.Conv2d(8, 16, 5, padding="valid", dilation=2),
        torch.nn.Conv2d(16, 16, (3, 1), stride=(2, 1), padding=(1, 0)), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(16, 10))
    for size in (33, 64, 97):
        assert count_flops(net, size) == _count_flops(net, size) > 0
