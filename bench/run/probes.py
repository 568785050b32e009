"""Probes of the machine's physical limits, measured: memory bandwidth, matrix-multiply throughput
per dtype, host-to-device transfer, disk read speed of model directories, GPU all-reduce.

They give each cell its roofline (bench/measure/roofline.py): how close a result is to what the hardware
allows. Run alone with `lokaal-bench probe`; a run probes once at its start (quick sizes) in a
child process, so thread settings and imports never leak into the runner. Each figure is the best
of a few repetitions (the least disturbed), with its unit in its name.

    python -m bench.run.probes [--quick] [--model-dir DIR ...]   # prints JSON
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# 2: a GPU's device-memory copy is timed over several copies (one 256 MiB copy takes about 0.1 ms
# on an H200, where the launch and synchronisation alone cost a tenth of that).
PROBE_VERSION = 2


def _best_seconds(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None,
                  inner: int = 1) -> float:
    """Seconds per call of fn, the best of `repeats` timings of `inner` calls each."""
    fn()  # warm-up: first calls allocate, page in and pick kernels
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def host_memory_bandwidth(quick: bool) -> dict[str, Any]:
    """Read bandwidth: summing a float32 array far larger than the caches is bound by DRAM reads."""
    import torch

    n = (256 if quick else 1024) * 2**20 // 4
    data = torch.ones(n, dtype=torch.float32)
    seconds = _best_seconds(lambda: data.sum(), 3 if quick else 5)
    return {"read_gb_s": n * 4 / seconds / 1e9, "bytes": n * 4, "threads": torch.get_num_threads()}


def _matmul_rate(device: str, dtype_name: str, max_size: int, repeats: int) -> tuple[float | None, int]:
    """TFLOP/s of a square matmul, growing the size until one product takes long enough to time
    (an emulated dtype on a CPU is 100x slower than a native one: a fixed size would take minutes)."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if dtype_name == "int8" and not hasattr(torch, "_int_mm"):
        return None, 0
    size, seconds = 256, 0.0
    while True:
        if dtype_name == "int8":
            a = torch.randint(-64, 64, (size, size), dtype=torch.int8, device=device)
            b = torch.randint(-64, 64, (size, size), dtype=torch.int8, device=device)
            multiply = torch._int_mm
        else:
            dtype = getattr(torch, dtype_name)
            a = torch.randn(size, size, device=device).to(dtype)
            b = torch.randn(size, size, device=device).to(dtype)
            multiply = torch.matmul
        seconds = _best_seconds(lambda a=a, b=b, multiply=multiply: multiply(a, b), repeats, sync)
        if seconds >= 0.05 or size >= max_size:
            return 2 * size**3 / seconds / 1e12, size
        size *= 2


def matmul_throughput(device: str, quick: bool) -> dict[str, Any]:
    """Dense matrix-multiply TFLOP/s (TOP/s for int8) per dtype; None with the reason where unsupported."""
    max_size = (2048 if quick else 4096) if device == "cpu" else (8192 if quick else 16384)
    out: dict[str, Any] = {}
    for name in ("float32", "bfloat16", "float16", "int8"):
        key = "int8_tops" if name == "int8" else f"{name}_tflops"
        try:
            out[key], out[f"{name}_size"] = _matmul_rate(device, name, max_size, 2 if quick else 4)
            if out[key] is None:
                out[f"{name}_reason"] = "not supported by this torch build"
        except (RuntimeError, NotImplementedError) as exc:
            out[key] = None
            out[f"{name}_reason"] = str(exc).splitlines()[0][:200]
    return out


def disk_read(directory: Path, limit_bytes: int) -> dict[str, Any]:
    """Sequential read speed of a model directory's weight files, past the page cache where the
    kernel allows it (posix_fadvise DONTNEED): it bounds how fast a model can load."""
    files = [Path(directory)] if Path(directory).is_file() else sorted(  # a GGUF file, or a model directory
        p for p in Path(directory).iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    read = 0
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as src:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while read < limit_bytes and (chunk := src.read(16 * 2**20)):
                read += len(chunk)
        if read >= limit_bytes:
            break
    seconds = time.perf_counter() - start
    return {"directory": str(directory), "read_gb_s": read / seconds / 1e9 if seconds > 0 else None, "bytes": read}


def gpu_probes(quick: bool) -> list[dict[str, Any]]:
    """Per GPU: device memory bandwidth (copy), host-to-device and device-to-host over pinned memory,
    and matmul per dtype. Not reachable on a machine without CUDA."""
    import torch

    results = []
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        torch.cuda.set_device(index)
        n = (256 if quick else 2048) * 2**20 // 4
        src = torch.empty(n, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        copy_s = _best_seconds(lambda dst=dst, src=src: dst.copy_(src), 5, torch.cuda.synchronize, inner=10)
        host = torch.empty(n, dtype=torch.float32, pin_memory=True)
        h2d_s = _best_seconds(lambda src=src, host=host: src.copy_(host, non_blocking=True), 5, torch.cuda.synchronize)
        d2h_s = _best_seconds(lambda src=src, host=host: host.copy_(src, non_blocking=True), 5, torch.cuda.synchronize)
        results.append({
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "memory_bandwidth_gb_s": 2 * n * 4 / copy_s / 1e9,  # a copy reads and writes every byte
            "h2d_gb_s": n * 4 / h2d_s / 1e9,
            "d2h_gb_s": n * 4 / d2h_s / 1e9,
            "matmul": matmul_throughput(device, quick),
        })
        del src, dst, host
        torch.cuda.empty_cache()
    return results


def _all_reduce_worker(rank: int, world: int, port: int, n: int, queue: Any) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    data = torch.ones(n, dtype=torch.float32, device=f"cuda:{rank}")
    seconds = _best_seconds(lambda: dist.all_reduce(data), 5, torch.cuda.synchronize)
    if rank == 0:
        # NCCL's bus bandwidth convention: algorithm bandwidth x 2(w-1)/w
        queue.put(n * 4 / seconds / 1e9 * 2 * (world - 1) / world)
    dist.destroy_process_group()


def all_reduce_bandwidth(quick: bool) -> dict[str, Any] | None:
    """NCCL all-reduce bus bandwidth across all GPUs of this node (None with fewer than two)."""
    import socket

    import torch
    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    if world < 2:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    n = (64 if quick else 512) * 2**20 // 4
    mp.start_processes(_all_reduce_worker, args=(world, port, n, queue), nprocs=world, join=True, start_method="spawn")
    return {"gpus": world, "bus_bandwidth_gb_s": queue.get(timeout=60), "bytes": n * 4}


def run_probes(quick: bool = True, model_dirs: list[Path] | None = None) -> dict[str, Any]:
    import torch

    result: dict[str, Any] = {"probe_version": PROBE_VERSION, "quick": quick, "torch": torch.__version__}
    started = time.perf_counter()
    result["host_memory"] = host_memory_bandwidth(quick)
    result["host_matmul"] = matmul_throughput("cpu", quick)
    result["disk"] = [disk_read(d, (256 if quick else 4096) * 2**20) for d in model_dirs or []]
    result["gpus"] = gpu_probes(quick) if torch.cuda.is_available() else []
    result["all_reduce"] = all_reduce_bandwidth(quick) if torch.cuda.is_available() else None
    result["seconds"] = time.perf_counter() - started
    return result


def probe_in_subprocess(quick: bool, model_dirs: list[Path], timeout_s: float = 600) -> dict[str, Any]:
    """Run the probes in a child process (own imports and thread pool); an error becomes a reason."""
    args = [sys.executable, "-m", "bench.run.probes", *(["--quick"] if quick else [])]
    for directory in model_dirs:
        args += ["--model-dir", str(directory)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"probes timed out after {timeout_s:g} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["probes failed"])[-1]}
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run.probes")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-dir", action="append", default=[])
    args = parser.parse_args(argv)
    print(json.dumps(run_probes(args.quick, [Path(d) for d in args.model_dir])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
