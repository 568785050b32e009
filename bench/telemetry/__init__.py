"""Telemetry sampled from the parent while a benchmark child process runs.

- ``TelemetryRecorder(pid, interval_s)``: background sampling of host + NVML + RAPL.
- ``summarise_telemetry(samples, window, sources)``: peaks, means and energy over a time window.
- ``telemetry_sources()``: which sources work on this machine, and why not.

Only psutil (and, lazily, pynvml) are imported; never torch or an inference engine.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from .host import HostSampler, cpu_freq_stats
from .nvidia import NvidiaSampler, to_str
from .rapl import DEFAULT_ROOT, RaplReader
from .recorder import TelemetryRecorder
from .summary import summarise_telemetry

__all__ = ["HostSampler", "NvidiaSampler", "RaplReader", "TelemetryRecorder", "summarise_telemetry",
           "telemetry_sources"]


def telemetry_sources(nvml: ModuleType | None = None, rapl_root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """What telemetry this machine offers. Never raises. Keys::

        host:                {available, reason, cpu_freq: bool, load_avg: bool}
        nvml:                {available, reason, gpu_count, driver_version}
        nvml_energy_counter: {available, reason, gpus: [index, ...]}
        nvml_power:          {available, reason, gpus: [index, ...]}   # for the power integral
        rapl:                {available, reason, zones: [{zone, name, domain}]}
    """
    import psutil

    try:
        psutil.getloadavg()
        load_ok = True
    except (OSError, AttributeError):
        load_ok = False
    out: dict[str, Any] = {
        "host": {"available": True, "reason": None, "cpu_freq": cpu_freq_stats()[0] is not None,
                 "load_avg": load_ok},
    }

    sampler, reason = NvidiaSampler.try_open(nvml)
    if sampler is None:
        out["nvml"] = {"available": False, "reason": reason, "gpu_count": 0, "driver_version": None}
        out["nvml_energy_counter"] = {"available": False, "reason": reason, "gpus": []}
        out["nvml_power"] = {"available": False, "reason": reason, "gpus": []}
    else:
        with sampler:
            driver = to_str(sampler.call("driver", "nvmlSystemGetDriverVersion"))
            gpus = sampler.sample()
        out["nvml"] = {"available": True, "reason": None, "gpu_count": len(gpus), "driver_version": driver}
        for key, field, missing in (
            ("nvml_energy_counter", "energy_mj",
             "nvmlDeviceGetTotalEnergyConsumption unsupported (needs Volta or newer)"),
            ("nvml_power", "power_w", "nvmlDeviceGetPowerUsage unsupported"),
        ):
            ok = [g["index"] for g in gpus if g[field] is not None]
            bad = [g["index"] for g in gpus if g[field] is None]
            out[key] = {"available": bool(ok), "gpus": ok,
                        "reason": f"{missing} on GPU {', '.join(map(str, bad))}" if bad else None}

    rapl = RaplReader(rapl_root)
    out["rapl"] = {
        "available": rapl.available,
        "reason": rapl.reason,
        "zones": [{"zone": z["zone"], "name": z["name"], "domain": z["domain"]} for z in rapl.zones],
    }
    return out
