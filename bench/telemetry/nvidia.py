"""NVIDIA GPU sampling through NVML (the ``pynvml`` module of nvidia-ml-py).

Nothing here raises on a machine without a GPU or driver: ``NvidiaSampler.open()`` returns None
and records why in ``NvidiaSampler.last_open_error``. Every NVML query that fails for a device
gives None for that field; queries that are permanently unsupported (NOT_SUPPORTED,
FUNCTION_NOT_FOUND, missing in the installed pynvml) are remembered and not retried.

The ``nvml`` module can be injected (tests use ``bench.telemetry.fake_nvml``).

Keys of each per-GPU dict from ``NvidiaSampler.sample()``:

- ``index``, ``uuid``, ``name``
- ``mem_used_bytes``, ``mem_total_bytes``
- ``util_gpu_pct``, ``util_mem_pct``
- ``power_w``: board power (NVML reports mW; on Ampere and newer it is a 1 s average, which is
  why the energy counter is preferred for energy)
- ``energy_mj``: total energy counter since driver load (mJ), None where unsupported (pre-Volta)
- ``temp_c``
- ``sm_clock_mhz``, ``mem_clock_mhz``
- ``clock_event_reasons``: decoded names (see ``CLOCK_EVENT_REASONS``); ``clock_event_mask``: raw bits
- ``proc_mem_used_bytes``: GPU memory used by the given pids, None when none matched or unknown
  (inside a container NVML reports host pids, which never match)
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any, ClassVar

# Bit -> name, from nvml.h (nvmlClocksEventReason* / the older nvmlClocksThrottleReason*).
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}

# NVML return codes after which a query will never succeed on this device/driver.
_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_FUNCTION_NOT_FOUND = 13
_PERMANENT_ERRORS = {_NVML_ERROR_NOT_SUPPORTED, _NVML_ERROR_FUNCTION_NOT_FOUND}
_NVML_VALUE_NOT_AVAILABLE = (1 << 64) - 1


def decode_clock_reasons(mask: int) -> list[str]:
    """Names of the set bits of an NVML clocks event/throttle reason mask, low bit first."""
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_EVENT_REASONS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return names


def to_str(value: Any) -> str | None:
    """NVML strings come back as bytes from older pynvml versions, str from newer ones."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def load_nvml(nvml: ModuleType | None = None) -> tuple[ModuleType | None, str | None]:
    """Import and initialise NVML. Returns (module, None) or (None, reason). Never raises.

    A successful call must be paired with ``nvml.nvmlShutdown()`` (NVML is reference counted).
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except Exception as e:  # ImportError, or a broken install
            return None, f"pynvml (nvidia-ml-py) not importable: {e}"
    try:
        nvml.nvmlInit()
    except Exception as e:
        code = getattr(e, "value", None)
        if code == 12:  # NVML_ERROR_LIBRARY_NOT_FOUND
            return None, "NVML library (libnvidia-ml.so.1) not found: no NVIDIA driver on this machine"
        if code == 9:  # NVML_ERROR_DRIVER_NOT_LOADED
            return None, "NVIDIA driver not loaded"
        return None, f"nvmlInit failed: {type(e).__name__}: {e}"
    return nvml, None


class NvmlCaller:
    """Calls NVML functions by name, turning failures into None and remembering permanent ones."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        self.unsupported: dict[str, str] = {}  # "<gpu index>.<field>" -> reason
        self.last_error: str | None = None

    def __call__(self, key: str, fn_name: str, *args: Any) -> Any:
        if key in self.unsupported:
            return None
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:
            self.unsupported[key] = f"{fn_name} missing in installed pynvml"
            return None
        try:
            return fn(*args)
        except Exception as e:  # NVMLError subclasses; anything else must not stop sampling either
            code = getattr(e, "value", None)
            self.last_error = f"{fn_name}: {type(e).__name__}: {e}"
            if code in _PERMANENT_ERRORS:
                self.unsupported[key] = f"{fn_name}: {e}"
            return None


class NvidiaSampler:
    """Samples all NVML-visible GPUs. Create with ``open()``; call ``close()`` when done."""

    last_open_error: ClassVar[str | None] = None

    def __init__(self, nvml: ModuleType, handles: list[Any]) -> None:
        self.nvml = nvml
        self.handles = handles
        self.call = NvmlCaller(nvml)
        self.uuids = [to_str(self.call(f"{i}.uuid", "nvmlDeviceGetUUID", h)) for i, h in enumerate(handles)]
        self.names = [to_str(self.call(f"{i}.name", "nvmlDeviceGetName", h)) for i, h in enumerate(handles)]
        self._closed = False

    @classmethod
    def try_open(cls, nvml: ModuleType | None = None) -> tuple[NvidiaSampler | None, str | None]:
        """(sampler, None) when NVML works and sees at least one GPU, else (None, reason)."""
        mod, reason = load_nvml(nvml)
        if mod is None:
            return None, reason
        try:
            count = int(mod.nvmlDeviceGetCount())
            handles = [mod.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as e:
            _shutdown(mod)
            return None, f"NVML device enumeration failed: {type(e).__name__}: {e}"
        if not handles:
            _shutdown(mod)
            return None, "NVML initialised but reports no GPUs"
        return cls(mod, handles), None

    @classmethod
    def open(cls, nvml: ModuleType | None = None) -> NvidiaSampler | None:
        """The sampler, or None with the reason left in ``NvidiaSampler.last_open_error``."""
        sampler, reason = cls.try_open(nvml)
        cls.last_open_error = reason
        return sampler

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _shutdown(self.nvml)

    def __enter__(self) -> NvidiaSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def unsupported(self) -> dict[str, str]:
        return dict(self.call.unsupported)

    def _clock_reasons(self, i: int, h: Any) -> int | None:
        # The "event" name replaced "throttle" in NVML 12.x; older drivers lack the new symbol
        # (FUNCTION_NOT_FOUND), which NvmlCaller remembers, so the fallback costs one failed call.
        mask = self.call(f"{i}.clock_events", "nvmlDeviceGetCurrentClocksEventReasons", h)
        if mask is None:
            mask = self.call(f"{i}.clock_throttle", "nvmlDeviceGetCurrentClocksThrottleReasons", h)
        return None if mask is None else int(mask)

    def _proc_mem(self, i: int, h: Any, pids: set[int]) -> int | None:
        total = None
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            procs = self.call(f"{i}.{fn}", fn, h) or []
            for p in procs:
                used = getattr(p, "usedGpuMemory", None)
                if getattr(p, "pid", None) in pids and used is not None and used != _NVML_VALUE_NOT_AVAILABLE:
                    total = (total or 0) + int(used)
        return total

    def sample(self, pids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        nv = self.nvml
        pid_set = set(pids or ())
        sm_clock = getattr(nv, "NVML_CLOCK_SM", 1)
        mem_clock = getattr(nv, "NVML_CLOCK_MEM", 2)
        temp_sensor = getattr(nv, "NVML_TEMPERATURE_GPU", 0)
        out = []
        for i, h in enumerate(self.handles):
            c = self.call
            mem = c(f"{i}.mem", "nvmlDeviceGetMemoryInfo", h)
            util = c(f"{i}.util", "nvmlDeviceGetUtilizationRates", h)
            power_mw = c(f"{i}.power", "nvmlDeviceGetPowerUsage", h)
            energy = c(f"{i}.energy", "nvmlDeviceGetTotalEnergyConsumption", h)
            mask = self._clock_reasons(i, h)
            out.append(
                {
                    "index": i,
                    "uuid": self.uuids[i],
                    "name": self.names[i],
                    "mem_used_bytes": None if mem is None else int(mem.used),
                    "mem_total_bytes": None if mem is None else int(mem.total),
                    "util_gpu_pct": None if util is None else float(util.gpu),
                    "util_mem_pct": None if util is None else float(util.memory),
                    "power_w": None if power_mw is None else power_mw / 1000.0,
                    "energy_mj": None if energy is None else int(energy),
                    "temp_c": c(f"{i}.temp", "nvmlDeviceGetTemperature", h, temp_sensor),
                    "sm_clock_mhz": c(f"{i}.sm_clock", "nvmlDeviceGetClockInfo", h, sm_clock),
                    "mem_clock_mhz": c(f"{i}.mem_clock", "nvmlDeviceGetClockInfo", h, mem_clock),
                    "clock_event_mask": mask,
                    "clock_event_reasons": None if mask is None else decode_clock_reasons(mask),
                    "proc_mem_used_bytes": self._proc_mem(i, h, pid_set) if pid_set else None,
                }
            )
        return out


def _shutdown(nvml: ModuleType) -> None:
    with contextlib.suppress(Exception):
        nvml.nvmlShutdown()
