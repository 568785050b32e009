"""Managed servers: the runner starts the server before its cells, gives their clients its URL,
records command, log and exit status, and stops it after the run, after a failed start and after
Ctrl-C. The server here is the calibration endpoint started as a `command` server (a real process
on loopback); test_vllm_served.py does the same with vLLM's OpenAI server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import tiny_profile

CALIBRATION = [sys.executable, "-m", "bench.serving.calibration_server", "--port", "{port}",
               "--ttft", "0.01", "--itl", "0.002"]


def managed_profile(command: list[str], requests: int = 8, rate: float = 50.0) -> dict:
    return tiny_profile(engines=[{"kind": "openai", "server": {"kind": "command", "command": command,
                                                                "startup_timeout_s": 30}}],
                        scenarios=[{"kind": "concurrency", "users": [1, 2], "requests": requests},
                                   {"kind": "rate", "rates": [rate], "requests": requests}],
                        run={"repetitions": 1, "warmup": 1})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose, but the runner reaps its children, so there should be none
    return True


def test_the_runner_starts_records_and_stops_the_server(write_profile, tmp_path: Path) -> None:
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(managed_profile(CALIBRATION))),
                           "--output", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "missing" in manifest["load_generator_calibration"]  # no calibrate run in this cache: said so
    (server,) = manifest["servers"].values()  # one server for all three cells
    assert server["command"][:3] == CALIBRATION[:3] and "{port}" not in server["command"]
    assert server["healthy_after_s"] > 0 and server["returncode"] is not None and not alive(server["pid"])
    assert (out / server["log"]).is_file()
    assert server["log"] in manifest["integrity"]["files"]  # the log is sealed with the result set
    for entry in manifest["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert summary["config"]["engine"]["base_urls"] == []  # the port is not part of the cell's identity
        spec = json.loads((out / entry["dir"] / "spec.json").read_text())
        assert spec["managed_base_urls"] == [server["url"]]  # where the cell's process sends its requests


def test_a_server_that_does_not_start_fails_its_cells_with_the_reason(write_profile, tmp_path: Path) -> None:
    out = tmp_path / "result"
    command = [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"]
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(managed_profile(command))),
                           "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(c["status"] == "FAILED" and "exited with status 3" in c["reason"] for c in manifest["cells"])
    (server,) = manifest["servers"].values()
    assert "no model here" in (out / server["log"]).read_text()


def test_ctrl_c_stops_the_server(write_profile, tmp_path: Path) -> None:
    out = tmp_path / "result"
    profile = write_profile(managed_profile(CALIBRATION, requests=400, rate=5.0))  # about 80 s of load
    runner = subprocess.Popen([sys.executable, "-m", "bench", "run", str(profile), "--output", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "cells").glob("*/spec.json")):
        time.sleep(0.2)  # the server is up once the first cell's spec (with its URL) is written
    time.sleep(2)
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 130, output
    (server,) = json.loads((out / "manifest.json").read_text())["servers"].values()
    assert server["returncode"] is not None and not alive(server["pid"])
