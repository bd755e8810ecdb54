#!/usr/bin/env bash
# The first GPU session as one prepared command (about 5 minutes on an H200; see the estimate below).
#
#   scripts/gpu-check.sh            on a GPU machine, from anywhere (results in $OUT, default ./gpu-check-out)
#   scripts/gpu-check.sh --dry-run  every step on this machine's CPU at toy sizes (a CPU test runs this)
#
# Steps, each with its own time limit, all under GPU_CHECK_BUDGET_S (default 540 s):
#   wheels   pydantic & co. from .whl/ (scripts/fetch-device-wheels.sh) when the image lacks them
#   env      versions, GPU, clocks and power limit (nvidia-smi, resbench env)
#   prewarm  every fused-kernel variant ResNet-50 bf16 tuning will try at batch 1, 32, 256, compiled in
#            parallel into Triton's cache (python -m kernels.precompile)
#   a        GPU-marked tests: every tile config on the ResNet-50 layer shapes (fp16/bf16/tf32) with the
#            one-rounding bound, split-K, a Bottleneck block tuned + captured + compiled, timing, memory cap
#   b        harness agreement at one shape (ResNet-50 bf16 b32 eager): resbench vs do_bench vs
#            torch.utils.benchmark, and back-to-back repeatability
#   c        suites/gpu-quick.yaml, part 1: eager, eager + graphs, triton (graphs), triton (no graphs)
#   d        per layer: fused kernel vs cuDNN conv + one fused epilogue, ResNet-50 1x1/3x3 at b32 bf16
# Part 2 of suite c (torch.compile and AOTInductor: ~6 minutes of cold compiles) is scripts/gpu-check-2.sh.
#
# Estimated device time on an H200 (16 cores; ~1 s per cold kernel compile, 14 compile workers):
#   wheels + env 15 s | prewarm 135 kernels ~25 s | a ~95 s (its own ~100-kernel prewarm ~15 s, torch.compile
#   of one block ~30 s) | b ~35 s | c ~100 s (3 workers; triton tuning of 24 problems: 249 + 124 + 120
#   candidates timed, ~11 + 6 + 7 s) | d ~30 s (23 layers)  =>  ~300 s; the limits sum past the budget,
#   which caps them (docs/kernels.md, "The first GPU session").
source "$(dirname "$0")/gpu-check-lib.sh"

step wheels 60 install_wheels
step env 60 print_environment
if [[ $DRY_RUN == 1 ]]; then
  step prewarm 60 "$PY" -m kernels.precompile --model resnet50 --image-size 32 --batches 1 32 256 --list
else
  step prewarm 120 "$PY" -m kernels.precompile --model resnet50 --batches 1 32 256 --dtypes bf16
fi
step a 200 "$PY" -m pytest -m "gpu and not slow" tests --ignore=tests/bench \
  --ignore=tests/gpu/test_harness_agreement.py --continue-on-collection-errors -p no:cacheprovider -q -rfEs \
  --junitxml="$WORK/a-tests.xml"
step b 100 env RESBENCH_VALIDATION_OUT="$WORK/harness-validation.json" "$PY" -m pytest \
  tests/gpu/test_harness_agreement.py -m gpu -p no:cacheprovider -q -rfEs -s
step c 240 run_suite gpu-quick-1 suites/gpu-quick.yaml eager "eager[cuda_graphs=True]" triton \
  "triton[cuda_graphs=False]"
if [[ $DRY_RUN == 1 ]]; then
  step d 90 "$PY" -m kernels.layer_bench --device cpu --batch 1 --image-size 32 --max-layers 3 \
    --json "$WORK/layer-bench.json"
else
  step d 120 "$PY" -m kernels.layer_bench --batch 32 --dtype bf16 --json "$WORK/layer-bench.json"
fi
finish gpu-quick-1.json gpu-quick-1.md harness-validation.json layer-bench.json
