"""Host (CPU, memory) sampling of a process tree, done from the parent process.

CPU percentages are computed here from cumulative CPU-time deltas between two calls to
``sample()`` instead of ``psutil.cpu_percent(interval=None)``: psutil keeps that state per
module/object, so another caller in the same process would silently reset our baseline.

Keys of ``HostSampler.sample()`` (every value may be None when the platform lacks it):

- ``cpu_pct``: system-wide CPU busy % since the previous sample (0-100)
- ``cpu_pct_per_core``: list of per-logical-CPU busy %
- ``proc_alive``: whether the root pid still exists
- ``proc_pids``: pids of the tree (root + all descendants) seen in this sample
- ``proc_cpu_pct``: CPU % of the tree since the previous sample (100 = one core; can exceed 100)
- ``proc_rss_bytes``: summed RSS of the tree (shared pages are counted once per process)
- ``mem_used_bytes`` (total - available, i.e. not reclaimable) / ``mem_available_bytes``: system memory
- ``cpu_freq_mean_mhz`` / ``cpu_freq_min_mhz`` / ``cpu_freq_max_mhz``: current frequency across cores
- ``load_avg``: [1 min, 5 min, 15 min]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psutil


def _busy_and_total(times: Any) -> tuple[float, float]:
    """Busy and total CPU seconds of one ``psutil.cpu_times()`` entry, psutil's own accounting."""
    total = sum(times)
    # On Linux guest time is already included in user/nice; don't count it twice.
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def _busy_pct(prev: Any, cur: Any) -> float | None:
    busy0, total0 = _busy_and_total(prev)
    busy1, total1 = _busy_and_total(cur)
    d_total = total1 - total0
    if d_total <= 0:
        return None
    return round(min(100.0, max(0.0, 100.0 * (busy1 - busy0) / d_total)), 2)


def cpu_freq_stats() -> tuple[float | None, float | None, float | None]:
    """Mean/min/max current CPU frequency in MHz across cores, or Nones when unknown."""
    try:
        freqs = psutil.cpu_freq(percpu=True)
    except Exception:  # not implemented / unreadable on some platforms
        return None, None, None
    cur = [f.current for f in freqs or [] if f is not None and f.current and f.current > 0]
    if not cur:
        return None, None, None
    return round(sum(cur) / len(cur), 1), round(min(cur), 1), round(max(cur), 1)


class HostSampler:
    """Samples system-wide CPU/memory and the CPU/RSS of the process tree rooted at ``pid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._t_prev = time.monotonic()
        self._sys_prev: Sequence[Any] = psutil.cpu_times(percpu=True)
        self._proc_cpu_prev: dict[tuple[int, float], float] = {}
        self.last_pids: list[int] = []
        try:
            self._root: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._root = None
        # Baseline for the first sample's tree CPU %.
        for p in self._tree():
            cpu = self._cpu_seconds(p)
            if cpu is not None:
                self._proc_cpu_prev[_key(p)] = cpu

    def _tree(self) -> list[psutil.Process]:
        if self._root is None or not self._root.is_running():
            return []
        try:
            if self._root.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
                return []
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    @staticmethod
    def _cpu_seconds(p: psutil.Process) -> float | None:
        try:
            t = p.cpu_times()
        except psutil.Error:
            return None
        return t.user + t.system

    def tree_pids(self) -> list[int]:
        """Pids of the process tree as of the last ``sample()``."""
        return list(self.last_pids)

    def sample(self) -> dict[str, Any]:
        now_mono = time.monotonic()
        wall_prev = time.time() - (now_mono - self._t_prev)
        dt = now_mono - self._t_prev

        sys_cur = psutil.cpu_times(percpu=True)
        per_core = [_busy_pct(a, b) for a, b in zip(self._sys_prev, sys_cur, strict=False)]
        cpu_pct = _busy_pct(_sum_times(self._sys_prev), _sum_times(sys_cur))
        self._sys_prev = sys_cur

        procs = self._tree()
        rss = 0
        cpu_delta = 0.0
        new_prev: dict[tuple[int, float], float] = {}
        for p in procs:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
            cpu = self._cpu_seconds(p)
            if cpu is None:
                continue
            key = _key(p)
            new_prev[key] = cpu
            if key in self._proc_cpu_prev:
                cpu_delta += max(0.0, cpu - self._proc_cpu_prev[key])
            elif key[1] >= wall_prev - 0.01:
                # Born since the last sample: all its CPU time falls in this interval. A process
                # that existed but was missed (race with children()) only gets a baseline.
                cpu_delta += cpu
        self._proc_cpu_prev = new_prev
        self._t_prev = now_mono
        alive = bool(procs)
        self.last_pids = [p.pid for p in procs]

        vm = psutil.virtual_memory()
        f_mean, f_min, f_max = cpu_freq_stats()
        try:
            load: list[float] | None = [round(x, 2) for x in psutil.getloadavg()]
        except (OSError, AttributeError):
            load = None
        return {
            "cpu_pct": cpu_pct,
            "cpu_pct_per_core": per_core,
            "proc_alive": alive,
            "proc_pids": self.last_pids,
            "proc_cpu_pct": round(100.0 * cpu_delta / dt, 2) if alive and dt > 0 else None,
            "proc_rss_bytes": rss if alive else None,
            "mem_used_bytes": vm.total - vm.available,
            "mem_available_bytes": vm.available,
            "cpu_freq_mean_mhz": f_mean,
            "cpu_freq_min_mhz": f_min,
            "cpu_freq_max_mhz": f_max,
            "load_avg": load,
        }


def _key(p: psutil.Process) -> tuple[int, float]:
    """(pid, create_time): survives pid reuse. psutil caches create_time on the Process object."""
    try:
        return p.pid, p.create_time()
    except psutil.Error:
        return p.pid, 0.0


def _sum_times(per_cpu: Sequence[Any]) -> Any:
    """Element-wise sum of per-CPU times (same namedtuple type) for the system-wide figure."""
    first = per_cpu[0]
    return type(first)(*(sum(col) for col in zip(*per_cpu, strict=True)))
