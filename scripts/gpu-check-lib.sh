# shellcheck shell=bash
# Shared by scripts/gpu-check.sh and scripts/gpu-check-2.sh (sourced, not run): options, the wheel install,
# the environment print, timed steps under one overall budget, and the bundle of everything under $OUT.
#
# Conventions: run from anywhere; works from the repository root with `python3` (the project is not
# pip-installed on the device: PYTHONPATH is the repository). Every step writes its log to $WORK/<step>.log;
# $OUT receives at most 8 files (the device tool's limit): summary.txt, the run files and reports, and
# gpu-check-logs.tar.gz with everything else.

set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^$/p' "$0"; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$arg'; allowed: --dry-run, --help" >&2; exit 2 ;;
  esac
done

# The whole script's budget: one device command may run 600 s. A dry run gets 3x every limit: a shared
# 2-core CI machine can be several times slower than an idle one (its steps take ~1.5 min there when idle).
if [[ $DRY_RUN == 1 ]]; then SLOWER=3; else SLOWER=1; fi
BUDGET_S=${GPU_CHECK_BUDGET_S:-$(( 540 * SLOWER ))}
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
STARTED=$(date +%s)
SUMMARY="$WORK/summary.txt"
FAILED_STEPS=()
if [[ $DRY_RUN == 1 ]]; then
  # CPU fallbacks: every step's command runs at toy size; kernels run in the Triton interpreter
  export TRITON_INTERPRET=1 DEVICE=cpu
else
  unset TRITON_INTERPRET
  export DEVICE=cuda
fi
export PY WORK DRY_RUN
echo "$(basename "$0") $* ($( [[ $DRY_RUN == 1 ]] && echo "dry run, CPU" || echo device)) at $(date -u +%FT%TZ), budget ${BUDGET_S} s" | tee "$SUMMARY"

elapsed() { echo $(( $(date +%s) - STARTED )); }

# step NAME LIMIT_S CMD...: run CMD with its own time limit (never past the overall budget, 15 s kept for the
# bundle), log to $WORK/NAME.log, one summary line.
step() {
  local name=$1 limit=$(( $2 * SLOWER )); shift 2
  local left=$(( BUDGET_S - $(elapsed) - 15 ))
  if (( left < 10 )); then
    echo "$name: SKIPPED, the budget is spent ($(elapsed) s of ${BUDGET_S} s)" | tee -a "$SUMMARY"
    FAILED_STEPS+=("$name"); return
  fi
  (( limit > left )) && limit=$left
  local t0; t0=$(date +%s)
  echo "== $name (limit ${limit} s): $*" | tee -a "$WORK/$name.log"
  # bash -c: a step may be one of the functions below (exported), which `timeout` cannot run by itself
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$WORK/$name.log" 2>&1
  local rc=$? took=$(( $(date +%s) - t0 ))
  local verdict=ok
  if (( rc == 124 || rc == 137 )); then verdict="TIMED OUT"; elif (( rc != 0 )); then verdict="FAILED (exit $rc)"; fi
  [[ $verdict == ok ]] || FAILED_STEPS+=("$name")
  echo "$name: $verdict in ${took} s (limit ${limit} s)" | tee -a "$SUMMARY"
  tail -n 3 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
}

# The wheels the device image lacks (pydantic and its three dependencies, fetched beforehand into .whl/ by
# scripts/fetch-device-wheels.sh and carried with the call). On the device they go to a site folder first on
# PYTHONPATH. In the dry run (Python of this machine) they are installed for CPython 3.12 into a scratch folder
# and only checked: the device's wheels do not load here.
install_wheels() {
  if [[ ! -d .whl ]] || ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "no .whl/ folder: pydantic must already be importable ($($PY -c 'import pydantic; print(pydantic.VERSION)' 2>&1 | tail -n 1))"
    return 0
  fi
  local site="${TMPDIR:-/tmp}/resbench-site"
  if [[ $DRY_RUN == 1 ]]; then
    site="$WORK/site-cp312"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 --only-binary=:all: .whl/*.whl || return 1
    ls "$site" | grep -E '^(pydantic|pydantic_core|annotated_types|typing_inspection)$' | tr '\n' ' '; echo "(cp312, not imported here)"
    return 0
  fi
  if ! $PY -c "import pydantic" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || return 1
    export PYTHONPATH="$site:$PYTHONPATH"
    if ! $PY -c "import pydantic" 2>/dev/null && compgen -G ".whl/fallback/*.whl" >/dev/null; then
      echo "pydantic does not import with this image's typing_extensions: installing the carried one"
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/fallback/*.whl
    fi
  fi
  $PY -c "import pydantic, pydantic_core; print('pydantic', pydantic.VERSION, 'core', pydantic_core.__version__)"
}

print_environment() {
  echo "--- machine"; uname -a; nproc; free -g 2>/dev/null | head -2; df -h "${TMPDIR:-/tmp}" | tail -1
  echo "--- nvidia-smi"; nvidia-smi 2>&1 | head -20 || true
  echo "--- python"; $PY -c "import sys; print(sys.version)"
  $PY -m pip list 2>/dev/null | grep -i -E '^(torch|triton|numpy|pydantic|pydantic.core|typing.extensions|typer|rich|pyyaml|onnxruntime|nvidia-ml-py|pytest|pytest-benchmark) ' || true
  echo "--- resbench env"; $PY -m resbench.cli env --device "$DEVICE"
  echo "--- Triton cache: ${TRITON_CACHE_DIR:-$HOME/.triton/cache}: $(du -sh "${TRITON_CACHE_DIR:-$HOME/.triton/cache}" 2>/dev/null | cut -f1)"
}

# suite_part SUITE OUTFILE LABEL...: SUITE with only the backends of those labels (e.g. eager,
# 'triton[cuda_graphs=False]'), written as a new suite file: one suite, measured across two calls.
suite_part() {
  local src=$1 dst=$2; shift 2
  $PY - "$src" "$dst" "$@" <<'PYEOF'
import sys
import yaml
from resbench.suite import load_suite
src, dst, labels = sys.argv[1], sys.argv[2], sys.argv[3:]
suite = load_suite(src)
kept = [entry for entry in suite.backends if entry.label in labels]
missing = sorted(set(labels) - {entry.label for entry in kept})
if missing:
    sys.exit(f"{src} has no backend labelled {missing}; it has {[entry.label for entry in suite.backends]}")
data = suite.model_dump(mode="json")
data["backends"] = [{"name": entry.name, **entry.options} for entry in kept]
with open(dst, "w") as handle:
    yaml.safe_dump(data, handle, sort_keys=False)
print(f"{dst}: {', '.join(labels)}")
PYEOF
}

# run_suite NAME SUITE LABEL...: that part of SUITE -> $WORK/NAME.json, its Markdown report -> $WORK/NAME.md
run_suite() {
  local name=$1 suite=$2; shift 2
  suite_part "$suite" "$WORK/$name.yaml" "$@" || return 1
  $PY -m resbench.cli run "$WORK/$name.yaml" --out "$WORK/$name.json" --device "$DEVICE" || return 1
  $PY -m resbench.cli report "$WORK/$name.json" --md "$WORK/$name.md"
}

export -f install_wheels print_environment suite_part run_suite

# finish FILE...: copy FILEs (from $WORK) to $OUT, tar the rest, print the summary; exit 1 if a step failed
finish() {
  echo "total: $(elapsed) s of ${BUDGET_S} s" | tee -a "$SUMMARY"
  local file
  for file in "$@"; do [[ -f "$WORK/$file" ]] && cp "$WORK/$file" "$OUT/"; done
  tar czf "$OUT/gpu-check-logs.tar.gz" -C "$WORK" --exclude='site-cp312' . 2>/dev/null
  cp "$SUMMARY" "$OUT/summary.txt"
  echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  rm -rf "$WORK"
  if (( ${#FAILED_STEPS[@]} )); then echo "failed steps: ${FAILED_STEPS[*]}"; exit 1; fi
  exit 0
}
