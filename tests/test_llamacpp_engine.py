"""The llamacpp engine end to end, in one real run of the tiny card: llama.cpp cells beside transformers
cells complete with exact lengths and every token timed; llama.cpp receives exactly the prompt ids the
transformers engine receives (same prompts_sha256) and, greedy on the same weights, answers the same; a
batch of B requests is one llama.cpp batch (B sequences decoded together, not one after another); each
cell records llama.cpp's build, CPU features and the GGUF's real bytes. In the same run a truncated GGUF
and a model too large for memory fail their own cells with the reason, and nothing else is lost."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.results.records import read_records
from conftest import optional_engine, run_bench, tiny_profile

pytestmark = optional_engine("llamacpp", ("llama_cpp", "gguf"), "pip install -e '.[llamacpp]'; see docs/llamacpp.md")

LLAMACPP = {"kind": "llamacpp", "quantization": "Q8_0", "threads": 1, "n_ctx": 1024}
TOO_LARGE = {"kind": "llamacpp", "quantization": "Q8_0", "threads": 1, "n_ctx": 1 << 26}  # a 128 GiB KV cache


def summaries(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [json.loads((out / c["dir"] / "cell.json").read_text()) for c in manifest["cells"]
            if (out / c["dir"] / "cell.json").exists()]


def _is(summary: dict, engine: dict) -> bool:
    """A cell of the tiny card on this engine entry (its settings as given, defaults filled in)."""
    config = summary["config"]
    return bool(config["model"].get("card")) and all(config["engine"].get(k) == v for k, v in engine.items())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    from bench.models import resolve_model

    root = tmp_path_factory.mktemp("llamacpp-engine")
    good = resolve_model("tiny-llama", None, "auto", 0, None, gguf=True, quantization="Q8_0").path
    truncated = root / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:200_000])
    profile = tiny_profile(
        models=[{"card": "tiny-llama"}, {"path": str(truncated)}],
        engines=[{"kind": "transformers", "dtype": "float32", "device": "cpu", "threads": 1}, LLAMACPP, TOO_LARGE],
        workloads=[{"name": "w", "input_tokens": {"dist": "uniform", "min": 16, "max": 48}, "output_tokens": 6,
                    "seed": 3}],
        scenarios=[{"kind": "single-stream", "requests": 2}, {"kind": "offline", "batch_sizes": [4], "batches": 1},
                   {"kind": "prefill-decode", "prompt_tokens": [32], "gen_tokens": [6], "depths": [0, 64],
                    "runs": 1}],
        run={"repetitions": 2, "warmup": 1, "cell_timeout_s": 300, "telemetry_interval_s": 0.1},
    )
    return run_bench(root, profile, timeout=900)


def test_llama_cpp_cells_complete_with_every_token_timed(run) -> None:
    out, done = run
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # 1: some cells FAILED, as meant
    cells = [s for s in summaries(out) if _is(s, LLAMACPP)]
    assert len(cells) == 4
    for summary in cells:
        assert summary["status"] == "COMPLETED", summary["reason"]
        records = [r for r in read_records(out / "cells" / summary["cell_id"] / "records.jsonl.gz") if not r.warmup]
        assert records and all(r.output_tokens == r.expected_output_tokens == 6 for r in records)
        for record in records:
            assert len(record.token_times) == 6 and record.token_times == sorted(record.token_times)
            assert record.first_token_time >= record.submit_time
        engine = summary["engine"]
        assert engine["engine"] == "llamacpp" and engine["quantization"] == "Q8_0"
        build = engine["llama_cpp_build"]
        assert build["ggml_version"] and "CPU" in build["backends"] and build["cpu_features"]
        assert build["cpu_features"].get("AVX2") is not None or build["cpu_features"].get("NEON") is not None
        assert summary["model"]["gguf"]["file_type"] == "Q8_0"
        assert summary["model"]["roofline_inputs"]["weight_bytes"] == summary["model"]["gguf"]["tensor_bytes"]
        assert "Q8_0" in summary["label"]
        assert "prefix_cache" not in summary  # llama.cpp's timers count no cached tokens: nothing measured
    depth = next(s for s in cells if s["config"]["scenario"]["kind"] == "prefill-decode"
                 and s["config"]["scenario"]["depth"] == 64)
    records = [r for r in read_records(out / "cells" / depth["cell_id"] / "records.jsonl.gz") if not r.warmup]
    assert {r.context_depth for r in records} == {64}


def test_llama_cpp_receives_the_ids_the_other_engines_receive(run) -> None:
    out, _ = run
    by_point: dict[str, dict[str, dict]] = {}
    for s in summaries(out):
        if s["status"] == "COMPLETED":
            point = json.dumps([s["config"]["workload"], s["config"]["scenario"]], sort_keys=True)
            by_point.setdefault(point, {})[s["config"]["engine"]["kind"]] = s
    assert len(by_point) == 4
    for engines in by_point.values():
        assert engines["llamacpp"]["prompts_sha256"] == engines["transformers"]["prompts_sha256"]
        assert engines["llamacpp"]["prompts_sha256"]


def test_a_batch_is_one_llama_cpp_batch(run) -> None:
    """Four requests decoded together: llama.cpp evaluated the prompts and then 4 tokens per step in
    multi-token batches (never one sequence's token alone), and the rows share every step's time."""
    out, _ = run
    offline = next(s for s in summaries(out) if _is(s, LLAMACPP) and s["config"]["scenario"]["kind"] == "offline")
    records = [r for r in read_records(out / "cells" / offline["cell_id"] / "records.jsonl.gz") if not r.warmup]
    batches: dict[tuple[int, int], list] = {}
    for record in records:
        batches.setdefault((record.repetition, record.batch_index), []).append(record)
    for rows in batches.values():
        assert len(rows) == 4
        assert all(r.token_times == rows[0].token_times for r in rows)
        timing = rows[0].engine_timing
        # every token was evaluated in a multi-token llama_decode (llama.cpp counts those as prompt tokens):
        # the prompts, then 4 tokens a step; no single-token decode, so no sequence was decoded on its own
        assert timing["n_p_eval"] == sum(r.input_tokens for r in rows) + 4 * (6 - 1)
        assert timing["eval_s"] == 0.0 and timing["n_eval"] <= 1  # llama.cpp reports at least 1


def test_bad_models_fail_their_own_cells_with_the_reason(run) -> None:
    out, done = run
    manifest = json.loads((out / "manifest.json").read_text())
    by_label = {c["label"]: c for c in manifest["cells"]}
    truncated = [c for label, c in by_label.items() if label.startswith("truncated")]
    assert truncated and all(c["status"] == "FAILED" for c in truncated)
    assert all("truncated GGUF file" in c["reason"] or "llamacpp engine" in c["reason"] for c in truncated)
    too_large = [s for s in summaries(out) if s["config"]["engine"].get("n_ctx") == TOO_LARGE["n_ctx"]
                 and s["config"]["model"].get("card")]
    assert len(too_large) == 4
    for summary in too_large:
        assert summary["status"] == "FAILED"
        assert "model too large for memory" in summary["reason"] and "KV cache" in summary["reason"]
    completed = [c for c in manifest["cells"] if c["status"] == "COMPLETED"]
    assert len(completed) == 8  # the tiny card on transformers and on llama.cpp: nothing else was lost
    assert "Traceback" not in done.stdout
