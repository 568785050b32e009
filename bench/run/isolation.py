"""Run one cell in a child process, watched: timeout, memory limit, crash, and telemetry.

The child (`python -m bench.run.cell_process`) gets its own process group so a timeout kills everything it
started. Telemetry is sampled from here, the parent, so sampling never slows the measured process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.run import memory_limit as memlimit
from bench.run.memory_limit import MemoryLimit

EventHandler = Callable[[dict[str, Any]], None]

_POLL_S = 0.05


@dataclass
class Outcome:
    returncode: int | None
    failure: str | None  # why the process did not finish cleanly; None when it did
    wall_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    peak_tree_rss_bytes: int = 0
    # The server's /metrics while the cell ran (served cells): its URL, samples, and why there are none.
    server_metrics: dict[str, Any] | None = None


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        total += process.memory_info().rss
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
    return total


def _kill_group(proc: subprocess.Popen[Any], grace_s: float = 2.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _signal_reason(returncode: int) -> str:
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGKILL:
        return f"killed by {name} (the kernel's out-of-memory killer, or another process)"
    return f"killed by {name}"


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the runner dies, so a killed run leaves no orphan."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _read_events(stream: Any, on_event: EventHandler) -> None:
    for line in stream:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        with contextlib.suppress(Exception):  # a display problem must never stop the cell
            on_event(event)


def run_isolated(
    spec_path: Path,
    cell_dir: Path,
    timeout_s: float,
    memory_limit: MemoryLimit | None,
    telemetry_interval_s: float,
    on_event: EventHandler,
    env: dict[str, str] | None = None,
    server_metrics_url: str | None = None,
    allowed_hosts: list[str] | None = None,
) -> Outcome:
    """Run `python -m bench.run.cell_process` and watch it until it ends, is killed, or overruns. The memory limit
    is the kernel's to enforce (bench/run/memory_limit.py); the RSS poller here is the last line. With a
    `server_metrics_url` the server's /metrics is scraped beside the telemetry (bench/telemetry/server_metrics.py)."""
    from bench.telemetry import TelemetryRecorder
    from bench.telemetry.server_metrics import ServerMetricsRecorder

    def before_exec() -> None:
        if sys.platform == "linux":
            _die_with_parent()
        if memory_limit is not None:
            memlimit.apply_in_child(memory_limit)

    if memory_limit is not None:
        env = {**(os.environ if env is None else env), **memlimit.child_env(memory_limit)}
    log = open(cell_dir / "cell.log", "ab")  # noqa: SIM115 - closed in the finally below
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run.cell_process", str(spec_path), str(cell_dir)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # own process group: a timeout kills the whole tree
        preexec_fn=before_exec,
        env=env,
    )
    if memory_limit is not None and not memlimit.joined(memory_limit, proc.pid):
        memory_limit.mechanism, memory_limit.why = memlimit.POLLER, "the cell could not join its cgroup"
        memory_limit.poller_bytes = memory_limit.bytes
    reader = threading.Thread(target=_read_events, args=(proc.stdout, on_event), daemon=True)
    reader.start()
    recorder = TelemetryRecorder(proc.pid, interval_s=telemetry_interval_s)
    recorder.start()
    server = (ServerMetricsRecorder(server_metrics_url, telemetry_interval_s, allowed_hosts or []).start()
              if server_metrics_url else None)
    watched = psutil.Process(proc.pid)
    failure: str | None = None
    peak = 0
    kill_at = memory_limit.poller_bytes if memory_limit is not None else None
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            rss = _tree_rss(watched)
            peak = max(peak, rss)
            if kill_at is not None and memory_limit is not None and rss > kill_at:
                failure = (f"exceeded the memory limit: the process tree's RSS {rss / 2**30:.2f} GiB passed "
                           f"{kill_at / 2**30:.2f} GiB (limit {memory_limit.bytes / 2**30:.2f} GiB, "
                           f"{memory_limit.source}; {memory_limit.mechanism}); killed by the RSS poller")
                _kill_group(proc, grace_s=0.0)
                break
            if elapsed > timeout_s:
                failure = (f"timed out after {timeout_s:g} s (run.cell_timeout_s, or its default from the "
                           "measurement plan); killed")
                _kill_group(proc)
                break
            time.sleep(_POLL_S)
    except BaseException:
        _kill_group(proc, grace_s=0.5)
        raise
    finally:
        samples = recorder.stop()
        server_samples = server.stop() if server is not None else []
        proc.wait()
        reader.join(timeout=5)
        log.close()
    if failure is None and memory_limit is not None:
        failure = memlimit.killed_by_limit(memory_limit)
        peak = max(peak, memlimit.cgroup_peak(memory_limit) or 0)
    if memory_limit is not None:
        memlimit.release(memory_limit)
    if failure is None and proc.returncode is not None and proc.returncode < 0:
        failure = _signal_reason(proc.returncode)
    scraped = None if server is None else {"url": server.url, "samples": server_samples, "reason": server.reason}
    return Outcome(proc.returncode, failure, time.monotonic() - started, samples, peak, scraped)
