#!/usr/bin/env bash
# CI tier: llama.cpp. Installs the [llamacpp] extra as docs/llamacpp.md says (llama-cpp-python builds
# from source: about 5 minutes on 2 cores), builds llama-server and llama-bench from the llama.cpp source
# it vendors (scripts/build_llama_cpp_tools.sh, about 3 to 6 minutes more; reused when cached), then runs
# the llama.cpp tests with LOKAAL_BENCH_REQUIRE_ENGINES=llamacpp, so a test that would skip (the bindings
# or llama-server missing) fails instead. The tests take about 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
pip install -e ".[test,llamacpp]"
scripts/build_llama_cpp_tools.sh
LOKAAL_BENCH_REQUIRE_ENGINES=llamacpp pytest -m llamacpp
