"""llama.cpp's own `llama-server` as a managed server (server kind `llamacpp`): where its binary is, and
the command line from the profile's settings. bench/serving/managed.py starts it on 127.0.0.1, waits
for /health, and stops it; the cells measure it through the openai engine.

The binary is built by scripts/build_llama_cpp_tools.sh from the llama.cpp source llama-cpp-python
vendors, into <cache>/llama.cpp/<llama-cpp-python version>/bin. It is found, in order: the profile's
`binary`, $LOKAAL_BENCH_LLAMA_SERVER, that build cache (for the installed llama-cpp-python version,
then any version), PATH. Nothing is downloaded or built at run time.
"""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.engines.llamacpp_label import on_off
from bench.profile.engine_specs import LlamaServerSpec
from bench.serving.managed import ServerStartError

BINARY_ENV = "LOKAAL_BENCH_LLAMA_SERVER"
TOOLS_DIR_ENV = "LOKAAL_BENCH_LLAMA_CPP_DIR"


class LlamaServerMissing(ServerStartError):
    """No llama-server (or llama-bench) binary: the served cells fail with this reason, the run goes on."""


def tools_root() -> Path:
    configured = os.environ.get(TOOLS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lokaal-bench" / "llama.cpp"


def bindings_version() -> str | None:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def find_tool(name: str, explicit: str | None = None, env: str | None = None) -> Path:
    """A llama.cpp tool (llama-server, llama-bench) as described above; LlamaServerMissing says how to get it."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise LlamaServerMissing(f"{name} not found at {path} (the profile's `binary`)")
    if env and os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise LlamaServerMissing(f"{name} not found at {path} (${env})")
    root = tools_root()
    version = bindings_version()
    candidates = [root / version / "bin" / name] if version else []
    candidates += sorted(root.glob(f"*/bin/{name}"), reverse=True)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    raise LlamaServerMissing(
        f"{name} is not built: run scripts/build_llama_cpp_tools.sh (it builds llama-server and llama-bench from "
        f"the llama.cpp source llama-cpp-python {version or '(not installed)'} vendors, into {root}), or set "
        f"${env or BINARY_ENV} to a {name} binary")


def build_record(binary: Path) -> dict[str, Any] | None:
    """The build-info.json the build script wrote beside bin/ (version, sdist hash, build time)."""
    import json

    info = binary.parent.parent / "build-info.json"
    try:
        return json.loads(info.read_text())
    except (OSError, ValueError):
        return None


_LOAD_MODE = {(True, True): "mmap+mlock", (True, False): "mmap", (False, True): "mlock", (False, False): "none"}


def llama_server_command(spec: LlamaServerSpec, model: Path, port: int) -> list[str]:
    """llama-server on `model` (a GGUF) bound to 127.0.0.1:`port`, with the profile's settings. Benchmark
    hygiene: no prompt cache kept in RAM across requests (--cache-ram 0), /metrics on, no web UI."""
    from bench.engines.llamacpp_engine import cpu_has_amx, resolve_repack, resolve_threads

    binary = find_tool("llama-server", spec.binary, BINARY_ENV)
    threads = resolve_threads(spec.threads)
    command = [
        str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(spec.parallel),
        "--cont-batching" if spec.cont_batching else "--no-cont-batching",
        "--ctx-size", str(spec.n_ctx), "--kv-unified",
        "--threads", str(threads), "--threads-batch", str(resolve_threads(spec.threads_batch or threads)),
        "--batch-size", str(spec.n_batch), "--ubatch-size", str(spec.n_ubatch),
        "--flash-attn", on_off(spec.flash_attn),
        "--cache-type-k", spec.kv_cache_type, "--cache-type-v", spec.kv_cache_type,
        "--n-gpu-layers", str(spec.n_gpu_layers),
        "--load-mode", _LOAD_MODE[(spec.use_mmap, spec.use_mlock)],
        "--cache-ram", "0", "--metrics", "--no-webui", "--offline", "--alias", model.stem,
    ]
    if spec.numa != "disabled":
        command += ["--numa", spec.numa]
    if not resolve_repack(spec.repack, cpu_has_amx()):  # the binary is built natively: AMX where the CPU has it
        command.append("--no-repack")
    return command + list(spec.args)
