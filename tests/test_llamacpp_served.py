"""llama.cpp's own llama-server as a managed server (server kind llamacpp) on the tiny card's GGUF: started
on loopback with the profile's slots and continuous batching, health checked, measured by the openai
engine with exact lengths (llama-server's per-chunk token count), stopped, its command, build and log
kept; a llama-server that is not there fails its cells with the reason and the run goes on.

Needs the binary from scripts/build_llama_cpp_tools.sh (skipped without it, failed where
LOKAAL_BENCH_REQUIRE_ENGINES names llamacpp: tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results.records import read_records
from conftest import optional_engine, run_bench, tiny_profile

pytestmark = optional_engine("llamacpp", ("llama_cpp", "gguf"), "pip install -e '.[llamacpp]'; see docs/llamacpp.md")


def _llama_server() -> str | None:
    from bench.serving.llama_server import BINARY_ENV, LlamaServerMissing, find_tool

    try:
        return str(find_tool("llama-server", None, BINARY_ENV))
    except LlamaServerMissing:
        return None


SERVER = {"kind": "llamacpp", "quantization": "Q8_0", "parallel": 2, "threads": 1, "n_ctx": 2048}
MISSING = {"kind": "llamacpp", "quantization": "Q8_0", "binary": "/nonexistent/llama-server"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    if _llama_server() is None:
        pytest.skip("llama-server is not built (scripts/build_llama_cpp_tools.sh)")
    profile = tiny_profile(
        engines=[{"kind": "openai", "server": SERVER}, {"kind": "openai", "server": MISSING}],
        workloads=[{"name": "w", "input_tokens": {"dist": "uniform", "min": 16, "max": 48}, "output_tokens": 12,
                    "seed": 3}],
        scenarios=[{"kind": "concurrency", "users": [1, 2], "requests": 4},
                   {"kind": "rate", "rates": [20], "requests": 8}],
        run={"repetitions": 2, "warmup": 1, "cell_timeout_s": 300},
    )
    return run_bench(tmp_path_factory.mktemp("llama-server"), profile, timeout=600)


def test_llama_server_cells_complete_with_exact_lengths(served) -> None:
    out, done = served
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # 1: the missing server's cells
    manifest = json.loads((out / "manifest.json").read_text())
    cells = [json.loads((out / c["dir"] / "cell.json").read_text()) for c in manifest["cells"]]
    running = [c for c in cells if c["config"]["engine"]["server"].get("binary") is None]
    assert len(running) == 3
    for summary in running:
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert "llama-server/Q8_0" in summary["label"]
        records = [r for r in read_records(out / "cells" / summary["cell_id"] / "records.jsonl.gz") if not r.warmup]
        assert records and all(r.error is None for r in records)
        assert all(r.output_tokens == r.usage_output_tokens == 12 == len(r.token_times) for r in records)


def test_the_server_is_recorded_and_stopped_with_its_log(served) -> None:
    out, _ = served
    manifest = json.loads((out / "manifest.json").read_text())
    servers = [s for s in manifest["servers"].values() if "error" not in s]
    assert len(servers) == 1
    server = servers[0]
    command = " ".join(server["command"])
    assert "--parallel 2" in command and "--cont-batching" in command and "--host 127.0.0.1" in command
    assert server["slots"] == 2 and server["continuous_batching"] is True
    assert server["model_dir"].endswith(".gguf") and server["healthy_after_s"] > 0
    assert server["returncode"] is not None  # stopped
    log = (out / server["log"]).read_text()
    assert "llama" in log.lower() and (out / server["log"]).stat().st_size > 0
    assert server["build"] is None or server["build"]["llama_cpp_python"]


def test_a_missing_llama_server_fails_its_cells_and_nothing_else(served) -> None:
    out, _ = served
    manifest = json.loads((out / "manifest.json").read_text())
    missing = [c for c in manifest["cells"] if "np4" in c["label"]]
    assert len(missing) == 3 and all(c["status"] == "FAILED" for c in missing)
    assert all("llama-server not found at /nonexistent/llama-server" in c["reason"] for c in missing)
    assert sum(c["status"] == "COMPLETED" for c in manifest["cells"]) == 3
