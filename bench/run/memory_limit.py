"""A cell's memory limit, enforced by the kernel, so that no cell can take the machine.

Every cell gets one: `run.memory_limit_gib` when the profile sets it (higher or lower than the
default), else DEFAULT_SHARE of this machine's memory (the physical memory, or the memory limit of
the cgroup lokaal-bench runs in when that is lower). Polling the process tree's RSS every few
hundred milliseconds cannot stop a burst (one prompt of ten million tokens reached 23 GB before
the kernel's OOM killer ended it), so the limit is enforced by the kernel, by the first of:

1. cgroup v2: the cell's process tree in a cgroup of its own with `memory.max` (and no swap), made
   below the cgroup the runner is in. The kernel kills the tree when it outgrows the limit
   (memory.events counts it). Possible where the v2 memory controller is available and may be
   enabled below the runner's cgroup: the runner in the root cgroup, or a delegated one.
2. setrlimit(RLIMIT_DATA) in the cell process (and so in each process it starts): an allocation
   beyond the limit is refused (MemoryError, or the allocator's error), and the cell reports it.
   RLIMIT_DATA, not RLIMIT_AS: CUDA reserves terabytes of address space it never writes to, and
   reserved (PROT_NONE) address space does not count against RLIMIT_DATA.

The RSS poller in bench/run/isolation.py stays as the last line: it kills the whole tree when its RSS
passes the limit plus a margin (a tree of several processes, each within its RLIMIT_DATA, can
still add up to more). Each cell's summary records the limit, where it came from, the mechanism
and why that one (`memory_limit`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_SHARE = 0.8  # a fifth is left for the system, the runner, the page cache and everyone else
ENV = "LOKAAL_BENCH_MEMORY_LIMIT"  # tells the cell process its limit, so a refused allocation is named
CGROUP, RLIMIT, POLLER = "cgroup v2 memory.max", "RLIMIT_DATA (setrlimit in the cell process)", "RSS poller only"
_counter = itertools.count()


@dataclass
class MemoryLimit:
    bytes: int
    source: str  # "run.memory_limit_gib" or how the default was derived
    mechanism: str  # CGROUP, RLIMIT or POLLER
    why: str  # why this mechanism (what was tried first and did not work here)
    poller_bytes: int  # the tree RSS at which bench/run/isolation.py kills the cell (the last line)
    cgroup: str | None = None

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data["gib"] = round(self.bytes / 2**30, 3)
        return data


def machine_memory() -> tuple[int, str]:
    """(bytes, what they are): physical memory, or the cgroup limit this process is under if lower."""
    import psutil

    from bench.run.environment import cgroup_limits

    physical = int(psutil.virtual_memory().total)
    limit = cgroup_limits().get("memory_limit_bytes")
    if limit is not None and limit < physical:
        return limit, f"the memory limit of the cgroup lokaal-bench runs in ({limit / 2**30:.1f} GiB)"
    return physical, f"{physical / 2**30:.1f} GiB of physical memory"


def resolve(limit_gib: float | None) -> tuple[int, str]:
    """The limit in bytes and where it came from."""
    if limit_gib is not None:
        return int(limit_gib * 2**30), "run.memory_limit_gib"
    total, what = machine_memory()
    return int(total * DEFAULT_SHARE), f"default: {DEFAULT_SHARE:.0%} of {what}"


def poller_threshold(limit: int, mechanism: str) -> int:
    """Where the RSS poller kills: at the limit when it is the only line, else a margin above it
    (RSS counts shared libraries the kernel limit does not), so the kernel acts first."""
    return limit if mechanism == POLLER else limit + max(256 * 2**20, limit // 20)


def prepare(limit: int, source: str) -> MemoryLimit:
    """Choose the mechanism for one cell; with a cgroup, make it (release() removes it)."""
    directory, why = _cgroup_for_cell(limit)
    if directory is not None:
        return MemoryLimit(limit, source, CGROUP, "the cgroup v2 memory controller is available below the runner's "
                           "cgroup", poller_threshold(limit, CGROUP), str(directory))
    if hasattr(resource, "RLIMIT_DATA"):
        return MemoryLimit(limit, source, RLIMIT, why, poller_threshold(limit, RLIMIT))
    return MemoryLimit(limit, source, POLLER, why + "; no RLIMIT_DATA on this platform", limit)


def child_env(limit: MemoryLimit) -> dict[str, str]:
    return {ENV: json.dumps({"bytes": limit.bytes, "source": limit.source, "mechanism": limit.mechanism})}


def apply_in_child(limit: MemoryLimit) -> None:
    """In the cell process before exec (preexec_fn): join the cgroup, or set RLIMIT_DATA. No
    exception may leave here; the parent checks the cgroup afterwards (joined())."""
    if limit.mechanism == CGROUP and limit.cgroup:
        with contextlib.suppress(OSError):
            Path(limit.cgroup, "cgroup.procs").write_text(str(os.getpid()))
    elif limit.mechanism == RLIMIT:
        with contextlib.suppress(OSError, ValueError):
            hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
            soft = limit.bytes if hard == resource.RLIM_INFINITY else min(limit.bytes, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def joined(limit: MemoryLimit, pid: int) -> bool:
    """Whether `pid` is in the cell's cgroup (the parent moves it there itself when the child could not)."""
    if limit.mechanism != CGROUP or not limit.cgroup:
        return True
    procs = Path(limit.cgroup, "cgroup.procs")
    with contextlib.suppress(OSError):
        if str(pid) in procs.read_text().split():
            return True
        procs.write_text(str(pid))
        return str(pid) in procs.read_text().split()
    return False


def killed_by_limit(limit: MemoryLimit) -> str | None:
    """After the cell: the kernel's word that the cgroup limit killed it, as a failure reason."""
    if limit.mechanism != CGROUP or not limit.cgroup:
        return None
    events = _read_keyed(Path(limit.cgroup, "memory.events"))
    if events.get("oom_kill", 0) > 0:
        return (f"exceeded the memory limit: killed by the kernel at {limit.bytes / 2**30:.2f} GiB "
                f"({limit.source}; {CGROUP})")
    return None


def cgroup_peak(limit: MemoryLimit) -> int | None:
    if limit.mechanism != CGROUP or not limit.cgroup:
        return None
    with contextlib.suppress(OSError, ValueError):
        return int(Path(limit.cgroup, "memory.peak").read_text().strip())
    return None


def release(limit: MemoryLimit) -> None:
    """Remove the cell's cgroup once its processes are gone."""
    if limit.mechanism == CGROUP and limit.cgroup:
        with contextlib.suppress(OSError):
            Path(limit.cgroup).rmdir()


def refusal_reason(exc: BaseException) -> str | None:
    """In the cell process: a failure that is the kernel refusing memory beyond the limit, as a reason."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    text = f"{type(exc).__name__}: {exc}"
    refused = isinstance(exc, MemoryError) or any(
        words in text for words in ("can't allocate memory", "Cannot allocate memory", "std::bad_alloc",
                                    "not enough memory", "out of memory"))
    if not refused:
        return None
    limit = json.loads(raw)
    return (f"exceeded the memory limit: an allocation was refused at {limit['bytes'] / 2**30:.2f} GiB "
            f"({limit['source']}; {limit['mechanism']}): {text}".rstrip(": "))


# --- cgroup v2 ------------------------------------------------------------------------------------


def _cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" - ")
            if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
                return Path(fields[0].split()[4])
    return None


def _own_cgroup() -> Path | None:
    root = _cgroup2_root()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::") and root is not None:
                return root / line[3:].strip().lstrip("/")
    return None


def _cgroup_for_cell(limit: int) -> tuple[Path | None, str]:
    """A fresh cgroup with memory.max = limit below the runner's own, or why there can be none."""
    base = _own_cgroup()
    if base is None:
        return None, "no cgroup v2 hierarchy here"
    try:
        controllers = (base / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return None, f"cannot read {base / 'cgroup.controllers'} ({exc.strerror})"
    if "memory" not in controllers:
        return None, f"the cgroup v2 memory controller is not available in {base} (cgroup.controllers: " \
                     f"{' '.join(controllers) or 'none'})"
    control = base / "cgroup.subtree_control"
    try:
        if "memory" not in control.read_text().split():
            control.write_text("+memory")
    except OSError as exc:
        return None, f"cannot enable the memory controller below {base} ({exc.strerror})"
    directory = base / f"lokaal-bench-{os.getpid()}-{next(_counter)}"
    try:
        directory.mkdir()
        (directory / "memory.max").write_text(str(limit))
        with contextlib.suppress(OSError):  # no swap: a limit the cell swaps past is no limit
            (directory / "memory.swap.max").write_text("0")
    except OSError as exc:
        with contextlib.suppress(OSError):
            directory.rmdir()
        return None, f"cannot make a cgroup with memory.max below {base} ({exc.strerror})"
    return directory, ""


def _read_keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out
