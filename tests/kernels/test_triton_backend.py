"""The `triton` backend: registration, cheap import, options, skipped on CPU with its reason; `prepare` itself
exercised on CPU through the Triton interpreter (what it builds, parity vs eager), since timing is GPU-only."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from resbench import parity
from resbench.backends import backend_names, get_backend
from resbench.backends.triton import CPU_REASON, TritonOptions
from resbench.measure import run_group
from resbench.models.random_init import random_batchnorm_
from resbench.models.registry import ModelSpec
from resbench.models.resnet import BasicBlock, conv1x1
from resbench.suite import Case, ParityConfig, TimingConfig, expand, parse_suite


def test_registered_and_import_is_cheap():
    assert "triton" in backend_names()
    code = ("import sys, resbench.backends as b; assert 'triton' in b.backend_names(); "
            "print(sorted(m for m in ('kernels', 'triton') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # neither Triton nor the kernels are imported to list backends


def test_unavailable_on_cpu_with_the_reason():
    ok, reason = get_backend("triton").available(torch.device("cpu"))
    assert not ok and reason == CPU_REASON
    assert "needs a CUDA GPU" in reason and "interpreter is for tests, not timing" in reason


def test_options():
    assert TritonOptions().cuda_graphs == "auto" and TritonOptions().fuse_downsample is True  # graphs on CUDA
    assert TritonOptions(cuda_graphs="auto").cuda_graphs == "auto"
    with pytest.raises(ValidationError, match="cuda_graphs"):
        TritonOptions.model_validate({"cuda_graphs": "always"})
    with pytest.raises(ValidationError, match="mode"):
        TritonOptions.model_validate({"mode": "max-autotune"})


def test_resbench_run_skips_it_on_cpu_with_the_reason():
    text = yaml.safe_dump({"name": "t", "device": "cpu", "models": ["resnet18"], "backends": ["triton"],
                           "batch_sizes": [1], "dtypes": ["fp16"], "image_size": 32})
    (row,) = run_group(expand(parse_suite(text, "t.yaml"), "cpu"))
    assert row.status == "skipped" and row.reason == CPU_REASON


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 16, stride=2, downsample=nn.Sequential(conv1x1(8, 16, 2), nn.BatchNorm2d(16)))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.layer1(self.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return random_batchnorm_(TinyResNet()).to(memory_format=torch.channels_last)


def _case(dtype: str, **options) -> Case:
    return Case(model=ModelSpec("tiny"), backend="triton", options=options, batch_size=2, dtype=dtype,
                image_size=12, memory_format="channels_last", device="cpu", timing=TimingConfig(),
                parity=ParityConfig())


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_prepare_builds_the_fused_model_and_matches_eager(tiny, dtype):
    case = _case(dtype, cuda_graphs="auto", fuse_downsample=True)
    backend = get_backend("triton")
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    private = copy.deepcopy(tiny)
    with torch.no_grad():
        forward = backend.prepare(private, x.to(torch_dtype), case)
        out = forward(x.to(torch_dtype))
        reference = copy.deepcopy(tiny).double()(x.double())
        eager = copy.deepcopy(tiny).to(torch_dtype)(x.to(torch_dtype))
    assert backend.artifacts() == {"fused_convs": 3, "fused_downsamples": 1, "fused_prologues": 0, "grouped_convs": 0,
                                   "batchnorms_left": 0,
                                   "autotune_s": backend.artifacts()["autotune_s"], "cuda_graph": False}
    assert backend.numerics(case) == ({"triton_fuse_downsample": True, "triton_fp32_dot": "ieee"} if dtype == "fp32"
                                      else {"triton_fuse_downsample": True})
    verdict = parity.verdict(parity.error_metrics(out, reference), dtype,
                             parity.error_metrics(eager, reference).rel_l2, is_eager=False)
    assert verdict.passed, verdict.rule


def test_cuda_graphs_true_is_a_skip_reason_on_cpu():
    ok, reason = get_backend("triton").supports(_case("fp16", cuda_graphs=True))
    assert not ok and "needs a CUDA device" in reason
    assert get_backend("triton").numerics(_case("tf32")) == {"triton_fuse_downsample": True, "triton_fp32_dot": "tf32"}
