#!/usr/bin/env bash
# Fetch the Python packages the H200 image lacks, as wheels for CPython 3.12 on manylinux x86_64, into .whl/
# (git-ignored). A device call carries the folder (`carry: [".whl"]`) and scripts/gpu-check.sh installs them
# with `pip install --no-index --no-deps --target` (the device reaches no registry).
#
#   scripts/fetch-device-wheels.sh [DEST]      (default: .whl)
#
# The image has typer, rich, pyyaml, numpy, scipy... but not pydantic, pydantic-core, annotated-types,
# typing-inspection (/work/.library/device/KINDS.md). The versions are pinned together: pydantic pins its core
# exactly. typing-extensions, which the image has, goes to DEST/fallback: installed only if pydantic does not
# import with the image's own.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
  -*) echo "$(basename "$0"): unknown option '$1'; usage: $(basename "$0") [DEST] (default .whl), or --help" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PINS=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2)
FALLBACK=(typing-extensions==4.15.0)
TARGET=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
PY=${PYTHON:-python3}

mkdir -p "$DEST/fallback"
"$PY" -m pip download -q "${TARGET[@]}" -d "$DEST" "${PINS[@]}"
"$PY" -m pip download -q "${TARGET[@]}" -d "$DEST/fallback" "${FALLBACK[@]}"

# Check what arrived: one wheel per package, the compiled core for cp312 x86_64, and pydantic's own pin.
status=0
for package in pydantic pydantic_core annotated_types typing_inspection; do
  count=$(find "$DEST" -maxdepth 1 -name "${package}-*.whl" | wc -l)
  if (( count != 1 )); then echo "expected one $package wheel in $DEST, found $count" >&2; status=1; fi
done
if ! compgen -G "$DEST/pydantic_core-*-cp312-cp312-*x86_64*.whl" >/dev/null; then
  echo "no cp312 x86_64 pydantic_core wheel in $DEST" >&2; status=1
fi
wanted_core=$(unzip -p "$DEST"/pydantic-[0-9]*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([^ ;]*\).*/\1/p')
if [[ " ${PINS[*]} " != *" pydantic-core==$wanted_core "* ]]; then
  echo "pydantic requires pydantic-core==$wanted_core; update PINS in $0" >&2; status=1
fi
ls -l "$DEST" "$DEST/fallback" | grep '\.whl'
echo "total $(du -sh "$DEST" | cut -f1) in $DEST (a device call carries at most 64 MiB)"
exit $status
