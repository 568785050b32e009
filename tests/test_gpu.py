"""What only a CUDA GPU can check (`pytest -m gpu`; scripts/gpu_acceptance.sh runs them on a lent
GPU machine, and here they skip, saying so): CUDA-event step times against the wall clock, the GPU
probes, NVML's fields on a real device, and a whole run on CUDA with NVML memory and energy per
token. The step-clock tests also run on the CPU, so their logic is checked everywhere."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import run_bench, tiny_profile


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


NEEDS_CUDA = pytest.mark.skipif(not _cuda(), reason="no CUDA GPU here (runs on a lent GPU machine: "
                                                     "scripts/gpu_acceptance.sh)")
ON_GPU = [pytest.mark.gpu, NEEDS_CUDA]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=ON_GPU)]


def _engine(device: str) -> tuple[Any, Any]:
    from bench.engines.transformers_engine import TransformersEngine
    from bench.models import resolve_model
    from bench.profile.engine_specs import TransformersEngineSpec

    dtype = "bfloat16" if device == "cuda" else "float32"
    model = resolve_model(card="tiny-llama", path=None, dtype=dtype, seed=0, cache_dir=None)
    settings = TransformersEngineSpec(kind="transformers", device=device, dtype=dtype, threads=1)
    engine = TransformersEngine(settings, str(model.path), {})
    engine.load()
    return engine, model


@pytest.mark.parametrize("device", DEVICES)
def test_step_times_of_generate_are_wall_clock_times_in_order(device: str) -> None:
    engine, model = _engine(device)
    prompts = [[10 + (i * 7 + j) % 500 for j in range(24)] for i in range(4)]
    before = time.perf_counter()
    result = engine.generate(prompts, [12] * 4)
    after = time.perf_counter()
    assert result.output_tokens == [12] * 4 and len(result.step_times) == 12
    assert before <= result.submit_time < result.step_times[0]
    assert all(a <= b for a, b in zip(result.step_times, result.step_times[1:], strict=False))
    # CUDA events become wall-clock times from the start event: the last token existed before
    # generate returned (a clock read on another stream or device would break this).
    assert result.step_times[-1] <= after + 0.002
    if device == "cuda":
        assert engine.memory()["gpu_peak_allocated_bytes"] >= model.weight_bytes
        assert engine.describe()["device"].startswith("cuda") and engine.describe()["cuda_version"]
    engine.close()


@pytest.mark.parametrize("device", DEVICES)
def test_step_times_of_prefill_decode_are_in_order(device: str) -> None:
    engine, _ = _engine(device)
    depth = [[20 + j % 300 for j in range(64)]] * 2
    prompts = [[30 + j % 300 for j in range(32)]] * 2
    before = time.perf_counter()
    result = engine.prefill_decode(depth, prompts, 8)
    after = time.perf_counter()
    assert len(result.step_times) == 8 and result.context_depth == 64
    assert before <= result.submit_time < result.step_times[0] <= result.step_times[-1] <= after + 0.002
    engine.close()


@pytest.mark.gpu
@NEEDS_CUDA
def test_nvml_reads_memory_power_clocks_and_a_rising_energy_counter() -> None:
    import torch

    from bench.telemetry.nvidia import NvidiaSampler

    sampler = NvidiaSampler.open()
    assert sampler is not None, NvidiaSampler.last_open_error
    with sampler:
        first = sampler.sample()[0]
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        started = time.perf_counter()
        while time.perf_counter() - started < 1.0:  # an amount of work, not a speed: about a second's worth
            for _ in range(20):
                a @ a
            torch.cuda.synchronize()
        second = sampler.sample()[0]
    assert second["mem_total_bytes"] and second["mem_used_bytes"] >= a.numel() * a.element_size()
    assert second["power_w"] and second["power_w"] > 0 and second["sm_clock_mhz"] and second["temp_c"] is not None
    assert first["energy_mj"] is not None and second["energy_mj"] > first["energy_mj"], (first, second)
    assert isinstance(second["clock_event_reasons"], list)


@pytest.mark.gpu
@NEEDS_CUDA
def test_the_inventory_has_the_gpu_facts() -> None:
    from bench.run.environment import gpu_info

    info = gpu_info()
    assert info["available"] and info["count"] >= 1, info["reason"]
    assert info["driver_version"] and info["cuda_driver_version"]
    device = info["devices"][0]
    for key in ("name", "uuid", "memory_total_bytes", "compute_capability", "power_limit_w"):
        assert device[key], (key, device)
    assert device["max_clocks_mhz"]["sm"] and device["clocks_mhz"]["sm"], device


@pytest.mark.gpu
@NEEDS_CUDA
def test_gpu_probes_stay_below_the_published_limits() -> None:
    from bench.acceptance.checks import published
    from bench.run.probes import gpu_probes

    gpu = gpu_probes(quick=True)[0]
    assert gpu["memory_bandwidth_gb_s"] > 0 and gpu["h2d_gb_s"] > 0 and gpu["d2h_gb_s"] > 0
    bf16 = gpu["matmul"]["bfloat16_tflops"]
    assert bf16 and bf16 > 0, gpu["matmul"]
    entry = published(gpu["name"])
    if entry is not None:  # physics: no measurement beats the datasheet
        assert gpu["memory_bandwidth_gb_s"] < entry[1]["memory_bandwidth_gb_s"]
        assert bf16 < entry[1]["tflops"]["bfloat16"]


@pytest.mark.gpu
@NEEDS_CUDA
def test_a_run_on_cuda_records_gpu_memory_energy_and_its_roofline(tmp_path: Path) -> None:
    profile = tiny_profile(
        engines=[{"kind": "transformers", "dtype": "bfloat16", "device": "cuda"}],
        workloads=[{"name": "w", "input_tokens": 64, "output_tokens": 64, "seed": 3}],
        scenarios=[{"kind": "single-stream", "requests": 4}, {"kind": "offline", "batch_sizes": [8], "batches": 2}],
        run={"repetitions": 2, "warmup": 1, "cell_timeout_s": 300, "telemetry_interval_s": 0.05, "probes": True},
    )
    out, done = run_bench(tmp_path, profile, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["probes"]["gpus"], "the run probed the GPU"
    assert manifest["environment"]["gpus"]["devices"], "the manifest records the GPU"
    for entry in manifest["cells"]:
        cell = json.loads((out / "cells" / entry["id"] / "cell.json").read_text())
        assert cell["status"] == "COMPLETED", cell["reason"]
        assert cell["engine"]["device"].startswith("cuda")
        memory = cell["memory"]
        assert memory["gpu_peak_allocated_bytes"] > 0 and memory["gpu_used_peak_bytes"][0] > 0, memory
        energy = cell["energy_per_output_token"]
        assert energy["value"] is not None and "nvml_energy_counter" in energy["sources"], energy
        decode = cell["roofline"]["decode"]
        assert decode["limited_by"] and 0 < decode["fraction"] <= 1, decode
        assert cell["telemetry"]["gpus"][0]["power_mean_w"] > 0
