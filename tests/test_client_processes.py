"""The load generator over several client processes (run.client_processes) and the user-settable
error-rate stop rule (run.stop_error_rate, run.stop_min_requests), against the calibration endpoint:
a real server process on loopback with a known TTFT and ITL (and, with --errors, known failures)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.errors import ProfileError
from bench.profile.cells import expand
from bench.profile.loading import parse_profile
from bench.results.records import read_records
from bench.serving.calibrate import start_server
from bench.serving.workers import choose_client_processes
from conftest import calibration_endpoint, tiny_profile

TTFT, ITL = 0.02, 0.005


@pytest.fixture(scope="module")
def endpoint():
    with calibration_endpoint(TTFT, ITL) as url:
        yield url


def served(url: str, scenarios: list[dict[str, Any]], **run: Any) -> dict[str, Any]:
    return tiny_profile(
        engines=[{"kind": "openai", "base_urls": [url]}],
        workloads=[{"name": "w", "input_tokens": 16, "output_tokens": 8}],
        scenarios=scenarios,
        run={"repetitions": 1, "warmup": 1, "cell_timeout_s": 120, "telemetry_interval_s": 0.1, **run},
    )


def run_profile(path: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--output", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)


def cells(out: Path) -> list[tuple[dict[str, Any], list[Any]]]:
    found = []
    for entry in json.loads((out / "manifest.json").read_text())["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        records = [r for r in read_records(out / entry["dir"] / "records.jsonl.gz") if not r.warmup]
        found.append((summary, records))
    return found


def test_the_choice_of_processes() -> None:
    ceiling = {"users": 64, "requests_per_s": 200.0, "tokens_per_s": 6000.0}
    assert choose_client_processes(3, {"users": 1}, None, 2) == (3, "run.client_processes: 3")
    count, why = choose_client_processes("auto", {"users": 500}, None, 16)
    assert count == 1 and "no load-generator calibration" in why
    count, why = choose_client_processes("auto", {"users": 150}, ceiling, 16)
    assert count == 3 and "users" in why
    # the streamed tokens, not the requests, are the binding unit here: 300 * 40 / 6000 -> 2
    count, why = choose_client_processes("auto", {"requests_per_s": 300, "tokens_per_s": 12000}, ceiling, 16)
    assert count == 2 and "tokens_per_s" in why
    count, why = choose_client_processes("auto", {"users": 10_000}, ceiling, 4)
    assert count == 3 and "capped at 3 (cores - 1)" in why
    assert choose_client_processes("auto", {"users": 10}, ceiling, 1)[0] == 1


def test_run_settings_are_checked_and_stay_out_of_the_cell_id(tmp_path: Path) -> None:
    base = served("http://127.0.0.1:1/v1", [{"kind": "rate", "rates": [5]}])
    for bad in ({"stop_error_rate": 0}, {"stop_error_rate": 1.5}, {"stop_min_requests": 0},
                {"client_processes": 0}, {"client_processes": "many"}):
        with pytest.raises(ProfileError):
            parse_profile({**base, "run": {**base["run"], **bad}}, "p.yaml")
    changed = {**base, "run": {**base["run"], "stop_error_rate": 0.2, "stop_min_requests": 3,
                               "client_processes": "auto"}}
    ids = [[c.id for c in expand(parse_profile(p, "p.yaml"), tmp_path / "p.yaml")] for p in (base, changed)]
    assert ids[0] == ids[1]


def test_two_client_processes_measure_like_one(endpoint: str, write_profile, tmp_path: Path) -> None:
    data = served(endpoint, [{"kind": "rate", "rates": [40], "requests": 30},
                             {"kind": "concurrency", "users": [4], "requests": 20}],
                  repetitions=2, client_processes=2)
    out = tmp_path / "result"
    done = run_profile(write_profile(data), out)
    assert done.returncode == 0, done.stdout + done.stderr
    (rate, rate_records), (closed, closed_records) = cells(out)
    for summary, records, count in ((rate, rate_records, 60), (closed, closed_records, 40)):
        assert summary["status"] == "COMPLETED", summary["reason"]
        assert len(records) == summary["metrics"]["requests"]["total"] >= count  # the counts are minimums
        assert summary["metrics"]["duration_s"]["value"] >= 1.0  # and the nightly floor held
        assert TTFT <= summary["metrics"]["ttft"]["p50"] < TTFT + 0.015
        assert abs(summary["metrics"]["itl"]["p50"] - ITL) < 0.002
        assert all(r.output_tokens == 8 and r.ok for r in records)
        assert {r.client_process for r in records} == {0, 1}
        check = summary["load_generator"]
        assert check["client_processes"] == 2 and check["client_processes_reason"] == "run.client_processes: 2"
        assert check["client_cpu_pct_per_process"] is not None
        assert summary["stopped"] is None
    assert all(r.sent_time >= r.submit_time - 1e-6 for r in rate_records)  # one clock in every process
    assert rate["load_generator"]["scheduled_rate"] > 0
    # each worker's pid, from the cell process's own account (result.json): two fresh workers per repetition
    rate_dir = out / json.loads((out / "manifest.json").read_text())["cells"][0]["dir"]
    pids = json.loads((rate_dir / "result.json").read_text())["load_generator"]["client_pids"]
    assert len(set(pids)) == 4 and os.getpid() not in pids


def test_auto_uses_the_calibration_and_says_why(endpoint: str, write_profile, tmp_path: Path) -> None:
    from bench.run.environment import collect_environment

    cache = tmp_path / "cache"
    (cache / "lokaal-bench").mkdir(parents=True)
    ceiling = {"users": 1, "requests_per_s": 5.0, "tokens_per_s": 30.0}  # a tiny ceiling: the load exceeds it
    (cache / "lokaal-bench" / "loadgen-calibration.json").write_text(json.dumps(
        {"ceiling": ceiling, "levels": [], "machine_id": collect_environment()["machine_id"]}))
    data = served(endpoint, [{"kind": "rate", "rates": [40], "arrival": "constant", "requests": 12}],
                  client_processes="auto")
    out = tmp_path / "result"
    done = run_profile(write_profile(data), out, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stdout + done.stderr
    ((summary, records),) = cells(out)
    check = summary["load_generator"]
    cores = len(os.sched_getaffinity(0))
    # 40 requests/s of 8 tokens: 320 tokens/s against 30 -> 11 processes, at most cores - 1
    assert check["client_processes"] == min(11, max(1, cores - 1))
    assert check["client_processes_reason"].startswith("auto: tokens_per_s 320 against a single-process ceiling of 30 "
                                                       "needs 11")
    assert len(records) == 41  # a constant 40/s schedule, stretched from 12 sends to the nightly 1 s floor


def test_the_error_rate_stop_rule_is_a_setting_and_is_reported(write_profile, tmp_path: Path) -> None:
    proc, port = start_server(TTFT, ITL, errors=1.0)  # every completion answers HTTP 500
    try:
        url = f"http://127.0.0.1:{port}/v1"
        out1, out2 = tmp_path / "one", tmp_path / "two"
        data = served(url, [{"kind": "concurrency", "users": [2], "requests": 40}], warmup=0,
                      stop_error_rate=0.5, stop_min_requests=5)
        one = run_profile(write_profile(data, "one.yaml"), out1)
        data = served(url, [{"kind": "rate", "rates": [100], "requests": 60}], warmup=0,
                      stop_error_rate=0.9, stop_min_requests=4, client_processes=2)
        two = run_profile(write_profile(data, "two.yaml"), out2)
    finally:
        proc.kill()
        proc.wait()
    assert one.returncode == 1 and two.returncode == 1  # nothing completed: FAILED cells
    ((summary, records),) = cells(out1)
    assert summary["status"] == "FAILED" and len(records) in (5, 6)
    (stopped,) = summary["stopped"]
    assert re.fullmatch(r"repetition 1/1: error rate 1\.00 > 0\.5 after 5 requests; 3[45] of 40 requests not sent",
                        stopped), stopped
    assert summary["metrics"]["requests"]["failed"] == len(records)
    # two processes: each judges its own records, so each stops after 4 of its own
    ((summary, records),) = cells(out2)
    (stopped,) = summary["stopped"]
    assert "error rate 1.00 > 0.9 after 4 requests (client process" in stopped and "2 of 2 stopped" in stopped
    assert 8 <= len(records) < 20 and {r.client_process for r in records} == {0, 1}
