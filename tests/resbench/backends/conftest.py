"""Shared pieces for backend tests: a tiny ResNet (stem + one downsampling BasicBlock + classifier, seeded
weights with calibrated BatchNorm), a Case factory, a model no exporter can capture, and the parity check
every row gets (resbench.parity: no worse than eager in the same dtype, against fp64)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from resbench import calibration, parity
from resbench.dtypes import torch_dtype
from resbench.models.random_init import randomize_
from resbench.models.registry import ModelSpec
from resbench.models.resnet import BasicBlock, conv1x1
from resbench.suite import Case, ParityConfig, TimingConfig

IMAGE_SIZE = 32
CLASSES = 10


class TinyResNet(nn.Module):
    """conv1-bn1-relu-maxpool, one BasicBlock with a strided 1x1 downsample, avgpool, fc: every op kind of
    a ResNet in a graph that exports in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = BasicBlock(8, 16, stride=2, downsample=nn.Sequential(conv1x1(8, 16, 2), nn.BatchNorm2d(16)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DataDependentBranch(nn.Module):
    """Python control flow on a tensor's value: torch.export (and so every exporter built on it) refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return y if y.sum() > 0 else -y


_TINY = randomize_(TinyResNet(), seed=0).eval()


@pytest.fixture
def tiny_model() -> nn.Module:
    """A private fp32 channels_last copy, as the runner hands to `prepare` (backends cast it in place)."""
    return copy.deepcopy(_TINY).to(memory_format=torch.channels_last)


@pytest.fixture
def unexportable_model() -> nn.Module:
    return DataDependentBranch().eval()


def make_case(backend: str, dtype: str = "fp32", *, batch_size: int = 2, device: str = "cpu",
              timing_mode: str = "device", memory_format: str = "channels_last", **options) -> Case:
    return Case(model=ModelSpec("python:conftest:TinyResNet"), backend=backend, options=options,
                batch_size=batch_size, dtype=dtype, image_size=IMAGE_SIZE, memory_format=memory_format,
                device=device, timing=TimingConfig(mode=timing_mode), parity=ParityConfig())


@pytest.fixture
def case():
    return make_case


@pytest.fixture(name="make_case")
def make_case_fixture():
    """`make_case` under its own name, for the test modules that call it so."""
    return make_case


def example_input(case: Case) -> torch.Tensor:
    """The runner's timing input: seeded, in the run dtype and memory format, on the case's device."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch_size, 3, case.image_size, case.image_size, generator=generator)
    fmt = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    return x.to(device=case.device, dtype=torch_dtype(case.dtype)).contiguous(memory_format=fmt)


@pytest.fixture
def example():
    return example_input


def parity_verdict(fn, case: Case, model: nn.Module = _TINY, samples: int = 8):
    """The runner's parity contract for one prepared callable: its logits on the seeded parity batch vs
    the fp64 model, judged against the yardstick's error in the same dtype (eager's; for int8, int8 weight
    rounding's)."""
    images = parity.parity_images(samples, case.image_size, seed=0)
    fmt = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    device = torch.device(case.device)
    with torch.no_grad():
        reference = copy.deepcopy(model).double()(images.double())
        eager, dtype = parity.yardstick(model, case.dtype)
        eager_out = parity.run_on_parity_batch(eager.to(device), images, case.batch_size, dtype, fmt, device)
        out = parity.run_on_parity_batch(fn, images, case.batch_size, torch_dtype(case.dtype), fmt, device)
    eager_error = parity.error_metrics(eager_out, reference).rel_l2
    return parity.verdict(parity.error_metrics(out, reference), case.dtype, eager_error, is_eager=False)


def raw_pixels(samples: int, image_size: int, seed: int) -> torch.Tensor:
    """The classic int8 mistake's calibration set: raw 0-255 pixels, for a model fed normalised images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (samples, 3, image_size, image_size), generator=generator).float()


@pytest.fixture
def calibrate_on_raw_pixels(monkeypatch):
    """Every int8 backend of the test calibrates on `raw_pixels` (calibration.calibration_images replaced)."""
    monkeypatch.setattr(calibration, "calibration_images", raw_pixels)


@contextlib.contextmanager
def _torch_threads(n: int):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.fixture
def torch_threads():
    """`with torch_threads(1):` torch's intra-op thread count for the block, as the run's thread policy sets
    it before `prepare` (backends with their own pools read it there)."""
    return _torch_threads


@pytest.fixture
def check_parity():
    return parity_verdict
