#!/usr/bin/env bash
# The second GPU call: part 2 of suites/gpu-quick.yaml, the compilers (about 6 minutes on an H200).
#
#   scripts/gpu-check-2.sh            on a GPU machine (results in $OUT, default ./gpu-check-out)
#   scripts/gpu-check-2.sh --dry-run  the same on this machine's CPU at toy size
#
# Steps: wheels, env (as scripts/gpu-check.sh), then
#   c2  ResNet-50 bf16 at batch 1, 32, 256: eager (each run file's parity baseline), torch.compile (default
#       mode) and AOTInductor. Cold caches: ~1 min of Inductor compile per batch size for compile, ~30-60 s for
#       AOTInductor (its Triton kernels partly come from compile's cache).
# Estimated device time: wheels + env 15 s | c2 3 x (worker 6 s + eager 5 s + compile ~60 s + AOTI ~45 s)
# ~ 350 s  =>  ~6 minutes, under the 540 s budget.
source "$(dirname "$0")/gpu-check-lib.sh"

step wheels 60 install_wheels
step env 60 print_environment
step c2 480 run_suite gpu-quick-2 suites/gpu-quick.yaml eager compile aot-inductor
finish gpu-quick-2.json gpu-quick-2.md
