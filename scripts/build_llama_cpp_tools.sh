#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `llama-bench` from exactly the llama.cpp source that
# llama-cpp-python vendors (its sdist's vendor/llama.cpp), so the served cells and the parity script
# run the same llama.cpp as the in-process `llamacpp` engine. An install step, run by the user (and by
# CI) once per llama-cpp-python version; lokaal-bench itself never downloads or builds anything.
#
#   scripts/build_llama_cpp_tools.sh [VERSION]      # default: the installed llama-cpp-python's version
#
# Result: $LOKAAL_BENCH_LLAMA_CPP_DIR/<version>/bin/{llama-server,llama-bench} (default directory
# ~/.cache/lokaal-bench/llama.cpp), with build-info.json beside bin/. An existing build is reused.
#
# Environment:
#   LLAMA_CPP_SDIST=FILE   use this llama_cpp_python-<version>.tar.gz instead of `pip download`
#                          (an air-gapped machine: carry the sdist in)
#   JOBS=N                 parallel compile jobs (default: all cores)
#   FORCE=1                rebuild even when a build exists
# The build is native (-march=native, as pip builds the bindings), CPU only unless CMAKE_ARGS adds a
# backend (e.g. CMAKE_ARGS="-DGGML_CUDA=ON", the variable llama-cpp-python's own build reads too).
# About 3 to 6 minutes on 2 cores.
set -euo pipefail

PYTHON="${PYTHON:-python}"
VERSION="${1:-$("$PYTHON" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))' 2>/dev/null || true)}"
if [ -z "$VERSION" ]; then
  echo "llama-cpp-python is not installed and no version was given: pip install -e '.[llamacpp]' first" >&2
  exit 2
fi
ROOT="${LOKAAL_BENCH_LLAMA_CPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lokaal-bench/llama.cpp}/$VERSION"
BIN="$ROOT/bin"
if [ -z "${FORCE:-}" ] && [ -x "$BIN/llama-server" ] && [ -x "$BIN/llama-bench" ] && [ -f "$ROOT/build-info.json" ]; then
  echo "llama.cpp tools for llama-cpp-python $VERSION already built: $BIN"
  exit 0
fi
mkdir -p "$ROOT/sdist"

SDIST="${LLAMA_CPP_SDIST:-}"
if [ -z "$SDIST" ]; then
  SDIST="$(ls "$ROOT"/sdist/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)"
fi
if [ -z "$SDIST" ]; then
  echo "fetching the llama-cpp-python $VERSION source distribution (pip download)"
  "$PYTHON" -m pip download --no-binary :all: --no-deps --no-build-isolation "llama-cpp-python==$VERSION" \
    -d "$ROOT/sdist" >/dev/null 2>&1 \
    || "$PYTHON" -m pip download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$ROOT/sdist"
  SDIST="$ROOT/sdist/llama_cpp_python-$VERSION.tar.gz"
fi
[ -f "$SDIST" ] || { echo "no sdist at $SDIST" >&2; exit 2; }

SRC="$ROOT/src"
rm -rf "$SRC"
mkdir -p "$SRC"
tar -xzf "$SDIST" -C "$SRC" --strip-components=1
LLAMA="$SRC/vendor/llama.cpp"
[ -f "$LLAMA/CMakeLists.txt" ] || { echo "$SDIST vendors no llama.cpp source (vendor/llama.cpp)" >&2; exit 2; }

JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
BUILD="$ROOT/build"
start=$(date +%s)
# No network at build time: the server's web UI is neither built (npm) nor fetched (Hugging Face),
# and no HTTPS client is compiled in (the tools are given local files).
# shellcheck disable=SC2086
cmake -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON ${CMAKE_ARGS:-} >"$ROOT/cmake-configure.log" 2>&1 \
  || { tail -30 "$ROOT/cmake-configure.log" >&2; exit 1; }
cmake --build "$BUILD" --config Release -j "$JOBS" --target llama-server llama-bench >"$ROOT/cmake-build.log" 2>&1 \
  || { tail -30 "$ROOT/cmake-build.log" >&2; exit 1; }
seconds=$(( $(date +%s) - start ))

mkdir -p "$BIN"
for tool in llama-server llama-bench; do
  found="$(find "$BUILD" -type f -name "$tool" -perm -u+x | head -1)"
  [ -n "$found" ] || { echo "the build made no $tool" >&2; exit 1; }
  cp "$found" "$BIN/$tool"
done
"$PYTHON" - "$ROOT" "$VERSION" "$SDIST" "$seconds" "$JOBS" "${CMAKE_ARGS:-}" <<'EOF'
import hashlib, json, os, platform, subprocess, sys
root, version, sdist, seconds, jobs, extra = sys.argv[1:]
def tool_version(name):
    try:
        done = subprocess.run([os.path.join(root, "bin", name), "--version"], capture_output=True, text=True, timeout=60)
        return (done.stdout + done.stderr).strip().splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        return [str(exc)]
info = {
    "llama_cpp_python": version,
    "sdist": os.path.basename(sdist),
    "sdist_sha256": hashlib.sha256(open(sdist, "rb").read()).hexdigest(),
    "source": "vendor/llama.cpp of the sdist",
    "build_seconds": int(seconds),
    "jobs": int(jobs),
    "cmake_args_extra": extra,
    "machine": platform.machine(),
    "llama_server_version": tool_version("llama-server"),
    "llama_bench_version": tool_version("llama-bench"),
}
with open(os.path.join(root, "build-info.json"), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
EOF
rm -rf "$SRC" "$BUILD"  # the binaries and the sdist stay (a rebuild needs no download)
echo "built llama-server and llama-bench for llama-cpp-python $VERSION in ${seconds}s: $BIN"
