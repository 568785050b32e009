"""Host sampling and the recorder against real child processes (no fakes)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.telemetry import TelemetryRecorder, summarise_telemetry
from bench.telemetry.host import HostSampler

MiB = 2**20

# The child touches 200 MiB (bytes * n writes every page), starts a grandchild holding 32 MiB,
# reports both pids, then spins one core until killed (at most 30 s).
CHILD = r"""
import subprocess, sys, time
block = b"x" * (200 * 2**20)
gc = subprocess.Popen([sys.executable, "-c",
                       "import time; b = b'y' * (32 * 2**20); print('ok', flush=True); time.sleep(30)"],
                      stdout=subprocess.PIPE, text=True)
gc.stdout.readline()
print(gc.pid, flush=True)
end = time.time() + 30
while time.time() < end:
    pass
"""


@pytest.fixture
def busy_child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())  # type: ignore[union-attr]
    try:
        yield proc, grandchild
    finally:
        for pid in (grandchild, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        proc.wait(timeout=10)


def test_host_sampler_sees_tree_rss_and_cpu(busy_child: tuple[subprocess.Popen[str], int]) -> None:
    proc, grandchild = busy_child
    sampler = HostSampler(proc.pid)
    time.sleep(0.4)
    s = sampler.sample()
    assert s["proc_alive"] is True
    assert set(s["proc_pids"]) >= {proc.pid, grandchild}
    assert s["proc_rss_bytes"] >= 200 * MiB + 32 * MiB
    assert s["proc_cpu_pct"] > 10  # one spinning core is ~100 %
    assert s["cpu_pct"] > 0
    assert len(s["cpu_pct_per_core"]) == os.cpu_count()
    assert s["mem_used_bytes"] > 0 and s["mem_available_bytes"] > 0
    freq = (s["cpu_freq_mean_mhz"], s["cpu_freq_min_mhz"], s["cpu_freq_max_mhz"])
    assert freq == (None, None, None) or freq[1] <= freq[0] <= freq[2]
    json.dumps(s)


def test_host_sampler_on_missing_pid_does_not_raise() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    s = HostSampler(proc.pid).sample()
    assert s["proc_alive"] is False
    assert s["proc_rss_bytes"] is None and s["proc_cpu_pct"] is None
    assert s["cpu_pct_per_core"]


def test_recorder_records_and_summarises_a_window(busy_child: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = busy_child
    with TelemetryRecorder(proc.pid, interval_s=0.05) as rec:
        t0 = time.time()
        time.sleep(0.8)
        t1 = time.time()
    samples = rec.samples
    # ~16 ticks plus the start/stop samples; loose bounds so a loaded CI box cannot flake.
    assert 4 <= len(samples) <= 40
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts)
    assert samples[0]["sources"]["host"]["available"] is True
    assert rec.errors == []
    json.dumps(samples)

    mid = (t0 + 0.2, t1 - 0.2)
    summary = summarise_telemetry(samples, mid)
    inside = [s for s in samples if mid[0] <= s["t"] <= mid[1]]
    assert summary["n_samples"] == len(inside) > 0
    assert summary["window"] == [mid[0], mid[1]]
    host = summary["host"]
    assert host["proc_rss_peak_bytes"] >= 232 * MiB
    assert host["proc_rss_peak_bytes"] >= host["proc_rss_mean_bytes"] > 0
    assert host["proc_cpu_mean_pct"] > 10
    assert host["cpu_mean_pct"] > 0
    whole = rec.summary()
    assert whole["n_samples"] == len(samples)
    # No GPU, no RAPL here: energy is absent and every source says why.
    if not samples[0]["sources"]["nvml"]["available"] and not samples[0]["sources"]["rapl"]["available"]:
        assert whole["energy"] == {"gpu_j": None, "cpu_j": None, "items": []}
        for src in ("nvml_energy_counter", "nvml_power_integral", "rapl"):
            assert whole["energy_sources"][src]["available"] is False
            assert whole["energy_sources"][src]["reason"]


def test_recorder_memory_bound_decimates() -> None:
    rec = TelemetryRecorder(os.getpid(), interval_s=0.005, max_samples=8, nvml=False)
    rec.start()
    time.sleep(0.4)
    t_stop = time.time()
    samples = rec.stop()
    assert 2 <= len(samples) <= 8
    assert rec.stride > 1
    assert "sources" in samples[0]  # the first sample always survives decimation
    assert samples[-1]["t"] >= t_stop  # so does the final one taken at stop()
    assert samples[0]["sources"]["nvml"] == {"available": False, "reason": "disabled"}
