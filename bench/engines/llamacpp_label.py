"""Short labels of llama.cpp engines for tables and cell labels: the quantisation type first (what a
reader compares), then the thread count and every setting that differs from its default.

    llamacpp/Q4_K_M/t2            llamacpp/Q8_0/t2/kv-q8_0/fa-on         openai/llama-server/Q4_K_M/np4

Pure: an engine's settings dict in, a string out (no llama.cpp import).
"""

from __future__ import annotations

from typing import Any

# setting -> (default, short form of a non-default value)
_NOTED: dict[str, tuple[Any, str]] = {
    "threads_batch": (None, "tb{}"),
    "n_ctx": (4096, "ctx{}"),
    "n_batch": (2048, "b{}"),
    "n_ubatch": (512, "ub{}"),
    "flash_attn": ("auto", "fa-{}"),
    "kv_cache_type": ("f16", "kv-{}"),
    "use_mmap": (True, "mmap-{}"),
    "use_mlock": (False, "mlock-{}"),
    "numa": ("disabled", "numa-{}"),
    "n_gpu_layers": (0, "ngl{}"),
    "repack": ("auto", "repack-{}"),
}


def on_off(value: Any) -> str:
    """A llama.cpp switch as its flags spell it: on, off, or the value itself (auto)."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    return str(value)


def llamacpp_label(engine: dict[str, Any]) -> str:
    server = engine.get("server") or {}
    settings = server if server.get("kind") == "llamacpp" else engine
    parts = ["openai", "llama-server"] if settings is server else ["llamacpp"]
    parts.append(str(settings.get("quantization") or "gguf"))
    if settings.get("threads") not in (None, "auto"):
        parts.append(f"t{settings['threads']}")
    if settings is server:
        parts.append(f"np{server.get('parallel', 4)}")
        if server.get("cont_batching") is False:
            parts.append("no-cb")
    defaults = dict(_NOTED)
    if settings is server:
        defaults["n_ctx"] = (8192, "ctx{}")
    for key, (default, form) in defaults.items():
        value = settings.get(key, default)
        if value != default:
            parts.append(form.format(on_off(value)))
    return "/".join(parts)
