"""Probes measure this machine; rooflines turn them and a model's size into bounds (checked by hand)."""

from __future__ import annotations

import pytest

from bench.measure.roofline import for_cell, hardware_limits
from bench.run.probes import run_probes

PROBES = {"host_memory": {"read_gb_s": 20.0}, "host_matmul": {"float32_tflops": 0.1},
          "gpus": [{"memory_bandwidth_gb_s": 4000.0, "matmul": {"bfloat16_tflops": 700.0}}]}


def summary(decode: float, prefill: float, batch: int = 2, depth: int = 0) -> dict:
    return {
        "status": "COMPLETED",
        "config": {"scenario": {"kind": "offline", "batch_size": batch, "depth": depth}},
        "engine": {"device": "cpu", "dtype": "float32"},
        "model": {"roofline_inputs": {"weight_bytes": 1_000_000, "kv_cache_bytes_per_token": 1_000,
                                      "flops_per_token": 2_000_000, "attention_flops_per_token_per_context": 100}},
        "metrics": {"requests": {"ok": 4}, "input_tokens": {"value": 400}, "output_tokens": {"value": 80},
                    "decode_tok_s": {"value": decode}, "prefill_tok_s": {"value": prefill}},
    }


def test_decode_bound_is_bandwidth_over_bytes_per_step() -> None:
    result = for_cell(summary(decode=10_000.0, prefill=5_000.0), PROBES)
    # mean decode context: 100 prompt + 20/2 output = 110 tokens; a step reads 1e6 + 2*110*1e3 bytes
    bound = 2 * 20e9 / (1_000_000 + 2 * 110 * 1_000)
    assert result["decode"]["limited_by"] == "memory bandwidth"
    assert result["decode"]["bound_tok_s"] == pytest.approx(bound)
    assert result["decode"]["fraction"] == pytest.approx(10_000 / bound)
    # prefill: 0.1e12 FLOP/s over 2e6 + 100*50 FLOPs per token (half the 100-token prompt attended)
    assert result["prefill"]["limited_by"] == "compute"
    assert result["prefill"]["bound_tok_s"] == pytest.approx(0.1e12 / (2_000_000 + 100 * 50))


def test_gpu_limits_come_from_that_gpu() -> None:
    limits = hardware_limits(PROBES, "cuda:0", "bfloat16")
    assert limits["bandwidth_bytes_s"] == 4000e9 and limits["flops_s"] == 700e12
    assert hardware_limits(PROBES, "cuda:1", "bfloat16") is None
    assert hardware_limits({"error": "boom"}, "cpu", "float32") is None


def test_no_roofline_without_facts() -> None:
    failed = summary(1.0, 1.0)
    failed["status"] = "FAILED"
    assert for_cell(failed, PROBES) is None
    assert for_cell(summary(1.0, 1.0), {}) is None


def test_quick_probes_measure_this_machine(tmp_path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * (8 * 2**20))
    probes = run_probes(quick=True, model_dirs=[model])
    assert probes["host_memory"]["read_gb_s"] > 0.1
    assert probes["host_matmul"]["float32_tflops"] > 1e-4
    assert probes["disk"][0]["bytes"] == 8 * 2**20 and probes["disk"][0]["read_gb_s"] > 0
    assert probes["gpus"] == [] and probes["all_reduce"] is None
