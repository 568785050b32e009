"""NVML sampling: the real library (absent here) and a 2-GPU pynvml-shaped fake."""

from __future__ import annotations

import os
import sys
import time

import pytest

from bench.telemetry import NvidiaSampler, TelemetryRecorder, summarise_telemetry, telemetry_sources
from bench.telemetry.nvidia import decode_clock_reasons
from fake_nvml import FakeGpu, make_fake_nvml

GiB = 2**30


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(uuid="GPU-aaaa", mem_used=10 * GiB, util_gpu=90, util_mem=40, power_mw=350_500,
                energy_mj=1_000_000, temp_c=71, sm_clock=1755, mem_clock=2619,
                clock_reasons=0x4 | 0x40, processes=[(4242, 6 * GiB), (9999, 1 * GiB)]),
        # A GPU without energy counter, temperature sensor or the new clock-event API.
        FakeGpu(name="Tesla P100", uuid="GPU-bbbb", pci_bus_id="00000000:02:00.0", mem_total=16 * GiB,
                mem_used=2 * GiB, power_mw=120_000, clock_reasons=0x1, processes=[(4243, None)],
                unsupported={"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetTemperature",
                             "nvmlDeviceGetCurrentClocksEventReasons"}),
    ]


def test_open_without_driver_returns_none_with_reason() -> None:
    sampler = NvidiaSampler.open()
    if sampler is not None:
        sampler.close()
        pytest.skip("this machine has a working NVIDIA driver")
    assert NvidiaSampler.last_open_error
    sources = telemetry_sources()
    assert sources["nvml"]["available"] is False and sources["nvml"]["reason"]


def test_open_reports_init_failure_and_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NvidiaSampler.open(make_fake_nvml([], init_error=12)) is None
    assert "not found" in NvidiaSampler.last_open_error
    assert NvidiaSampler.open(make_fake_nvml([])) is None
    assert "no GPUs" in NvidiaSampler.last_open_error
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert NvidiaSampler.open() is None
    assert "pynvml" in NvidiaSampler.last_open_error


def test_sample_two_gpus_with_unsupported_calls() -> None:
    nv = make_fake_nvml(two_gpus())
    sampler = NvidiaSampler.open(nv)
    assert sampler is not None
    g0, g1 = sampler.sample(pids=[4242, 4243])
    assert g0 == {
        "index": 0, "uuid": "GPU-aaaa", "name": "NVIDIA H100 80GB HBM3",
        "mem_used_bytes": 10 * GiB, "mem_total_bytes": 80 * GiB,
        "util_gpu_pct": 90.0, "util_mem_pct": 40.0, "power_w": 350.5, "energy_mj": 1_000_000,
        "temp_c": 71, "sm_clock_mhz": 1755, "mem_clock_mhz": 2619,
        "clock_event_mask": 0x44, "clock_event_reasons": ["sw_power_cap", "hw_thermal_slowdown"],
        "proc_mem_used_bytes": 6 * GiB,  # only our pid, not 9999
    }
    assert g1["energy_mj"] is None and g1["temp_c"] is None
    assert g1["power_w"] == 120.0
    # The new API is NOT_SUPPORTED on GPU 1, so the throttle-reasons call answered.
    assert g1["clock_event_reasons"] == ["gpu_idle"]
    assert g1["proc_mem_used_bytes"] is None  # usedGpuMemory unavailable
    assert set(sampler.unsupported) == {"1.energy", "1.temp", "1.clock_events"}
    # Permanently unsupported calls are not retried; state changes show up in the next sample.
    nv.gpus[0].clock_reasons = 0
    g0b, _ = sampler.sample()
    assert g0b["clock_event_reasons"] == [] and g0b["proc_mem_used_bytes"] is None
    sampler.close()
    assert nv.init_count == 0


def test_old_pynvml_without_event_reasons_api() -> None:
    nv = make_fake_nvml(two_gpus(), event_reasons_api=False)
    with NvidiaSampler.open(nv) as sampler:  # type: ignore[union-attr]
        g0, _ = sampler.sample()
        assert g0["clock_event_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
        assert "missing" in sampler.unsupported["0.clock_events"]


def test_decode_clock_reasons() -> None:
    assert decode_clock_reasons(0) == []
    assert decode_clock_reasons(0x1 | 0x8 | 0x100) == ["gpu_idle", "hw_slowdown", "display_clock_setting"]
    assert decode_clock_reasons(0x800) == ["unknown_0x800"]


def test_telemetry_sources_with_fake() -> None:
    nv = make_fake_nvml(two_gpus())
    src = telemetry_sources(nv)
    assert src["nvml"] == {"available": True, "reason": None, "gpu_count": 2, "driver_version": "550.54.15"}
    assert src["nvml_energy_counter"]["gpus"] == [0]
    assert "GPU 1" in src["nvml_energy_counter"]["reason"]
    assert src["nvml_power"] == {"available": True, "gpus": [0, 1], "reason": None}
    assert nv.init_count == 0


def _gpu(index: int, energy_mj: int | None, power_w: float, reasons: list[str], mem: int) -> dict:
    return {"index": index, "uuid": f"GPU-{index}", "name": "x", "mem_used_bytes": mem, "mem_total_bytes": 100,
            "util_gpu_pct": 50.0, "util_mem_pct": 10.0, "power_w": power_w, "energy_mj": energy_mj,
            "temp_c": 60 + index, "sm_clock_mhz": 1500, "mem_clock_mhz": 2000,
            "clock_event_reasons": reasons, "proc_mem_used_bytes": None}


def test_summarise_gpu_energy_counter_and_power_integral() -> None:
    # GPU 0 has an energy counter; GPU 1 only power. Hand-computed over the window [0.5, 2.5]:
    #   GPU 0: counter linear between samples: C(0.5) = 50 J, C(2.5) = 350 J -> 300 J
    #   GPU 1: P(0.5)=200, P(1)=200, P(2)=400, P(2.5)=400 W
    #          -> 0.5*200 + 1*(200+400)/2 + 0.5*400 = 600 J
    rows = [
        (0.0, 0, 100.0, 200.0, []),
        (1.0, 100_000, 100.0, 200.0, ["sw_power_cap"]),
        (2.0, 300_000, 300.0, 400.0, ["hw_slowdown"]),
        (3.0, 400_000, 300.0, 400.0, ["sync_boost"]),
    ]
    samples = [{"t": t, "host": None, "rapl": [],
                "gpus": [_gpu(0, e, p0, r, mem=int(t * 10)), _gpu(1, None, p1, [], mem=1)]}
               for t, e, p0, p1, r in rows]
    s = summarise_telemetry(samples, (0.5, 2.5))
    by_gpu = {i["index"]: i for i in s["energy"]["items"]}
    assert by_gpu[0]["source"] == "nvml_energy_counter"
    assert by_gpu[0]["joules"] == pytest.approx(300.0)
    assert by_gpu[1]["source"] == "nvml_power_integral"
    assert by_gpu[1]["joules"] == pytest.approx(600.0)
    assert by_gpu[0]["covered_s"] == pytest.approx(2.0)
    assert s["energy"]["gpu_j"] == pytest.approx(900.0)
    assert s["energy"]["cpu_j"] is None
    es = s["energy_sources"]
    assert es["nvml_energy_counter"] == {"available": True, "reason": None, "gpus": [0]}
    assert es["nvml_power_integral"] == {"available": True, "reason": None, "gpus": [1]}
    assert es["rapl"]["available"] is False and es["rapl"]["reason"]
    # Means/peaks over the samples inside the window (t = 1 and t = 2).
    g0 = s["gpus"][0]
    assert s["n_samples"] == 2
    assert g0["power_mean_w"] == pytest.approx(200.0) and g0["power_max_w"] == 300.0
    assert g0["mem_used_peak_bytes"] == 20 and g0["temp_max_c"] == 60
    assert g0["clock_event_reasons"] == ["hw_slowdown", "sw_power_cap"]
    assert s["clock_event_reasons"] == ["hw_slowdown", "sw_power_cap"]
    # Whole record: 400 J from the counter; GPU 1 trapezoids 200 + 300 + 400 = 900 J.
    whole = summarise_telemetry(samples)
    assert {i["index"]: i["joules"] for i in whole["energy"]["items"]} == pytest.approx({0: 400.0, 1: 900.0})


def test_summarise_counter_reset_and_window_outside_samples() -> None:
    samples = [{"t": t, "gpus": [_gpu(0, e, 100.0, [], 0)]} for t, e in
               [(10.0, 5_000), (11.0, 6_000), (12.0, 500), (13.0, 1_500)]]  # driver reload at t=12
    s = summarise_telemetry(samples, (0.0, 100.0))
    item = s["energy"]["items"][0]
    assert item["joules"] == pytest.approx(1.0 + 0.0 + 1.0)
    assert item["covered_s"] == pytest.approx(3.0)
    assert s["n_samples"] == 4
    empty = summarise_telemetry(samples, (20.0, 30.0))
    assert empty["n_samples"] == 0 and empty["energy"]["items"] == []
    assert empty["host"]["proc_rss_peak_bytes"] is None


def test_recorder_with_fake_nvml_passes_tree_pids() -> None:
    gpus = two_gpus()
    gpus[0].processes = [(os.getpid(), 3 * GiB)]
    nv = make_fake_nvml(gpus)
    with TelemetryRecorder(os.getpid(), interval_s=0.02, nvml=nv) as rec:
        for step in range(5):
            time.sleep(0.03)
            nv.gpus[0].energy_mj += 1000 * (step + 1)
    samples = rec.samples
    assert all(len(s["gpus"]) == 2 for s in samples)
    assert samples[0]["sources"]["nvml"] == {"available": True, "reason": None}
    assert max(s["gpus"][0]["proc_mem_used_bytes"] for s in samples) == 3 * GiB
    summary = rec.summary()
    total = {i["index"]: i for i in summary["energy"]["items"]}
    assert total[0]["joules"] == pytest.approx(15.0)  # (1+2+3+4+5) * 1000 mJ between the start and stop samples
    assert total[1]["source"] == "nvml_power_integral"
    assert nv.init_count == 0  # stop() shut NVML down
