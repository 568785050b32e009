"""The load generator over several processes (run.client_processes), for loads one asyncio loop
cannot keep up with.

Workers are forked (the cell process of a served engine holds no torch and no threads to break),
each runs its own asyncio loop, and all begin at ONE absolute start time: time.perf_counter is
CLOCK_MONOTONIC on Linux, the same clock in every process, so scheduled and sent times taken in
different workers stay comparable with each other and with the cell's t0. Results come back over
a pipe as plain (picklable) data.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

Report = Callable[[str, int], None]  # (phase, requests done by this worker)
Work = Callable[[int, float, Report], dict[str, Any]]  # (worker index, start, report) -> picklable result

READY_TIMEOUT_S = 60.0
START_MARGIN_S = 0.05  # a moment for every worker to set up its tasks before the first send is due


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_client_processes(setting: int | str, load: dict[str, float], ceiling: dict[str, Any] | None,
                            cores: int) -> tuple[int, str]:
    """How many client processes a load point gets, and why. An int setting is taken as given; "auto"
    divides the load by this machine's single-process ceiling (`lokaal-bench calibrate`) in every unit
    both name (users, requests/s, streamed tokens/s), rounds up, and keeps within 1..cores-1 (one core
    is left to the parent and whatever else runs here)."""
    if setting != "auto":
        return int(setting), f"run.client_processes: {setting}"
    if ceiling is None:
        return 1, "auto: no load-generator calibration with a ceiling for this machine (run `lokaal-bench calibrate`)"
    ratios = {unit: load[unit] / ceiling[unit] for unit in ("users", "requests_per_s", "tokens_per_s")
              if load.get(unit) is not None and ceiling.get(unit)}
    if not ratios:
        return 1, "auto: the load and the calibrated ceiling share no unit"
    unit, ratio = max(ratios.items(), key=lambda item: item[1])
    wanted = max(1, math.ceil(ratio))
    limit = max(1, cores - 1)
    chosen = min(wanted, limit)
    reason = f"auto: {unit} {load[unit]:.4g} against a single-process ceiling of {ceiling[unit]:.4g} needs {wanted}"
    if chosen < wanted:
        reason += f"; capped at {limit} (cores - 1)"
    return chosen, reason


def fan_out(count: int, work: Work, progress: Callable[[str, int], None]) -> list[dict[str, Any]]:
    """Run work(index, start, report) in `count` forked processes sharing one start time; return their
    results in index order, each with its pid and CPU use added. progress(phase, done) gets the sum of
    the workers' done counts. A worker that raises or dies fails the whole load point."""
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    try:
        for index in range(count):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker, args=(index, child_end, work), daemon=True)
            process.start()
            child_end.close()
            pipes.append(parent_end)
            processes.append(process)
        for index, pipe in enumerate(pipes):  # a barrier: every worker is up before the clock starts
            if not pipe.poll(READY_TIMEOUT_S):
                raise RuntimeError(f"client process {index} did not start within {READY_TIMEOUT_S:g} s")
            pipe.recv()
        start = time.perf_counter() + START_MARGIN_S
        for pipe in pipes:
            pipe.send(start)
        return _collect(pipes, processes, progress)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()
        for pipe in pipes:
            pipe.close()


def _collect(pipes: list[Connection], processes: list[Any],
             progress: Callable[[str, int], None]) -> list[dict[str, Any]]:
    results: list[dict[str, Any] | None] = [None] * len(pipes)
    done = [0] * len(pipes)
    open_pipes = dict(enumerate(pipes))
    while open_pipes:
        for pipe in wait(list(open_pipes.values())):
            index = pipes.index(pipe)  # type: ignore[arg-type]
            try:
                kind, *payload = pipe.recv()  # type: ignore[union-attr]
            except EOFError:
                processes[index].join(5)
                raise RuntimeError(f"client process {index} died (exit code {processes[index].exitcode})") from None
            if kind == "progress":
                phase, done[index] = payload
                progress(phase, sum(done))
            elif kind == "error":
                raise RuntimeError(f"client process {index} failed: {payload[0]}")
            else:
                results[index] = payload[0]
                del open_pipes[index]
    return [r for r in results if r is not None]


def _worker(index: int, pipe: Connection, work: Work) -> None:
    try:
        pipe.send(("ready", os.getpid()))
        start = pipe.recv()
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = work(index, start, lambda phase, done: pipe.send(("progress", phase, done)))
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        pipe.send(("done", {**result, "pid": os.getpid(), "cpu_pct": 100 * cpu / wall if wall > 0 else None}))
    except BaseException as exc:  # every failure goes to the parent, which fails the load point
        pipe.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"))
    finally:
        pipe.close()
