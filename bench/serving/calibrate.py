"""`lokaal-bench calibrate`: how far can this machine's load generator be trusted?

The calibration endpoint (its own process, so client and server do not share an interpreter)
answers with a known TTFT and ITL; closed-loop users stream from it at rising concurrency. Per
level: the timing error of TTFT and ITL (measured minus configured, p50 and p99), the rate achieved,
and the client's own CPU use. The ceiling is the highest level whose p99 errors stay within 5 ms.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.measure.stats import percentile
from bench.serving.client import Connection, StreamResult

ERROR_BOUND_S = 0.005  # p99 timing error that still counts as trustworthy


def start_server(ttft_s: float, itl_s: float, slots: int | None = None,
                 errors: float = 0.0, options: Sequence[str] = ()) -> tuple[subprocess.Popen[str], int]:
    """The calibration endpoint in its own process; `options` are more of its switches (--reasoning N ...)."""
    extra = (["--slots", str(slots)] if slots else []) + (["--errors", str(errors)] if errors else []) + list(options)
    proc = subprocess.Popen([sys.executable, "-m", "bench.serving.calibration_server", "--ttft", str(ttft_s),
                             "--itl", str(itl_s), *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError("the calibration endpoint did not start")
    return proc, int(line)


async def _closed_loop(ports: Sequence[int], users: Iterable[int], tokens: int, deadline: float) -> list[StreamResult]:
    """Users stream back to back until the deadline; user n talks to ports[n % len(ports)]."""
    payload = {"model": "calibration", "prompt": "x", "max_tokens": tokens, "stream": True, "ignore_eos": True,
               "stream_options": {"include_usage": True}}
    results: list[StreamResult] = []

    async def user(number: int) -> None:
        connection = Connection("127.0.0.1", ports[number % len(ports)])
        try:
            while time.perf_counter() < deadline:
                results.append(await connection.stream("/v1/completions", payload, timeout_s=60))
        finally:
            await connection.close()

    await asyncio.gather(*(user(n) for n in users))
    return results


def _run_users(ports: Sequence[int], users: int, tokens: int, duration_s: float,
               processes: int) -> tuple[list[StreamResult], float, list[float]]:
    """The results, the wall time and each client process's CPU (fraction of a core): in this process,
    or with the users round-robin over `processes` forked workers (bench/serving/workers.py)."""
    if processes == 1:
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        results = asyncio.run(_closed_loop(ports, range(users), tokens, started + duration_s))
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        return results, wall, [((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / wall]
    from bench.serving.workers import Report, fan_out

    def work(index: int, start: float, report: Report) -> dict[str, Any]:
        results = asyncio.run(_closed_loop(ports, range(index, users, processes), tokens, start + duration_s))
        return {"results": results, "start": start, "finished": time.perf_counter()}

    done = fan_out(processes, work, lambda phase, count: None)
    wall = max(d["finished"] for d in done) - done[0]["start"]
    return [r for d in done for r in d["results"]], wall, [(d["cpu_pct"] or 0) / 100 for d in done]


def measure_level(port: int | Sequence[int], users: int, ttft_s: float, itl_s: float, tokens: int, duration_s: float,
                  processes: int = 1) -> dict[str, Any]:
    ports = [port] if isinstance(port, int) else list(port)
    results, wall, cpu = _run_users(ports, users, tokens, duration_s, processes)
    ok = [r for r in results if r.ok and r.first_token is not None]
    ttft_errors = sorted((r.first_token - r.sent) - ttft_s for r in ok)
    itl_errors = sorted((b - a) - itl_s for r in ok for a, b in zip(r.token_times, r.token_times[1:], strict=False))

    def pcts(errors: list[float]) -> dict[str, float | None]:
        return {f"p{q}": percentile(errors, q) if errors else None for q in (50, 99)}

    level = {
        "users": users,
        "processes": processes,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "requests_per_s": len(ok) / wall,
        "tokens_per_s": sum(len(r.token_times) for r in ok) / wall,
        "ttft_error_s": pcts(ttft_errors),
        "itl_error_s": pcts(itl_errors),
        "usage_mismatches": sum(1 for r in ok if r.usage_completion_tokens not in (None, len(r.token_times))),
        "client_cpu_fraction": sum(cpu),  # 1.0 = one core busy all the time (all client processes together)
        "client_cpu_fraction_max": max(cpu),  # the busiest client process
    }
    worst = max(abs(level["ttft_error_s"]["p99"] or 0), abs(level["itl_error_s"]["p99"] or 0))
    level["trustworthy"] = level["errors"] == 0 and worst <= ERROR_BOUND_S
    return level


def calibrate(ttft_s: float = 0.05, itl_s: float = 0.01, levels: list[int] | None = None, tokens: int = 32,
              duration_s: float = 5.0, progress: Any = None, processes: int = 1, servers: int = 1) -> dict[str, Any]:
    """The default (one client process) gives the single-process ceiling that run.client_processes: auto
    divides by; `processes` > 1 measures the spread client, `servers` > 1 endpoints so the one-loop
    calibration server is not what limits it."""
    levels = levels or [1, 16, 64, 128, 256]
    started: list[tuple[subprocess.Popen[str], int]] = []
    try:
        for _ in range(servers):
            started.append(start_server(ttft_s, itl_s))
        measured = []
        for users in levels:
            if progress:
                progress(users)
            measured.append(measure_level([port for _, port in started], users, ttft_s, itl_s, tokens, duration_s,
                                          processes))
    finally:
        for proc, _ in started:
            proc.kill()
            proc.wait()
    trusted = [level for level in measured if level["trustworthy"]]
    ceiling = max(trusted, key=lambda level: level["tokens_per_s"]) if trusted else None
    return {
        "configured": {"ttft_s": ttft_s, "itl_s": itl_s, "tokens": tokens, "duration_s": duration_s,
                       "client_processes": processes, "servers": servers},
        "error_bound_s": ERROR_BOUND_S,
        "levels": measured,
        "ceiling": None if ceiling is None else {
            "users": ceiling["users"], "requests_per_s": ceiling["requests_per_s"],
            "tokens_per_s": ceiling["tokens_per_s"]},
        "median_client_cpu_fraction": statistics.median(level["client_cpu_fraction"] for level in measured),
    }


def latest_path() -> Path:
    """Where `lokaal-bench calibrate` keeps this machine's latest result, for runs to record."""
    import os

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lokaal-bench" / "loadgen-calibration.json"


def save_latest(result: dict[str, Any], machine: str) -> Path:
    from bench.atomic import write_json

    path = latest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**result, "machine_id": machine, "saved": time.time()})
    return path


def latest_for(machine: str) -> dict[str, Any] | None:
    """This machine's latest calibration, or None (never another machine's: it would not apply)."""
    import json

    try:
        data = json.loads(latest_path().read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("machine_id") == machine else None
