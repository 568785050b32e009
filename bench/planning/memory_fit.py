"""Fit: does a model fit in a machine's memory at a context length and concurrency, and what is
the longest context (or the largest batch) that does? Pure arithmetic on a card's config.

    needed = weights + concurrency x context x (KV cache per token) + activations + runtime overhead

Activations are the prefill working set of the widest layer for a chunk of tokens (transformers
computes logits for the last token only while generating). Runtime overhead is what a process
holds before the model (interpreter, torch, CUDA context); `measured_check` compares the formula
with the peak memory cells actually used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.measure.metrics import peak_host_bytes
from bench.models.cards import DTYPE_BYTES, Card, normalise_dtype

GIB = 2**30
# What a process holds before any weight: measured ~0.4 GiB RSS for torch + transformers on the CPU
# (tiny-llama cells); a CUDA context and allocator reserve add about 1 GiB on a GPU.
RUNTIME_OVERHEAD = {"cpu": int(0.5 * GIB), "gpu": int(1.5 * GIB)}
PREFILL_CHUNK = 2048  # tokens of one prefill pass whose activations are alive at once


@dataclass(frozen=True)
class FitResult:
    card: str
    dtype: str
    context: int
    concurrency: int
    weights: int
    kv_cache: int
    activations: int
    overhead: int
    capacity: int

    @property
    def needed(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.overhead

    @property
    def fits(self) -> bool:
        return self.needed <= self.capacity

    @property
    def headroom(self) -> int:
        return self.capacity - self.needed


def activation_bytes(card: Card, dtype: str, context: int, concurrency: int) -> int:
    """The widest layer's working set for one prefill chunk of each sequence (hidden states,
    attention projections and the MLP's intermediate), a deliberately simple upper estimate."""
    config = card.config
    hidden = int(config.get("hidden_size", 0))
    intermediate = int(config.get("intermediate_size", 4 * hidden))
    tokens = min(context, PREFILL_CHUNK) * concurrency
    return tokens * (4 * hidden + 2 * intermediate) * DTYPE_BYTES[normalise_dtype(dtype)]


def fit_memory(card: Card, dtype: str, context: int, concurrency: int, capacity: int, device: str = "cpu",
               quantization: str | None = None, kv_cache_type: str | None = None,
               weight_bytes: int | None = None) -> FitResult:
    """`quantization` (a GGUF type, llama.cpp): weights at its size (`weight_bytes` when a file says
    exactly), the KV cache at `kv_cache_type` (f16, q8_0, q4_0), activations in float32 (llama.cpp's)."""
    if quantization is not None:
        from bench.models.gguf_types import kv_bytes_per_element, normalise_quantization, weight_bytes_estimate

        kv_type = kv_cache_type or "f16"
        per_token = card.kv_cache_bytes_per_token("float16") * kv_bytes_per_element(kv_type) / 2
        return FitResult(
            card=card.name,
            dtype=f"{normalise_quantization(quantization)} (KV {kv_type})",
            context=context,
            concurrency=concurrency,
            weights=weight_bytes or weight_bytes_estimate(card.parameter_count(), quantization),
            kv_cache=int(concurrency * context * per_token),
            activations=activation_bytes(card, "float32", context, concurrency),
            overhead=RUNTIME_OVERHEAD[device],
            capacity=capacity,
        )
    return FitResult(
        card=card.name,
        dtype=normalise_dtype(dtype),
        context=context,
        concurrency=concurrency,
        weights=card.weight_bytes(dtype),
        kv_cache=concurrency * context * card.kv_cache_bytes_per_token(dtype),
        activations=activation_bytes(card, dtype, context, concurrency),
        overhead=RUNTIME_OVERHEAD[device],
        capacity=capacity,
    )


def largest(card: Card, dtype: str, capacity: int, device: str, *, context: int | None = None,
            concurrency: int | None = None, quantization: str | None = None, kv_cache_type: str | None = None) -> int:
    """The longest context (given a concurrency) or the largest concurrency (given a context) that
    fits, up to the model's maximum context; 0 when even one token does not."""
    limit = int(card.config.get("max_position_embeddings", 131072))
    gguf = {"quantization": quantization, "kv_cache_type": kv_cache_type}
    if context is None:
        def fits_at(n: int) -> bool:
            return fit_memory(card, dtype, n, concurrency or 1, capacity, device, **gguf).fits
        high = limit
    else:
        def fits_at(n: int) -> bool:
            return fit_memory(card, dtype, context, n, capacity, device, **gguf).fits
        high = 1 << 20
    if not fits_at(1):
        return 0
    low = 1
    while low < high:  # the largest n with fits_at(n): memory grows monotonically with n
        middle = (low + high + 1) // 2
        if fits_at(middle):
            low = middle
        else:
            high = middle - 1
    return low


def capacity_of(environment: dict[str, Any], device: str, gpus: int = 1) -> int:
    """Memory a model may use: host RAM on the CPU; on GPUs, the first `gpus` devices' memory."""
    if device == "cpu":
        return int((environment.get("memory") or {}).get("total_bytes") or 0)
    devices = (environment.get("gpus") or {}).get("devices") or []
    return sum(int(d.get("memory_total_bytes") or 0) for d in devices[:gpus])


def measured_check(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The formula beside what completed cells really used: peak RSS on the CPU, peak GPU memory."""
    from bench.models import load_card

    rows = []
    for summary in summaries:
        card_name = ((summary.get("config") or {}).get("model") or {}).get("card")
        if summary.get("status") != "COMPLETED" or not card_name:
            continue
        engine = summary.get("engine") or {}
        device = "gpu" if str(engine.get("device", "cpu")).startswith("cuda") else "cpu"
        metrics = summary["metrics"]
        ok = max(metrics["requests"]["ok"], 1)
        scenario = summary["config"]["scenario"]
        context = int(scenario.get("depth", 0) + (metrics["input_tokens"]["value"] + metrics["output_tokens"]["value"])
                      / ok)
        settings = summary["config"].get("engine") or {}
        gguf = (summary.get("model") or {}).get("gguf")
        if gguf:  # llama.cpp: the file's real tensor bytes and the cell's KV-cache type
            predicted = fit_memory(load_card(card_name), "float16", context, scenario.get("batch_size", 1), 0, device,
                                   quantization=gguf.get("file_type") or "F16",
                                   kv_cache_type=engine.get("kv_cache_type") or settings.get("kv_cache_type"),
                                   weight_bytes=gguf.get("tensor_bytes")).needed
        else:
            predicted = fit_memory(load_card(card_name), engine.get("dtype", "bfloat16"), context,
                                   scenario.get("batch_size", 1), 0, device).needed
        memory = summary.get("memory") or {}
        measured = (max(memory.get("gpu_used_peak_bytes") or [0]) if device == "gpu"
                    else peak_host_bytes(memory))
        if measured:
            rows.append({"cell": summary["label"], "predicted_bytes": predicted, "measured_bytes": measured,
                         "error": predicted / measured - 1})
    return rows
