"""Served cells (engine openai) against the calibration endpoint, a real server process on loopback:
closed and open loop, timing against the configured TTFT and ITL, exact lengths, the load
generator's self-check. (A real vLLM server is not installed on these machines yet.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ProfileError
from bench.profile.loading import parse_profile
from bench.results.records import read_records
from bench.scenarios.served import arrival_times
from bench.serving.calibrate import start_server
from conftest import calibration_endpoint, tiny_profile

TTFT, ITL = 0.02, 0.005


@pytest.fixture(scope="module")
def endpoint():
    with calibration_endpoint(TTFT, ITL) as url:
        yield url


def served_profile(url: str) -> dict:
    return tiny_profile(
        engines=[{"kind": "openai", "base_urls": [url, url]}],
        workloads=[{"name": "w", "input_tokens": 16, "output_tokens": 8}],
        scenarios=[{"kind": "concurrency", "users": [1, 4], "requests": 12},
                   {"kind": "rate", "rates": [40], "requests": 24}],
        run={"repetitions": 2, "warmup": 1},
    )


def test_served_cells_measure_the_endpoint(endpoint: str, write_profile, tmp_path: Path) -> None:
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(served_profile(endpoint))),
                           "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["label"].split(" | ")[-1] for c in manifest["cells"]] == [
        "concurrency 1", "concurrency 4", "rate 40/s poisson"]
    for entry in manifest["cells"]:
        summary = json.loads((out / entry["dir"] / "cell.json").read_text())
        assert summary["status"] == "COMPLETED", summary["reason"]
        metrics = summary["metrics"]
        assert TTFT <= metrics["ttft"]["p50"] < TTFT + 0.015
        assert abs(metrics["itl"]["p50"] - ITL) < 0.002
        assert summary["load_generator"]["send_lag_s"]["p50"] >= 0
        records = [r for r in read_records(out / entry["dir"] / "records.jsonl.gz") if not r.warmup]
        assert all(r.output_tokens == 8 and r.usage_output_tokens == 8 for r in records)
        assert len({r.endpoint for r in records}) == 1  # both URLs name the same server
        if "rate" in entry["label"]:
            # latency counts from the scheduled send; the actual send is never before it
            assert all(r.sent_time >= r.submit_time - 1e-6 for r in records)
            assert summary["load_generator"]["scheduled_rate"] > 0


def test_a_dead_endpoint_fails_the_cell_with_the_reason(write_profile, tmp_path: Path) -> None:
    data = served_profile("http://127.0.0.1:9/v1")  # the discard port: nothing listens there
    data["scenarios"] = [{"kind": "concurrency", "users": [1], "requests": 2}]
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(data)), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    (entry,) = json.loads((out / "manifest.json").read_text())["cells"]
    assert entry["status"] == "FAILED" and "Connection refused" in entry["reason"]


def test_arrivals_are_seeded_and_at_the_rate() -> None:
    times = arrival_times(4000, 50.0, "poisson", 1.0, seed=1)
    assert times == arrival_times(4000, 50.0, "poisson", 1.0, seed=1)
    assert abs(len(times) / times[-1] - 50.0) < 3.0
    assert arrival_times(3, 10.0, "constant", 1.0, 0) == [0.0, 0.1, 0.2]


def test_served_scenarios_need_a_served_engine() -> None:
    data = tiny_profile(scenarios=[{"kind": "rate", "rates": [1]}])
    with pytest.raises(ProfileError, match="needs an engine of kind openai"):
        parse_profile(data, "p.yaml")
    data = tiny_profile(engines=[{"kind": "openai", "base_urls": ["https://x/v1"]}])
    with pytest.raises(ProfileError, match="TLS is not supported"):
        parse_profile(data, "p.yaml")


def test_a_chunk_counts_its_tokens_even_when_its_text_is_held_back() -> None:
    from bench.serving.client import Connection, StreamResult

    result = StreamResult(sent=0.0)
    events = [b'data: {"choices":[{"text":"a","finish_reason":null}]}',
              b'data: {"choices":[{"text":"","finish_reason":null}]}',  # an incomplete character held back
              b'data: {"choices":[{"text":"","token_ids":[5,6],"finish_reason":null}]}',
              b'data: {"choices":[{"text":"","finish_reason":"length"}]}',  # a closing chunk: no token
              b'data: {"choices":[],"usage":{"completion_tokens":4}}']
    for now, event in enumerate(events, start=1):
        assert not Connection._event(event, float(now), result)
    assert Connection._event(b"data: [DONE]", 9.0, result)
    assert result.token_times == [1.0, 2.0, 3.0, 3.0]
    assert result.first_token == 1.0 and result.usage_completion_tokens == 4


def test_several_endpoints_are_reported_each_and_in_total(write_profile, tmp_path: Path) -> None:
    slow_ttft = 0.06
    fast, slow = start_server(TTFT, ITL), start_server(slow_ttft, ITL)
    try:
        urls = [f"http://127.0.0.1:{port}/v1" for _, port in (fast, slow)]
        data = served_profile(urls[0])
        data["engines"] = [{"kind": "openai", "base_urls": urls}]
        data["scenarios"] = [{"kind": "concurrency", "users": [2], "requests": 16}]
        data["run"] = {"repetitions": 1, "warmup": 0}
        out = tmp_path / "result"
        done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(data)), "--output", str(out)],
                              capture_output=True, text=True, timeout=300)
    finally:
        for proc, _ in (fast, slow):
            proc.kill()
            proc.wait()
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = json.loads((out / "manifest.json").read_text())["cells"]
    summary = json.loads((out / entry["dir"] / "cell.json").read_text())
    per = summary["endpoints"]
    fast_key, slow_key = (f"127.0.0.1:{port}" for _, port in (fast, slow))
    assert set(per) == {fast_key, slow_key}
    total = summary["metrics"]["requests"]["total"]
    assert per[fast_key]["requests"] + per[slow_key]["requests"] == total >= 16  # the count is a minimum
    assert summary["metrics"]["duration_s"]["value"] >= 1.0  # and the nightly time floor held
    assert TTFT <= per[fast_key]["ttft"]["p50"] < slow_ttft <= per[slow_key]["ttft"]["p50"]
    assert per[fast_key]["failed"] == per[slow_key]["failed"] == 0


def test_the_chat_routes_opening_role_chunk_is_no_token() -> None:
    """vLLM's chat stream opens with {"delta": {"role": "assistant", "content": ""}}: not the first token."""
    from bench.serving.client import Connection, StreamResult

    result = StreamResult(sent=0.0)
    events = [b'data: {"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}],'
              b'"prompt_token_ids":[1,2,3]}',
              b'data: {"choices":[{"delta":{"content":" a"},"token_ids":[7],"finish_reason":null}]}',
              b'data: {"choices":[{"delta":{"content":" b"},"token_ids":[8],"finish_reason":"length"}]}']
    for now, event in enumerate(events, start=1):
        assert not Connection._event(event, float(now), result)
    assert result.first_token == 2.0 and result.exact_token_ids == [7, 8] and result.prompt_token_ids == [1, 2, 3]
