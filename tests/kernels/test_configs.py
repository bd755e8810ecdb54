"""The tile-config table: pruning per problem, split-K for small M, the untuned default, the tuning key,
selection order, and JSON persistence of tuned winners."""

from __future__ import annotations

import torch

from kernels import configs
from kernels.configs import ConvProblem, TileConfig

USES_INTERPRETER = False  # tests/kernels/conftest.py: no kernel runs on CPU here


def _problem(N=1, C=512, HW=7, K=512, R=3, stride=1, dtype=torch.float16, residual=False) -> ConvProblem:
    pad = R // 2
    P = (HW + 2 * pad - R) // stride + 1
    return ConvProblem(N=N, C=C, H=HW, W=HW, K=K, R=R, S=R, P=P, Q=P, stride=(stride, stride), padding=(pad, pad),
                       dilation=(1, 1), dtype=dtype, has_residual=residual, relu=True)


LAYER4_BATCH1 = _problem()  # R50 layer4 3x3: M = 49, K_red = 4608 (notes/kernels.md §3: 8 CTAs with 64x64 tiles)
LAYER1_BATCH32 = _problem(N=32, C=64, HW=56, K=64)  # M = 100352


def test_small_m_layers_get_split_k_and_large_ones_do_not():
    small = configs.candidate_configs(LAYER4_BATCH1)
    assert {c.split_k for c in small} >= {1, 2, 4, 8, 16}
    assert all(c.split_k * configs.MIN_ITERATIONS_PER_SPLIT <= configs.reduction_iterations(LAYER4_BATCH1, c)
               for c in small)
    assert {c.split_k for c in configs.candidate_configs(LAYER1_BATCH32)} == {1}
    default_small = configs.default_config(LAYER4_BATCH1)
    assert default_small.split_k == 16 and configs.output_tiles(LAYER4_BATCH1, default_small) * 16 <= 132
    assert configs.default_config(LAYER1_BATCH32) == TileConfig(128, 64, 64, num_warps=4, num_stages=4)


def test_candidates_respect_shared_memory_and_the_eight_warp_rule():
    for problem in (LAYER4_BATCH1, LAYER1_BATCH32, _problem(N=8, C=1024, HW=14, K=2048, R=1)):
        for config in configs.candidate_configs(problem):
            assert config.smem_bytes(2) <= configs.HOPPER_SMEM_BYTES
            assert config.num_warps == 4 or problem.is_1x1  # 8 warps only on the plain-GEMM 1x1 loop
    one_by_one = configs.candidate_configs(_problem(N=8, C=1024, HW=14, K=2048, R=1))
    assert any(c.num_warps == 8 for c in one_by_one)
    assert {c.block_n for c in configs.candidate_configs(_problem(N=32, C=64, HW=56, K=64, R=1))} == {64}
    fp32 = configs.candidate_configs(_problem(N=32, C=64, HW=56, K=128, dtype=torch.float32))
    assert {c.block_k for c in fp32} == {32}


def test_key_buckets_m_and_names_every_flag():
    key = LAYER4_BATCH1.key()
    assert key == "M64_K512_C512_R3x3_s1x1_p1x1_d1x1_float16_mma_res0_relu1_ds0"
    assert _problem(N=1, HW=8).key() == key  # M = 64 lands in the same bucket as 49
    assert _problem(residual=True).key() != key and _problem(dtype=torch.bfloat16).key() != key


def test_flat_gather_only_for_few_channels():
    stem = _problem(N=1, C=3, HW=224, K=64, R=7, stride=2)
    assert configs.resolve_flat_rsc(stem, TileConfig(64, 64, 32))
    assert not configs.resolve_flat_rsc(LAYER4_BATCH1, TileConfig(64, 64, 64))
    assert not configs.resolve_flat_rsc(stem, TileConfig(64, 64, 32, flat_rsc=False))


def test_selection_order_and_json_round_trip(tmp_path):
    cpu = torch.device("cpu")
    configs.clear_tuned()
    assert configs.select_config(LAYER4_BATCH1, cpu, interpreting=True) == configs.interpreter_config(LAYER4_BATCH1)
    assert configs.select_config(LAYER4_BATCH1, cpu, interpreting=False) == configs.default_config(LAYER4_BATCH1)
    winner = TileConfig(64, 128, 64, num_stages=4, split_k=4)
    configs.record_tuned(LAYER4_BATCH1, cpu, winner)
    assert configs.select_config(LAYER4_BATCH1, cpu, interpreting=False) == winner
    forced = TileConfig(16, 16, 16)
    with configs.forced_config(forced):
        assert configs.select_config(LAYER4_BATCH1, cpu, interpreting=False) == forced
    path = configs.save_tuned(tmp_path / "tuned.json")
    configs.clear_tuned()
    assert configs.tuned_config(LAYER4_BATCH1, cpu) is None
    assert configs.load_tuned(path) == 1 and configs.tuned_config(LAYER4_BATCH1, cpu) == winner
    configs.clear_tuned()


STEM_BATCH2 = _problem(N=2, C=3, HW=224, K=64, R=7, stride=2)  # M = 25088: 196 tiles of 128x64


def test_the_stem_gets_the_small_flat_gather_table():
    """Under Triton 3.6 the stem's flat gather spills at 128x64x64 (968 bytes) and sits at 255 registers at
    64x64x64 and 64x128x64; 64x64x32/w4/s3 takes 119 (docs/kernels.md, sm_90 compile check)."""
    for dtype, table in ((torch.float16, configs.CONFIGS_FLAT_16BIT), (torch.bfloat16, configs.CONFIGS_FLAT_16BIT),
                         (torch.float32, configs.CONFIGS_FLAT_FP32)):
        stem = _problem(N=2, C=3, HW=224, K=64, R=7, stride=2, dtype=dtype)
        assert configs.gathers_flat(stem)
        assert configs.default_config(stem) == TileConfig(64, 64, 32, num_warps=4, num_stages=3)
        assert set(configs.candidate_configs(stem)) <= set(table)
        assert all(c.block_k <= 32 and c.block_m == c.block_n == 64 for c in configs.candidate_configs(stem))
    assert not configs.gathers_flat(LAYER1_BATCH32)


def test_exact_fp32_dots_use_only_the_tile_that_does_not_spill():
    ieee = _problem(N=32, C=256, HW=14, K=1024, R=1, dtype=torch.float32)
    ieee = ConvProblem(**{**ieee.__dict__, "input_precision": "ieee"})
    assert configs.candidate_configs(ieee) == [TileConfig(64, 64, 32, num_warps=4, num_stages=4)]
    assert configs.default_config(ieee) == TileConfig(64, 64, 32, num_warps=4, num_stages=4)
    tf32 = _problem(N=32, C=256, HW=14, K=1024, R=1, dtype=torch.float32)
    assert TileConfig(128, 64, 32, num_warps=4, num_stages=3) in configs.candidate_configs(tf32)


def test_the_tuned_generation_changes_with_the_tuned_table(tmp_path):
    cpu = torch.device("cpu")
    before = configs.tuned_generation()
    configs.record_tuned(LAYER4_BATCH1, cpu, TileConfig(64, 64, 64))
    recorded = configs.tuned_generation()
    path = configs.save_tuned(tmp_path / "t.json")
    configs.clear_tuned()
    cleared = configs.tuned_generation()
    configs.load_tuned(path)
    assert len({before, recorded, cleared, configs.tuned_generation()}) == 4
    configs.clear_tuned()
