"""Sizing by time AND count, end to end, for every scenario kind: once where the duration floor binds
(an engine much faster than the floor: the tiny model, or the calibration endpoint with almost no
delay) and once where the count binds (a per-batch or per-token delay longer than the floor asks for).
Each asserts what was applied; none depends on how fast this machine is: the fast cases stay far
below their floor and the slow ones far above it on a machine many times faster or slower."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.results.records import read_records
from conftest import calibration_endpoint, tiny_profile

TRACE = Path(__file__).parent / "data" / "trace.jsonl"
FLOOR_S = 1.5  # run.min_duration_s where the duration binds (one repetition: each repetition's floor)


def run_profile(tmp_path: Path, profile: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, dict]:
    """Run a profile; return each cell's summary by its scenario point, with its measured records."""
    import yaml

    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--output", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr
    cells = {}
    for entry in json.loads((out / "manifest.json").read_text())["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        assert summary["status"] == "COMPLETED", summary["reason"]
        summary["_records"] = [r for r in read_records(out / entry["dir"] / "records.jsonl.gz") if not r.warmup]
        cells[entry["label"].split(" | ")[-1]] = summary
    return cells


def assert_duration_bound(summary: dict, floor_s: float) -> None:
    sizing = summary["sizing"]
    assert sizing["min_duration_per_repetition_s"] == pytest.approx(floor_s)
    (repetition,) = sizing["per_repetition"]
    assert repetition["bound"] == "duration", repetition
    assert repetition["requests"] > sizing["min_requests_per_repetition"]  # more work than the count asked for
    assert summary["metrics"]["duration_s"]["value"] >= floor_s  # the measured span held the floor
    assert summary["metrics"]["requests"]["total"] == repetition["requests"] == len(summary["_records"])
    assert_floors_held(summary)


def assert_floors_held(summary: dict) -> None:
    """No verdict reason about too little data: what the sizing is for (other reasons, such as a busy
    machine's send lag, are judged by their own tests)."""
    sizing_words = ("measured for", "samples, fewer than", "repetition(s), fewer than")
    assert not [r for r in summary["validity"]["reasons"] if any(w in r for w in sizing_words)], summary["validity"]


def assert_count_bound(summary: dict, count: int) -> None:
    sizing = summary["sizing"]
    assert sizing["min_requests_per_repetition"] == count
    (repetition,) = sizing["per_repetition"]
    assert repetition["bound"] == "count", repetition
    assert summary["metrics"]["requests"]["total"] == count == len(summary["_records"])
    assert summary["metrics"]["duration_s"]["value"] >= sizing["min_duration_per_repetition_s"]
    assert_floors_held(summary)


IN_PROCESS = [{"kind": "single-stream", "requests": 2},
              {"kind": "offline", "batch_sizes": [2], "batches": 1},
              {"kind": "prefill-decode", "prompt_tokens": [16], "gen_tokens": [4], "runs": 1}]
IN_PROCESS_WORKLOAD = [{"name": "w", "input_tokens": 16, "output_tokens": 4, "seed": 3}]


def test_in_process_scenarios_fill_their_time_floor(tmp_path: Path) -> None:
    cells = run_profile(tmp_path, tiny_profile(workloads=IN_PROCESS_WORKLOAD, scenarios=IN_PROCESS,
                                               run={"repetitions": 1, "warmup": 0, "min_duration_s": FLOOR_S}))
    assert set(cells) == {"single-stream", "offline b=2", "pp16+tg4"}
    for summary in cells.values():
        assert_duration_bound(summary, FLOOR_S)
    offline = cells["offline b=2"]
    assert offline["sizing"]["per_repetition"][0]["requests"] % 2 == 0  # whole batches


def test_in_process_scenarios_send_their_count_when_it_takes_longer(tmp_path: Path) -> None:
    # 0.3 s per batch: ten requests (the samples for p90 in one repetition) take 1.5 to 3 s, above the 1 s
    # nightly floor however fast the machine is.
    fault = json.dumps({"transformers": "slow:0.3"})
    cells = run_profile(tmp_path, tiny_profile(workloads=IN_PROCESS_WORKLOAD, scenarios=IN_PROCESS,
                                               run={"repetitions": 1, "warmup": 0}),
                        env={"LOKAAL_BENCH_FAULT": fault})
    for summary in cells.values():
        assert summary["sizing"]["min_duration_s"] == 1.0  # the nightly rules' floor, unasked
        assert "10 samples for p90" in summary["sizing"]["why"]["min_requests_per_repetition"]
        assert_count_bound(summary, 10)
    records = cells["single-stream"]["_records"]
    assert [r.request_id for r in records] == list(range(10))


def served(url: str, output_tokens: int, run: dict[str, Any], scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    return tiny_profile(engines=[{"kind": "openai", "base_urls": [url]}],
                        workloads=[{"name": "w", "input_tokens": 16, "output_tokens": output_tokens, "seed": 3}],
                        scenarios=scenarios,
                        run={"repetitions": 1, "warmup": 0, "slo": {"percentile": 50, "ttft_s": 5.0}, **run})


SERVED = [{"kind": "concurrency", "users": [2], "requests": 4},
          {"kind": "rate", "rates": [8], "arrival": "constant", "requests": 4},
          {"kind": "capacity", "search": "concurrency", "start": 4, "max": 4, "steps": 0},
          {"kind": "trace", "file": str(TRACE), "speedup": 4}]


def test_served_load_shapes_fill_their_time_floor(tmp_path: Path) -> None:
    # about 25 ms a request: far below the floor, and slow enough that the client is not the bottleneck
    with calibration_endpoint(0.01, 0.005) as url:
        cells = run_profile(tmp_path, served(url, 4, {"min_duration_s": FLOOR_S}, SERVED))
    assert set(cells) == {"concurrency 2", "rate 8/s constant", "capacity (concurrency)", "trace trace.jsonl x4"}
    for summary in cells.values():
        assert_duration_bound(summary, FLOOR_S)
    # open loop keeps its arrival process: a constant 8/s schedule, stretched to the floor
    rate = sorted(r.submit_time for r in cells["rate 8/s constant"]["_records"])
    assert len(rate) == int(FLOOR_S * 8) + 1
    gaps = [b - a for a, b in itertools.pairwise(rate)]
    assert max(gaps) - min(gaps) < 1e-3 and abs(gaps[0] - 1 / 8) < 1e-3
    # the trace (1.41 s / 4 = 0.35 s long) is replayed again and again, every entry at least once
    trace = cells["trace trace.jsonl x4"]
    assert trace["sizing"]["per_repetition"][0]["requests"] >= 2 * 30
    # the capacity probe is sized like a repetition: the SLO percentile's requests and the floor
    probe = cells["capacity (concurrency)"]
    assert probe["sizing"]["min_requests_per_repetition"] == 20
    assert probe["capacity"]["probes"][0]["requests"] == probe["sizing"]["per_repetition"][0]["requests"]


def test_served_load_shapes_send_their_count_when_it_takes_longer(tmp_path: Path) -> None:
    # 16 tokens at 50 ms each: every request takes 0.8 s, so the counts outlast the 1 s nightly floor.
    with calibration_endpoint(0.05, 0.05) as url:
        cells = run_profile(tmp_path, served(url, 16, {}, [
            {"kind": "concurrency", "users": [5], "requests": 10},
            {"kind": "rate", "rates": [4], "arrival": "constant", "requests": 10},
            {"kind": "capacity", "search": "concurrency", "start": 10, "max": 10, "steps": 0},
            {"kind": "trace", "file": str(TRACE), "speedup": 1}]))
    assert_count_bound(cells["concurrency 5"], 10)
    assert_count_bound(cells["rate 4/s constant"], 10)
    assert_count_bound(cells["capacity (concurrency)"], 20)
    assert_count_bound(cells["trace trace.jsonl x1"], 30)  # the whole trace once: 1.41 s, above the floor
