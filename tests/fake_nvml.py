"""A pynvml-shaped emulator, for tests and demos on machines without an NVIDIA GPU.

``make_fake_nvml([FakeGpu(...), ...])`` returns a module object with the subset of the pynvml
API that ``bench.telemetry`` and ``bench.run.environment`` use. Device state lives in the mutable
``FakeGpu`` objects (``module.gpus``), so a test can change power, energy or clock reasons between
samples. Names listed in ``FakeGpu.unsupported`` (pynvml function names) raise
``NVMLError_NotSupported`` for that device, as a real driver does for unsupported queries.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13


class NVMLError(Exception):
    _strings: ClassVar[dict[int, str]] = {
        2: "Invalid Argument", 3: "Not Supported", 12: "NVML Shared Library Not Found", 13: "Function Not Found",
    }

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self._strings.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_InvalidArgument(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_INVALID_ARGUMENT)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


class NVMLError_FunctionNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_FUNCTION_NOT_FOUND)


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    pci_bus_id: str = "00000000:01:00.0"
    mem_total: int = 80 * 2**30
    mem_used: int = 0
    util_gpu: int = 0
    util_mem: int = 0
    power_mw: int = 70_000
    energy_mj: int = 0
    temp_c: int = 35
    sm_clock: int = 1980
    mem_clock: int = 2619
    clock_reasons: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)
    unsupported: set[str] = field(default_factory=set)
    power_limit_mw: int = 700_000
    max_sm_clock: int = 1980
    max_mem_clock: int = 2619
    max_graphics_clock: int = 1980
    ecc: tuple[int, int] = (1, 1)
    mig: tuple[int, int] = (0, 0)
    pcie: tuple[int, int, int, int] = (5, 16, 5, 16)  # current gen, width, max gen, width
    persistence: int = 1
    compute_mode: int = 0
    compute_capability: tuple[int, int] = (9, 0)
    nvlinks: dict[int, str] = field(default_factory=dict)  # active link -> remote PCI bus id


def make_fake_nvml(
    gpus: list[FakeGpu],
    *,
    driver_version: str = "550.54.15",
    cuda_driver_version: int = 12040,
    event_reasons_api: bool = True,
    topology: dict[tuple[int, int], int] | None = None,
    init_error: int | None = None,
) -> types.ModuleType:
    """A fake ``pynvml`` module over ``gpus``.

    ``event_reasons_api=False`` removes ``nvmlDeviceGetCurrentClocksEventReasons`` (older
    pynvml). ``topology`` maps index pairs to an NVML_TOPOLOGY_* level (default: SYSTEM).
    ``init_error`` makes ``nvmlInit`` raise that NVML error code.
    """
    m = types.ModuleType("pynvml")
    m.gpus = gpus  # type: ignore[attr-defined]
    m.init_count = 0  # type: ignore[attr-defined]
    for cls in (NVMLError, NVMLError_InvalidArgument, NVMLError_NotSupported,
                NVMLError_LibraryNotFound, NVMLError_FunctionNotFound):
        setattr(m, cls.__name__, cls)
    consts = {"NVML_CLOCK_GRAPHICS": 0, "NVML_CLOCK_SM": 1, "NVML_CLOCK_MEM": 2, "NVML_TEMPERATURE_GPU": 0,
              "NVML_TOPOLOGY_INTERNAL": 0, "NVML_TOPOLOGY_SINGLE": 10, "NVML_TOPOLOGY_MULTIPLE": 20,
              "NVML_TOPOLOGY_HOSTBRIDGE": 30, "NVML_TOPOLOGY_NODE": 40, "NVML_TOPOLOGY_SYSTEM": 50,
              "NVML_NVLINK_MAX_LINKS": 18}
    for k, v in consts.items():
        setattr(m, k, v)
    topo = topology or {}

    def dev(fn: Any) -> Any:
        """Register fn(gpu, *args) as pynvml.<fn name>(handle, *args) honouring ``unsupported``."""

        def wrapper(handle: FakeGpu, *args: Any) -> Any:
            if fn.__name__ in handle.unsupported:
                raise NVMLError_NotSupported()
            return fn(handle, *args)

        wrapper.__name__ = fn.__name__
        setattr(m, fn.__name__, wrapper)
        return wrapper

    def nvmlInit() -> None:
        if init_error is not None:
            raise NVMLError(init_error)
        m.init_count += 1  # type: ignore[attr-defined]

    def nvmlShutdown() -> None:
        m.init_count -= 1  # type: ignore[attr-defined]

    def nvmlDeviceGetHandleByIndex(i: int) -> FakeGpu:
        if not 0 <= i < len(gpus):
            raise NVMLError_InvalidArgument()
        return gpus[i]

    for f in (nvmlInit, nvmlShutdown, nvmlDeviceGetHandleByIndex):
        setattr(m, f.__name__, f)
    m.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    m.nvmlSystemGetDriverVersion = lambda: driver_version  # type: ignore[attr-defined]
    m.nvmlSystemGetCudaDriverVersion = lambda: cuda_driver_version  # type: ignore[attr-defined]
    m.nvmlSystemGetNVMLVersion = lambda: "12." + driver_version  # type: ignore[attr-defined]

    ns = types.SimpleNamespace

    @dev
    def nvmlDeviceGetName(g: FakeGpu) -> str:
        return g.name

    @dev
    def nvmlDeviceGetUUID(g: FakeGpu) -> str:
        return g.uuid

    @dev
    def nvmlDeviceGetPciInfo(g: FakeGpu) -> Any:
        return ns(busId=g.pci_bus_id.encode())  # older pynvml returns bytes here

    @dev
    def nvmlDeviceGetMemoryInfo(g: FakeGpu) -> Any:
        return ns(total=g.mem_total, used=g.mem_used, free=g.mem_total - g.mem_used)

    @dev
    def nvmlDeviceGetUtilizationRates(g: FakeGpu) -> Any:
        return ns(gpu=g.util_gpu, memory=g.util_mem)

    @dev
    def nvmlDeviceGetPowerUsage(g: FakeGpu) -> int:
        return g.power_mw

    @dev
    def nvmlDeviceGetTotalEnergyConsumption(g: FakeGpu) -> int:
        return g.energy_mj

    @dev
    def nvmlDeviceGetTemperature(g: FakeGpu, sensor: int) -> int:
        return g.temp_c

    @dev
    def nvmlDeviceGetClockInfo(g: FakeGpu, kind: int) -> int:
        return g.mem_clock if kind == 2 else g.sm_clock

    @dev
    def nvmlDeviceGetMaxClockInfo(g: FakeGpu, kind: int) -> int:
        return {0: g.max_graphics_clock, 1: g.max_sm_clock, 2: g.max_mem_clock}[kind]

    if event_reasons_api:
        @dev
        def nvmlDeviceGetCurrentClocksEventReasons(g: FakeGpu) -> int:
            return g.clock_reasons

    @dev
    def nvmlDeviceGetCurrentClocksThrottleReasons(g: FakeGpu) -> int:
        return g.clock_reasons

    @dev
    def nvmlDeviceGetComputeRunningProcesses(g: FakeGpu) -> list[Any]:
        return [ns(pid=pid, usedGpuMemory=used) for pid, used in g.processes]

    @dev
    def nvmlDeviceGetGraphicsRunningProcesses(g: FakeGpu) -> list[Any]:
        return []

    @dev
    def nvmlDeviceGetPowerManagementLimit(g: FakeGpu) -> int:
        return g.power_limit_mw

    @dev
    def nvmlDeviceGetPowerManagementDefaultLimit(g: FakeGpu) -> int:
        return g.power_limit_mw

    @dev
    def nvmlDeviceGetEnforcedPowerLimit(g: FakeGpu) -> int:
        return g.power_limit_mw

    @dev
    def nvmlDeviceGetEccMode(g: FakeGpu) -> list[int]:
        return list(g.ecc)

    @dev
    def nvmlDeviceGetMigMode(g: FakeGpu) -> list[int]:
        return list(g.mig)

    @dev
    def nvmlDeviceGetCurrPcieLinkGeneration(g: FakeGpu) -> int:
        return g.pcie[0]

    @dev
    def nvmlDeviceGetCurrPcieLinkWidth(g: FakeGpu) -> int:
        return g.pcie[1]

    @dev
    def nvmlDeviceGetMaxPcieLinkGeneration(g: FakeGpu) -> int:
        return g.pcie[2]

    @dev
    def nvmlDeviceGetMaxPcieLinkWidth(g: FakeGpu) -> int:
        return g.pcie[3]

    @dev
    def nvmlDeviceGetPersistenceMode(g: FakeGpu) -> int:
        return g.persistence

    @dev
    def nvmlDeviceGetComputeMode(g: FakeGpu) -> int:
        return g.compute_mode

    @dev
    def nvmlDeviceGetCudaComputeCapability(g: FakeGpu) -> tuple[int, int]:
        return g.compute_capability

    @dev
    def nvmlDeviceGetVbiosVersion(g: FakeGpu) -> str:
        return "96.00.89.00.01"

    @dev
    def nvmlDeviceGetNvLinkState(g: FakeGpu, link: int) -> int:
        if not g.nvlinks:
            raise NVMLError_NotSupported()
        if link >= 18:
            raise NVMLError_InvalidArgument()
        return 1 if link in g.nvlinks else 0

    @dev
    def nvmlDeviceGetNvLinkRemotePciInfo(g: FakeGpu, link: int) -> Any:
        if link not in g.nvlinks:
            raise NVMLError_InvalidArgument()
        return ns(busId=g.nvlinks[link])

    def nvmlDeviceGetTopologyCommonAncestor(a: FakeGpu, b: FakeGpu) -> int:
        i, j = sorted(k for k, g in enumerate(gpus) if g is a or g is b)
        return topo.get((i, j), 50)

    m.nvmlDeviceGetTopologyCommonAncestor = nvmlDeviceGetTopologyCommonAncestor  # type: ignore[attr-defined]
    return m
