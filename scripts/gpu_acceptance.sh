#!/usr/bin/env bash
# lokaal-bench's GPU acceptance run (issue 17), for a lent GPU machine with no package index:
# installs lokaal-bench from this working tree and the carried wheels (.whl/, see
# scripts/fetch_gpu_wheels.sh; nothing is downloaded), then within a 6-minute budget runs
# `lokaal-bench env`, `lokaal-bench probe`, the cards' materialisation, profiles/gpu-acceptance.yaml
# (transformers on CUDA, bf16) and `pytest -m gpu`, each under its own limit. After every step it
# rewrites summary.md (one page, with checks against physics), summary.json and
# gpu-acceptance.tar.gz (result set, logs, inventory, probes) in --out (default $OUT).
#
#   scripts/gpu_acceptance.sh [--out DIR] [--budget-s 360]      # on the GPU machine
#   scripts/gpu_acceptance.sh --dry-run --out /tmp/acc           # on a CPU machine: what can run there
#
# Exit 0 when every step and check passed (UNKNOWN allowed), 1 otherwise. The logic is in
# bench/acceptance/ (python -m bench.acceptance --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m bench.acceptance "$@"   # PYTHON: another interpreter (a venv, the tests' own)
