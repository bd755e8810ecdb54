"""Tile configurations for the fused convolution: the Hopper table, how it is pruned per problem, the
untuned default, and the table of tuned winners (kept in memory, persisted as JSON per GPU).

A problem is described by `ConvProblem` (GEMM view: M = N*P*Q output pixels, K_out output channels,
K_red = C*R*S reduction). Its `key` buckets M to a power of two, so batch sizes that tile alike share a
tuned winner (notes/kernels.md §13).

Why these tiles (notes/kernels.md §11, §13; resources from the sm_90 compile check, tests/kernels/test_sm90_compile.py):
- 16-bit: 64x64x32/4w/3s, 64x64x64/4w/4s, 128x64x64/4w/4s, 64x128x64/4w/4s. All stay under 100 KB of shared
  memory and spill nothing with 4 warps. 128x128x64 with 4 warps spills (REG 255, STACK 112): dropped.
- fp32: 128x64x32/4w/3s and 64x64x32/4w/4s with TF32 dots (BLOCK_K 32 keeps 4-byte tiles in budget); exact
  fp32 ("ieee", FMA units) only 64x64x32/4w/4s: 128x64x32 spills under Triton 3.6 there (16-56 bytes on the 1x1
  + downsample, int64 and stem kernels).
- The stem's flat (r, s, c) gather (C = 3, K_red = 147) decodes a 7x7 index per element and is heavy on
  registers: under Triton 3.6, 128x64x64 spills 968 bytes (255 registers) and 64x64x64 / 64x128x64 sit at the
  255-register ceiling; 64x64x32/4w/3s takes 119 (fp32: 168), and BLOCK_K 32 wastes 8% of a 147-long
  reduction where 64 wastes 23%. So flat problems get their own small table (docs/kernels.md has the numbers).
- 8 warps only for 1x1 convolutions (a plain GEMM loop): Inductor's conv template gave wrong results with
  8 warps on non-1x1 kernels (pytorch/pytorch #173068; torch 2.13 caps non-1x1 templates at 4 warps), and our
  flattened (r, s, c) loop has the same shape. Every candidate is also cross-checked against a reference when
  it is tuned on a GPU (kernels/autotune.py), so a miscompiled config is rejected, never timed.
- Split-K (2..16) only where the output tiles cannot fill the GPU (batch 1-4 on layer3/layer4, notes/kernels.md §3).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

# H200 / H100 SXM: 132 SMs, 227 KB of shared memory per block (notes/kernels.md §3, §11).
HOPPER_SM_COUNT = 132
HOPPER_SMEM_BYTES = 227 * 1024
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration of `_conv_bn_act_kernel`."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    group_m: int = 8
    split_k: int = 1
    # Reduction loop over (r, s, c) flattened element-wise (an im2col gather: for C smaller than BLOCK_K,
    # e.g. the 3-channel stem) instead of (r, s) x channel blocks. None: decided from C and BLOCK_K.
    flat_rsc: bool | None = None

    def smem_bytes(self, element_size: int) -> int:
        """Shared memory of the pipelined A and B tiles (the compiler's figure is checked on sm_90)."""
        return (self.block_m * self.block_k + self.block_k * self.block_n) * element_size * self.num_stages

    def label(self) -> str:
        text = f"{self.block_m}x{self.block_n}x{self.block_k}/w{self.num_warps}/s{self.num_stages}"
        return text + (f"/splitk{self.split_k}" if self.split_k > 1 else "")


@dataclass(frozen=True)
class ConvProblem:
    """One fused convolution, in convolution letters (input N x C x H x W, weight K x C x R x S)."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    dtype: torch.dtype
    has_residual: bool
    relu: bool
    c_ds: int = 0  # input channels of a fused downsample branch (0: none)
    input_precision: str = "tf32"
    groups: int = 1  # grouped convolution: C / groups input channels per output channel
    prologue: bool = False  # per-input-channel scale/shift (a BN before the conv) applied while loading x
    prologue_relu: bool = False  # ... followed by a ReLU

    @property
    def M(self) -> int:
        return self.N * self.P * self.Q

    @property
    def is_1x1(self) -> bool:
        return self.R == 1 and self.S == 1 and self.padding == (0, 0)

    @property
    def reduction(self) -> int:
        """Terms summed into one output: (C / groups) * R * S, plus the downsample's C_ds."""
        return self.C // self.groups * self.R * self.S + self.c_ds

    def key(self) -> str:
        """The tuning key: every kernel flag plus M bucketed to a power of two."""
        m_bucket = 1 << max(self.M - 1, 0).bit_length()
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"M{m_bucket}_K{self.K}_C{self.C}_R{self.R}x{self.S}_s{self.stride[0]}x{self.stride[1]}"
                f"_p{self.padding[0]}x{self.padding[1]}_d{self.dilation[0]}x{self.dilation[1]}_{dtype}"
                f"_{self.input_precision if self.dtype == torch.float32 else 'mma'}"
                f"_res{int(self.has_residual)}_relu{int(self.relu)}_ds{self.c_ds}"
                # the second wave's flags, named only when set: keys of plain ResNet layers stay as they were
                + (f"_g{self.groups}" if self.groups > 1 else "")
                + (f"_pro{1 + int(self.prologue_relu)}" if self.prologue else ""))


# ---------------------------------------------------------------------------------------------------------
# The Hopper table (notes/kernels.md §13)

CONFIGS_16BIT: tuple[TileConfig, ...] = (
    TileConfig(64, 64, 32, num_warps=4, num_stages=3),
    TileConfig(64, 64, 64, num_warps=4, num_stages=4),
    TileConfig(128, 64, 64, num_warps=4, num_stages=4),
    TileConfig(64, 128, 64, num_warps=4, num_stages=4),
)
CONFIGS_16BIT_1X1_8WARPS: tuple[TileConfig, ...] = (
    TileConfig(128, 128, 64, num_warps=8, num_stages=3),
    TileConfig(128, 128, 32, num_warps=8, num_stages=4),
)
CONFIGS_FP32: tuple[TileConfig, ...] = (
    TileConfig(128, 64, 32, num_warps=4, num_stages=3),
    TileConfig(64, 64, 32, num_warps=4, num_stages=4),
)
CONFIGS_FP32_IEEE: tuple[TileConfig, ...] = (TileConfig(64, 64, 32, num_warps=4, num_stages=4),)
CONFIGS_FLAT_16BIT: tuple[TileConfig, ...] = (
    TileConfig(64, 64, 32, num_warps=4, num_stages=3),
    TileConfig(64, 64, 32, num_warps=4, num_stages=4),
    TileConfig(64, 64, 16, num_warps=4, num_stages=3),
)
CONFIGS_FLAT_FP32: tuple[TileConfig, ...] = (
    TileConfig(64, 64, 32, num_warps=4, num_stages=3),
    TileConfig(64, 64, 16, num_warps=4, num_stages=3),
)
SPLIT_K_CHOICES: tuple[int, ...] = (2, 4, 8, 16)
MIN_ITERATIONS_PER_SPLIT = 4


def gathers_flat(problem: ConvProblem) -> bool:
    """A problem whose reduction runs as the flat (r, s, c) gather with 32-wide K blocks (C < 16: the stem)."""
    return resolve_flat_rsc(problem, TileConfig(64, 64, 32))


def hopper_configs(problem: ConvProblem) -> tuple[TileConfig, ...]:
    """Every base configuration (split_k = 1) the table holds for this problem's dtype and kernel class."""
    fp32 = problem.dtype == torch.float32
    if gathers_flat(problem):
        return CONFIGS_FLAT_FP32 if fp32 else CONFIGS_FLAT_16BIT
    if fp32:
        return CONFIGS_FP32_IEEE if problem.input_precision == "ieee" else CONFIGS_FP32
    return CONFIGS_16BIT + (CONFIGS_16BIT_1X1_8WARPS if problem.is_1x1 else ())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def reduction_iterations(problem: ConvProblem, config: TileConfig) -> int:
    """Trips of the main K loop (flattened (r, s, channel-block) or flat (r, s, c)) for one output tile (for a
    grouped convolution, the tile that spans the most groups)."""
    if resolve_flat_rsc(problem, config):
        return _cdiv(problem.C * problem.R * problem.S, config.block_k)
    return problem.R * problem.S * _cdiv(channel_window(problem, config), config.block_k)


def channel_window(problem: ConvProblem, config: TileConfig) -> int:
    """Input channels one output tile reads: all C, or for a grouped convolution those of the groups its
    BLOCK_N output channels touch (the widest tile's; the kernel computes the same window per tile)."""
    return max(hi - lo for lo, hi in tile_channel_windows(problem, config.block_n))


def tile_channel_windows(problem: ConvProblem, block_n: int) -> list[tuple[int, int]]:
    """[lo, hi) input channels read by each column of output tiles (all C unless grouped)."""
    return channel_windows(problem.C, problem.K, problem.groups, block_n)


def channel_windows(in_channels: int, out_channels: int, groups: int, block_n: int) -> list[tuple[int, int]]:
    """[lo, hi) input channels of the groups each block of `block_n` output channels belongs to (all of them
    unless grouped): a tile's reduction window, and a packed grouped weight's rows (kernels.conv_bn_act)."""
    if groups == 1:
        return [(0, in_channels)]
    k_per_group, c_per_group = out_channels // groups, in_channels // groups
    return [(n0 // k_per_group * c_per_group, ((min(n0 + block_n, out_channels) - 1) // k_per_group + 1) * c_per_group)
            for n0 in range(0, out_channels, block_n)]


def aligned_windows(problem: ConvProblem, config: TileConfig) -> bool:
    """A grouped convolution whose every tile starts its channel window at a multiple of 16 channels (ResNeXt:
    at a multiple of BLOCK_N), which the kernel asserts to the compiler (tl.multiple_of)."""
    return problem.groups > 1 and all(lo % 16 == 0 for lo, _ in tile_channel_windows(problem, config.block_n))


def even_channels(problem: ConvProblem, config: TileConfig) -> bool:
    """Every tile's channel window is a whole number of BLOCK_K blocks: the kernel drops its channel mask
    (EVEN_C), which also lets the A tile be copied asynchronously (ResNeXt: windows of BLOCK_N channels)."""
    return all((hi - lo) % config.block_k == 0 for lo, hi in tile_channel_windows(problem, config.block_n))


def resolve_flat_rsc(problem: ConvProblem, config: TileConfig) -> bool:
    """Flat (r, s, c) gathering when channel blocks would be mostly padding (C < BLOCK_K / 2: the stem); never
    for a grouped convolution (the gather is not group-aware)."""
    if problem.groups > 1:
        return False
    if config.flat_rsc is not None:
        return config.flat_rsc
    return 2 * problem.C < config.block_k and problem.R * problem.S > 1


def output_tiles(problem: ConvProblem, config: TileConfig) -> int:
    return _cdiv(problem.M, config.block_m) * _cdiv(problem.K, config.block_n)


def split_k_for(problem: ConvProblem, config: TileConfig, sm_count: int = HOPPER_SM_COUNT) -> int:
    """The split that brings the CTA count near one wave, keeping >= 4 loop trips per split (notes/kernels.md §10)."""
    tiles = output_tiles(problem, config)
    iterations = reduction_iterations(problem, config)
    split = 1
    for candidate in SPLIT_K_CHOICES:
        if tiles * candidate > sm_count or iterations < candidate * MIN_ITERATIONS_PER_SPLIT:
            break
        split = candidate
    return split


def candidate_configs(problem: ConvProblem, sm_count: int = HOPPER_SM_COUNT) -> list[TileConfig]:
    """The configurations worth timing for `problem`: tiles no wider than the problem needs, shared memory
    within budget, and split-K variants when the output tiles fill less than half the GPU."""
    element_size = torch.empty((), dtype=problem.dtype).element_size()
    m_cap = max(64, 1 << max(problem.M - 1, 0).bit_length())
    n_cap = max(64, 1 << max(problem.K - 1, 0).bit_length())
    out: list[TileConfig] = []
    for config in hopper_configs(problem):
        if config.block_m > m_cap or config.block_n > n_cap:
            continue
        if config.smem_bytes(element_size) > HOPPER_SMEM_BYTES:
            continue
        out.append(config)
        if output_tiles(problem, config) * 2 <= sm_count:
            iterations = reduction_iterations(problem, config)
            for split in SPLIT_K_CHOICES:
                if output_tiles(problem, config) * split > 2 * sm_count:
                    break
                if iterations >= split * MIN_ITERATIONS_PER_SPLIT:
                    out.append(replace(config, split_k=split))
    if not out:  # every tile wider than the problem: keep the smallest
        out.append(hopper_configs(problem)[-1])
    return out


def default_config(problem: ConvProblem, sm_count: int = HOPPER_SM_COUNT) -> TileConfig:
    """Untuned choice on a GPU: the larger tile when it still fills the GPU, split-K when even 64x64 does not.
    Flat-gather problems (the stem) and exact-fp32 dots take the first (smallest-footprint) entry of their table:
    the larger tiles spill there (see the module docstring)."""
    table = hopper_configs(problem)
    if gathers_flat(problem) or table is CONFIGS_FP32_IEEE:
        big = small = table[0]
    elif problem.dtype == torch.float32:
        big, small = CONFIGS_FP32[0], CONFIGS_FP32[1]
    else:
        big, small = TileConfig(128, 64, 64, num_warps=4, num_stages=4), CONFIGS_16BIT[1]
    if output_tiles(problem, big) >= sm_count:
        return big
    return replace(small, split_k=split_k_for(problem, small, sm_count))


def interpreter_config(problem: ConvProblem) -> TileConfig:
    """Tiles for the Triton interpreter on CPU, where each program's K step costs milliseconds whatever its
    size: the largest tiles the problem fills, never a BLOCK_K below 16 (the GPU's minimum dot size)."""

    def fit(size: int, lo: int, hi: int) -> int:
        return min(hi, max(lo, 1 << max(size - 1, 0).bit_length()))

    block_k = fit(problem.C * problem.R * problem.S if 2 * problem.C <= 16 else problem.C, 16, 128)
    return TileConfig(fit(problem.M, 16, 128), fit(problem.K, 16, 128), block_k, num_warps=4, num_stages=1)


# ---------------------------------------------------------------------------------------------------------
# Forced configs (tests, and the tuner timing each candidate) and the tuned table

_FORCED: contextvars.ContextVar[TileConfig | None] = contextvars.ContextVar("kernels_forced_config", default=None)
_TUNED: dict[str, dict[str, TileConfig]] = {}  # device name -> problem key -> winner
_LOADED: set[str] = set()
_GENERATION = [0]  # bumped whenever the tuned table changes: launch plans cached before then are stale


@contextlib.contextmanager
def forced_config(config: TileConfig) -> Iterator[TileConfig]:
    """Every fused convolution launched inside the block uses `config` (tests; the tuner's timing loop)."""
    token = _FORCED.set(config)
    try:
        yield config
    finally:
        _FORCED.reset(token)


def current_forced_config() -> TileConfig | None:
    return _FORCED.get()


def device_slug(device: torch.device) -> str:
    """`nvidia-h200`: the persisted-config file name of a CUDA device."""
    if device.type != "cuda":
        return device.type
    return _cuda_slug(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_slug(index: int) -> str:  # cached: looked up on every launch
    return "-".join(torch.cuda.get_device_name(index).lower().replace("_", " ").split())


def tuned_config(problem: ConvProblem, device: torch.device) -> TileConfig | None:
    slug = device_slug(device)
    if slug not in _LOADED:
        _LOADED.add(slug)
        path = CONFIG_DIR / f"{slug}.json"
        if path.exists():
            load_tuned(path)
    return _TUNED.get(slug, {}).get(problem.key())


def record_tuned(problem: ConvProblem, device: torch.device, config: TileConfig) -> None:
    _TUNED.setdefault(device_slug(device), {})[problem.key()] = config
    _GENERATION[0] += 1


def tuned_generation() -> int:
    """A counter that changes whenever a tuned winner is recorded, loaded or cleared."""
    return _GENERATION[0]


def select_config(problem: ConvProblem, device: torch.device, interpreting: bool) -> TileConfig:
    """The configuration a launch uses: forced > tuned > default (interpreter tiles on CPU)."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    if interpreting:
        return interpreter_config(problem)
    return tuned_config(problem, device) or default_config(problem, _sm_count(device))


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return HOPPER_SM_COUNT
    return torch.cuda.get_device_properties(device).multi_processor_count  # cached by torch


def save_tuned(path: str | Path) -> Path:
    """Write every tuned winner as JSON: {"device slug": {"problem key": {config fields}}}."""
    path = Path(path)
    payload = {slug: {key: asdict(config) for key, config in sorted(table.items())}
               for slug, table in sorted(_TUNED.items())}
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return path


def load_tuned(path: str | Path) -> int:
    """Merge the winners of a JSON file written by `save_tuned`; returns how many were read."""
    payload = json.loads(Path(path).read_text())
    count = 0
    for slug, table in payload.items():
        for key, fields in table.items():
            _TUNED.setdefault(slug, {})[key] = TileConfig(**fields)
            count += 1
    _GENERATION[0] += 1
    return count


def clear_tuned() -> None:
    _TUNED.clear()
    _LOADED.clear()
    _GENERATION[0] += 1
