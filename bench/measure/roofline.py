"""Roofline efficiency per cell: the bound the probed hardware puts on prefill and decode at the
cell's batch size and context, and the measured fraction of it. Pure: a cell summary and the
run's probes in, a small dict out.

Decode (one token per sequence per step) must read every weight once per step and each sequence's
KV cache: tok/s <= batch x bandwidth / (weights + batch x context x KV bytes per token), and
<= peak FLOP/s / FLOPs per token. Prefill is compute-bound: tok/s <= peak FLOP/s / FLOPs per
token (attention over the context included), and <= tokens per batch x bandwidth / weights.
"""

from __future__ import annotations

from typing import Any

_TFLOPS_KEY = {"float32": "float32_tflops", "bfloat16": "bfloat16_tflops", "float16": "float16_tflops"}


def model_inputs(config: dict[str, Any], dtype: str, gguf: dict[str, Any] | None = None,
                 kv_cache_type: str | None = None) -> dict[str, Any] | None:
    """A model's bytes and FLOPs per token from its config (None for an architecture the analytic
    formulas of bench/models/cards.py do not know). A GGUF model (llama.cpp) brings its file's real
    tensor bytes (a Q4_K_M file is Q4_K and Q6_K mixed), the bytes a decode step reads (an input
    embedding table beside a separate output matrix is only looked up), and its KV-cache type."""
    from bench.models import Card
    from bench.models.gguf_types import kv_bytes_per_element

    card = Card("model", "model", None, "", "", config)
    try:
        if gguf is not None:
            kv_scale = kv_bytes_per_element(kv_cache_type or "f16") / 2
            return {
                "weight_bytes": int(gguf["tensor_bytes"]),
                "decode_read_bytes": int(gguf.get("decode_read_bytes") or gguf["tensor_bytes"]),
                "kv_cache_bytes_per_token": int(card.kv_cache_bytes_per_token("float16") * kv_scale),
                "kv_cache_type": kv_cache_type or "f16",
                "quantization": gguf.get("file_type"),
                "flops_per_token": card.flops_per_token(0),
                "attention_flops_per_token_per_context": card.flops_per_token(1) - card.flops_per_token(0),
            }
        return {
            "weight_bytes": card.weight_bytes(dtype),
            "kv_cache_bytes_per_token": card.kv_cache_bytes_per_token(dtype),
            "flops_per_token": card.flops_per_token(0),
            "attention_flops_per_token_per_context": card.flops_per_token(1) - card.flops_per_token(0),
        }
    except (KeyError, ValueError, TypeError):
        return None


def hardware_limits(probes: dict[str, Any], device: str, dtype: str) -> dict[str, Any] | None:
    """Bandwidth (bytes/s) and peak FLOP/s of the device a cell ran on, from the run's probes."""
    if not probes or probes.get("error"):
        return None
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        gpus = probes.get("gpus") or []
        if index >= len(gpus):
            return None
        bandwidth = gpus[index].get("memory_bandwidth_gb_s")
        tflops = (gpus[index].get("matmul") or {}).get(_TFLOPS_KEY.get(dtype, ""))
    else:
        bandwidth = (probes.get("host_memory") or {}).get("read_gb_s")
        tflops = (probes.get("host_matmul") or {}).get(_TFLOPS_KEY.get(dtype, ""))
    if not bandwidth or not tflops:
        return None
    return {"device": device, "dtype": dtype, "bandwidth_bytes_s": bandwidth * 1e9, "flops_s": tflops * 1e12}


def _phase(measured: float | None, bounds: dict[str, float]) -> dict[str, Any]:
    limited_by = min(bounds, key=bounds.__getitem__)
    bound = bounds[limited_by]
    return {
        "bound_tok_s": bound,
        "limited_by": limited_by,
        "measured_tok_s": measured,
        "fraction": measured / bound if measured is not None and bound > 0 else None,
    }


def bounds(model: dict[str, Any], limits: dict[str, Any], batch: int, prompt: float, output: float,
           depth: float = 0) -> dict[str, dict[str, Any]]:
    """Prefill and decode bounds (tok/s) and what limits each, for a model's size facts on hardware limits."""
    bandwidth, flops = limits["bandwidth_bytes_s"], limits["flops_s"]
    weights, kv = model["weight_bytes"], model["kv_cache_bytes_per_token"]
    per_context = model["attention_flops_per_token_per_context"]
    decode_context = depth + prompt + output / 2  # the mean cache length while decoding
    prefill_context = depth + prompt / 2  # a prompt token attends to half the prompt, on average
    read = model.get("decode_read_bytes", weights)  # GGUF: what a step reads (see model_inputs)
    return {
        "decode": {
            "memory bandwidth": batch * bandwidth / (read + batch * decode_context * kv),
            "compute": flops / (model["flops_per_token"] + per_context * decode_context),
        },
        "prefill": {
            "compute": flops / (model["flops_per_token"] + per_context * prefill_context),
            "memory bandwidth": batch * prompt * bandwidth / weights,
        },
    }


def cell_shape(summary: dict[str, Any]) -> dict[str, float]:
    """Batch size, mean prompt and output tokens, and context depth of a completed cell."""
    metrics = summary["metrics"]
    scenario = summary["config"]["scenario"]
    ok = max(metrics["requests"]["ok"], 1)
    return {
        "batch": scenario.get("batch_size", 1),
        "prompt": metrics["input_tokens"]["value"] / ok,
        "output": metrics["output_tokens"]["value"] / ok,
        "depth": scenario.get("depth", 0),
    }


def for_cell(summary: dict[str, Any], probes: dict[str, Any]) -> dict[str, Any] | None:
    """Prefill and decode bounds and fractions for one completed cell; None when a fact is missing."""
    model = (summary.get("model") or {}).get("roofline_inputs")
    engine = summary.get("engine") or {}
    metrics = summary.get("metrics") or {}
    if summary.get("status") != "COMPLETED" or not model or not metrics:
        return None
    # llama.cpp's quantised kernels have no probed FLOP/s of their own: its engine names the proxy.
    compute = str(engine.get("compute_dtype") or engine.get("dtype", ""))
    limits = hardware_limits(probes, str(engine.get("device", "cpu")), compute)
    if limits is None:
        return None
    shape = cell_shape(summary)
    phase_bounds = bounds(model, limits, **shape)
    return {
        **limits,
        "batch_size": shape["batch"],
        "decode": _phase((metrics.get("decode_tok_s") or {}).get("value"), phase_bounds["decode"]),
        "prefill": _phase((metrics.get("prefill_tok_s") or {}).get("value"), phase_bounds["prefill"]),
    }
