#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (pydantic, jsonschema, cryptography and their needs: the
# list and versions are in bench/acceptance/wheels.py) into .whl/, for CPython 3.12 on manylinux
# x86-64. Run it where PyPI is reachable; the GPU machine has no package index. The folder is
# ignored by git; carry it (device tool: carry [".whl"]), and scripts/gpu_acceptance.sh installs it
# with pip --no-index. usage: scripts/fetch_gpu_wheels.sh [DIR]   (default .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mapfile -t wanted < <(PYTHONPATH="$PWD" python3 -m bench.acceptance.wheels --requirements)
platforms=()
# pip matches a manylinux_2_N tag only for the N it is given: name the ones these wheels use.
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" "${wanted[@]}"
# One version of each, all fit for cp312 x86-64, nothing missing: else exit 1 and say why.
PYTHONPATH="$PWD" python3 -m bench.acceptance.wheels --plan "$dest" >"$dest/plan.json" || {
  python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["problems"]))' "$dest/plan.json" >&2
  exit 1
}
du -sh "$dest"
