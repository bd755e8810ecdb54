"""The launch plan and its per-layer cache (the triton backend's eager forward), the launch recorder, and
the parallel precompile's job list: everything about them that does not need a GPU."""

from __future__ import annotations

import copy
import importlib
import pickle

import pytest
import torch

from kernels import fuse_model
from kernels.configs import TileConfig
from kernels.precompile import compile_count, main, model_launches, retarget, tuning_jobs
from resbench.models import ModelSpec, build_model

USES_INTERPRETER = False

launcher = importlib.import_module("kernels.conv_bn_act")


def test_the_cached_path_declines_where_the_op_must_run():
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    weight = launcher.pack_weight(torch.randn(16, 8, 3, 3))
    plans = launcher.PlanCache()
    out = launcher.run_cached(plans, x, weight, torch.ones(16), torch.zeros(16), None, None, None, (1, 1), (1, 1),
                              (1, 1), 1, True, "tf32")
    assert out is None and plans == {}  # CPU: the op (interpreter or PyTorch fallback) runs instead


def test_plan_caches_start_empty_in_copies():
    block = build_model(ModelSpec("resnet18")).layer1[0].eval()
    module = next(m for m in fuse_model(block).modules() if hasattr(m, "_plans"))
    module._plans[("shape",)] = (0, object())  # what a CUDA forward leaves behind
    assert copy.deepcopy(module)._plans == {} and pickle.loads(pickle.dumps(module._plans)) == {}
    module.to(torch.float16)
    assert module._plans == {}  # a cast drops plans built for the old dtype


@pytest.fixture(scope="module")
def resnet18_launches() -> list:
    return model_launches("resnet18", image_size=64)


def test_recorded_launches_are_the_fused_forward(resnet18_launches):
    launches = resnet18_launches
    assert len(launches) == 1 + 8 * 2  # stem + 2 convs per BasicBlock; the 3 downsamples ride in a conv2
    stem = launches[0].problem
    assert (stem.C, stem.R, stem.stride, stem.N) == (3, 7, (2, 2), 1)
    assert sum(launch.problem.c_ds > 0 for launch in launches) == 3
    assert all(launch.stride_ds == 2 and launch.h_ds == 2 * launch.problem.P for launch in launches
               if launch.problem.c_ds)


def test_precompile_jobs_cover_every_candidate_once(resnet18_launches):
    launches = resnet18_launches
    at_1, at_32 = retarget(launches, 1, "bf16"), retarget(launches, 32, "fp32")
    assert {launch.problem.dtype for launch in at_32} == {torch.float32}
    assert {launch.problem.input_precision for launch in at_32} == {"ieee"}  # fp32 rows: exact dots
    jobs = tuning_jobs(at_1)
    assert any(config.split_k > 1 for _, config in jobs)  # small M at batch 1: split-K candidates
    assert len({(launch.problem.key(), config) for launch, config in jobs}) == len(jobs)
    both = tuning_jobs(at_1 + at_32)
    assert compile_count(both) == compile_count(jobs) + compile_count(tuning_jobs(at_32))  # dtypes share nothing
    assert compile_count(tuning_jobs(at_1 + at_1)) == compile_count(jobs)


def test_plan_holds_the_launch_decisions(resnet18_launches):
    launch = resnet18_launches[-1]  # layer4.1.conv2: 3x3 + residual at 2x2
    plan = launcher.LaunchPlan(launch.problem, TileConfig(16, 16, 16, split_k=4), 1, 1, 1, False)
    assert plan.split_k == 4 and plan.grid[1] == 4 and plan.workspace_shape == (4, launch.problem.M, 512)
    # with split-K the epilogue kernel adds the residual and applies the ReLU
    assert not plan.main_constexprs["HAS_RESIDUAL"] and plan.epilogue_constexprs["HAS_RESIDUAL"]
    # FMA contraction pinned where the launch is direct; a traceable launch takes Triton's default (the same
    # today), because Inductor accepts only documented config names when it compiles the traced kernel
    assert "enable_fp_fusion" not in plan.main_constexprs
    direct = launcher.LaunchPlan(launch.problem, TileConfig(16, 16, 16), 1, 1, 1, False, traceable=False)
    assert direct.main_constexprs["enable_fp_fusion"] is True and direct.split_k == 1


def test_precompile_counts_on_any_machine_and_compiles_only_with_a_gpu(capsys):
    args = ["--model", "resnet18", "--image-size", "32", "--batches", "1", "32"]
    code = main([*args, "--list"]) if torch.cuda.is_available() else main(args)
    captured = capsys.readouterr()
    assert "resnet18 at 32 px, batches [1, 32], bf16: 17 fused launches per forward" in captured.out
    if not torch.cuda.is_available():
        assert code == 2 and "no CUDA GPU: nothing compiled" in captured.err
    else:
        assert code == 0


@pytest.mark.parametrize("batch", [1, 2])
def test_recording_sees_each_call_of_the_op(batch):
    x = torch.randn(batch, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    with launcher.recording_launches() as launches:
        launcher.conv_bn_act(x, torch.randn(8, 4, 3, 3), torch.ones(8), torch.zeros(8), padding=1)
    launcher.conv_bn_act(x, torch.randn(8, 4, 3, 3), torch.ones(8), torch.zeros(8), padding=1)
    assert [(launch.problem.N, launch.problem.P) for launch in launches] == [(batch, 5)]
