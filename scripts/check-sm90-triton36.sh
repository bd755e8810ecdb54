#!/usr/bin/env bash
# The sm_90 compile check (tests/kernels/test_sm90_compile.py) under Triton 3.6.0, the H200 image's version,
# next to the CI's Triton: 3.6.0 is installed into a side folder (`pip install --target`) and put first on
# PYTHONPATH, so the installed Triton and torch stay as they are. Needs PyPI once (the folder is reused).
#
#   scripts/check-sm90-triton36.sh [--table]     --table also prints `python -m kernels.aot_check` (REG/spills)
#
# Why: register allocation differs between Triton versions; under 3.6 the stem's old default tile spilled
# 968 bytes while 3.9 reported none (notes/gpu-audit.md, item 5). docs/kernels.md records both results.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.6.0
DIR=${TRITON_SIDE_DIR:-${TMPDIR:-/tmp}/resbench-triton-$VERSION}
PY=${PYTHON:-python3}
TABLE=0
for arg in "$@"; do
  case "$arg" in
    --table) TABLE=1 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$arg'; allowed: --table, --help" >&2; exit 2 ;;
  esac
done
if ! PYTHONPATH="$DIR" "$PY" -c "import triton, sys; sys.exit(triton.__version__ != '$VERSION')" 2>/dev/null; then
  echo "installing triton==$VERSION into $DIR"
  "$PY" -m pip install -q --no-deps --target "$DIR" "triton==$VERSION"
fi
export PYTHONPATH="$DIR:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import triton; print('Triton', triton.__version__, 'from', triton.__file__)"
"$PY" -m pytest tests/kernels/test_sm90_compile.py -q -p no:cacheprovider
if [[ $TABLE == 1 ]]; then
  "$PY" -m kernels.aot_check
fi
