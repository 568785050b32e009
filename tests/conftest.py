"""Shared fixtures: a session-wide model cache (synthetic weights are built once) and profile writing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic models are materialised once per test session, in a private cache."""
    cache = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("LOKAAL_BENCH_CACHE")
    os.environ["LOKAAL_BENCH_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("LOKAAL_BENCH_CACHE", None)
    else:
        os.environ["LOKAAL_BENCH_CACHE"] = previous


@pytest.fixture(scope="session", autouse=True)
def machine_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The measuring lock (bench/run/machine_lock.py) of this test session: runs of the session still take
    it one after another, but wait for no other session's on a shared machine (tests that exercise
    two runs at once give them a directory of their own)."""
    directory = tmp_path_factory.mktemp("machine-lock")
    previous = os.environ.get("LOKAAL_BENCH_LOCK_DIR")
    os.environ["LOKAAL_BENCH_LOCK_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("LOKAAL_BENCH_LOCK_DIR", None)
    else:
        os.environ["LOKAAL_BENCH_LOCK_DIR"] = previous


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (tmpfs) mounted at `path` for the block; the test is skipped, with the
    reason, where this machine does not let it mount one."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True) if mount else None
    if done is None or done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() if done else 'no mount command'}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def calibration_endpoint(ttft: float, itl: float) -> Iterator[str]:
    """The built-in calibration server (a real process on loopback) for as long as the block runs."""
    from bench.serving.calibrate import start_server

    proc, port = start_server(ttft, itl)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait()


def run_bench(directory: Path, profile: dict[str, Any], timeout: float = 900) -> tuple[Path, Any]:
    """`lokaal-bench run` of `profile` in a subprocess, its result set in directory/result."""
    import sys

    path = directory / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    out = directory / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--output", str(out)],
                          capture_output=True, text=True, timeout=timeout)
    return out, done


def tiny_profile(**overrides: Any) -> dict[str, Any]:
    """A small, fast profile on the tiny card; `overrides` replace top-level sections."""
    profile: dict[str, Any] = {
        "name": "test",
        "models": [{"card": "tiny-llama"}],
        "engines": [{"kind": "transformers", "dtype": "float32", "device": "cpu", "threads": 1}],
        "workloads": [{"name": "w", "input_tokens": {"dist": "uniform", "min": 16, "max": 48},
                       "output_tokens": 8, "seed": 3}],
        "scenarios": [{"kind": "single-stream", "requests": 3}],
        "run": {"repetitions": 2, "warmup": 1, "cell_timeout_s": 120, "telemetry_interval_s": 0.1},
    }
    profile.update(overrides)
    # Probing the machine costs seconds per run; the tests that check rooflines turn it on.
    profile["run"] = {"probes": False, **profile["run"]}
    return profile


@pytest.fixture
def write_profile(tmp_path: Path):
    def write(data: Any, name: str = "profile.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def loopback_only() -> list[str]:
    """A command prefix that runs a program in a new network namespace holding only loopback
    (`unshare -rn` + `ip link set lo up`); empty when this machine does not allow it."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        return []
    prefix = [unshare, "-rn", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else []


# The calibration endpoint with --slots 4 serves at most 4 completions at once (the rest queue), so a
# capacity search against it has a known answer: 4 users, or 4 / service time requests per second.
CAPACITY_TTFT, CAPACITY_ITL, CAPACITY_TOKENS, CAPACITY_SLOTS = 0.02, 0.005, 8, 4
CAPACITY_SLO = {"percentile": 90, "ttft_s": CAPACITY_TTFT + 0.015}  # queueing costs a whole service time


@pytest.fixture(scope="session")
def capacity_result_set(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """A real result set with two capacity cells (a concurrency and a rate search) of tiny-llama served
    by the calibration endpoint: short searches without bisection (about 20 s on 2 cores) that still
    bracket the edge (4 users met, 8 missed)."""
    from bench.serving.calibrate import start_server

    proc, port = start_server(CAPACITY_TTFT, CAPACITY_ITL, slots=CAPACITY_SLOTS)
    try:
        root = tmp_path_factory.mktemp("capacity")
        data = tiny_profile(
            engines=[{"kind": "openai", "base_urls": [f"http://127.0.0.1:{port}/v1"]}],
            workloads=[{"name": "w", "input_tokens": 16, "output_tokens": CAPACITY_TOKENS}],
            scenarios=[{"kind": "capacity", "search": "concurrency", "start": 4, "max": 8, "steps": 0},
                       {"kind": "capacity", "search": "rate", "start": 40, "max": 80, "steps": 0,
                        "arrival": "constant"}],
            run={"repetitions": 1, "warmup": 1, "slo": CAPACITY_SLO},
        )
        (root / "profile.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        out = root / "capacity"
        done = subprocess.run([sys.executable, "-m", "bench", "run", str(root / "profile.yaml"), "--output", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        proc.kill()
        proc.wait()
    return out


# CI installs every engine and service lokaal-bench ships (.ci/run) and names them here, e.g.
# LOKAAL_BENCH_REQUIRE_ENGINES=vllm,llamacpp,slurm: a test carrying one of those markers that skips
# (its engine missing or not starting) then fails instead, so a shipped engine cannot land untested.
REQUIRED_ENGINES = {m.strip() for m in os.environ.get("LOKAAL_BENCH_REQUIRE_ENGINES", "").split(",") if m.strip()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    required = sorted(REQUIRED_ENGINES & {m.name for m in item.iter_markers()})
    if report.skipped and required and "gpu" not in {m.name for m in item.iter_markers()}:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: skipped, but LOKAAL_BENCH_REQUIRE_ENGINES requires "
                           f"{', '.join(required)} to run here: {reason}")


def optional_engine(name: str, modules: tuple[str, ...], install: str) -> list[pytest.MarkDecorator]:
    """Marks for the tests of an optional engine: its marker, and a skip with the reason when one of its
    modules cannot be imported (a failure where LOKAAL_BENCH_REQUIRE_ENGINES names the engine, above)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return [getattr(pytest.mark, name),
            pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed ({install})")]


def cells_by_label(out: Path) -> dict[str, tuple[dict, list]]:
    """A result set's cells by label: (cell.json, its request records), as the runner wrote them."""
    from bench.results.records import read_records

    manifest = json.loads((out / "manifest.json").read_text())
    found = {}
    for entry in manifest["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        found[entry["label"]] = (summary, list(read_records(out / entry["dir"] / "records.jsonl.gz")))
    return found
