"""The load generator against the calibration endpoint, both real processes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.serving.calibrate import measure_level, start_server
from bench.serving.client import Connection


def test_streamed_timing_matches_the_endpoint() -> None:
    proc, port = start_server(0.05, 0.01)
    try:
        level = measure_level(port, users=4, ttft_s=0.05, itl_s=0.01, tokens=8, duration_s=1.5)
    finally:
        proc.kill()
        proc.wait()
    assert level["errors"] == 0 and level["requests"] >= 8 and level["usage_mismatches"] == 0
    # generous bounds: a shared CI machine; the figures that matter come from scripts/bench_loadgen.py
    assert 0 <= level["ttft_error_s"]["p50"] < 0.02 and abs(level["itl_error_s"]["p50"]) < 0.005


def test_chat_non_streaming_and_errors_are_handled() -> None:
    proc, port = start_server(0.0, 0.0)

    async def run() -> list:
        connection = Connection("127.0.0.1", port)
        chat = await connection.stream("/v1/chat/completions", {"messages": [], "max_tokens": 3, "stream": True})
        plain = await connection.stream("/v1/completions", {"prompt": "x", "max_tokens": 5, "stream": False})
        missing = await connection.stream("/v1/nothing", {"stream": True})
        again = await connection.stream("/v1/completions", {"prompt": "x", "max_tokens": 2, "stream": True})
        await connection.close()
        return [chat, plain, missing, again]

    try:
        chat, plain, missing, again = asyncio.run(run())
    finally:
        proc.kill()
        proc.wait()
    assert chat.ok and len(chat.token_times) == 3
    assert plain.ok and plain.usage_completion_tokens == 5
    assert missing.error.startswith("HTTP 404")
    assert again.ok and len(again.token_times) == 2  # the keep-alive connection stayed in step


def test_calibrate_command_reports_a_ceiling(tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    done = subprocess.run([sys.executable, "-m", "bench", "calibrate", "--users", "1", "--users", "8",
                           "--duration", "1", "--tokens", "8", "--output", str(out)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    saved = json.loads((tmp_path / "lokaal-bench" / "loadgen-calibration.json").read_text())
    assert saved["levels"] == result["levels"] and len(saved["machine_id"]) == 16  # for this machine's runs
    assert [level["users"] for level in result["levels"]] == [1, 8]
    assert result["levels"][1]["requests_per_s"] > result["levels"][0]["requests_per_s"]
    assert "ceiling:" in done.stdout or "no level" in done.stdout
