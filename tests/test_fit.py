"""Fit: weights + KV cache + activations + overhead against a capacity, checked by hand."""

from __future__ import annotations

import subprocess
import sys

from bench.models import load_card
from bench.planning.memory_fit import GIB, RUNTIME_OVERHEAD, fit_memory, largest, measured_check


def test_llama_8b_bf16_by_hand() -> None:
    card = load_card("llama-3.1-8b")
    result = fit_memory(card, "bf16", context=4096, concurrency=2, capacity=24 * GIB)
    assert result.weights == 8_030_261_248 * 2
    # K and V x 32 layers x 8 KV heads x 128 dims x 2 bytes = 131,072 bytes per token
    assert result.kv_cache == 2 * 4096 * 131_072
    assert result.activations == 2 * 2048 * (4 * 4096 + 2 * 14336) * 2
    assert result.overhead == RUNTIME_OVERHEAD["cpu"]
    assert result.fits and result.headroom == 24 * GIB - result.needed


def test_largest_is_the_edge_of_fitting() -> None:
    card = load_card("llama-3.1-8b")
    capacity = 18 * GIB
    context = largest(card, "bfloat16", capacity, "cpu", concurrency=1)
    assert fit_memory(card, "bfloat16", context, 1, capacity).fits
    assert not fit_memory(card, "bfloat16", context + 1, 1, capacity).fits
    sequences = largest(card, "bfloat16", capacity, "cpu", context=8192)
    assert fit_memory(card, "bfloat16", 8192, sequences, capacity).fits
    assert not fit_memory(card, "bfloat16", 8192, sequences + 1, capacity).fits
    assert largest(load_card("llama-3.3-70b"), "bfloat16", capacity, "cpu", concurrency=1) == 0


def test_measured_check_compares_with_peak_memory() -> None:
    summary = {
        "status": "COMPLETED", "label": "x",
        "config": {"model": {"card": "tiny-llama"}, "scenario": {"batch_size": 1}},
        "engine": {"device": "cpu", "dtype": "float32"},
        "metrics": {"requests": {"ok": 2}, "input_tokens": {"value": 200}, "output_tokens": {"value": 40}},
        "memory": {"peak_rss_bytes": GIB // 2},
    }
    (row,) = measured_check([summary])
    expected = fit_memory(load_card("tiny-llama"), "float32", 120, 1, 0).needed
    assert row["predicted_bytes"] == expected and row["error"] == expected / (GIB // 2) - 1


def test_fit_command_lists_every_card() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "fit", "--memory-gib", "24", "--context", "8192"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "llama-3.3-70b" in done.stdout and "qwen2.5-0.5b" in done.stdout and "24.0 GiB" in done.stdout
