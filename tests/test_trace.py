"""Trace replay against the calibration endpoint: each request at its timestamp (over the speedup)
with its own lengths; a bad trace is bad input (exit 2, file and line named)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile.trace_file import load_trace
from bench.results.records import read_records
from conftest import calibration_endpoint, tiny_profile

TRACE = Path(__file__).parent / "data" / "trace.jsonl"


@pytest.fixture(scope="module")
def endpoint():
    with calibration_endpoint(0.01, 0.002) as url:
        yield url


def trace_profile(url: str, trace: Path) -> dict:
    return tiny_profile(engines=[{"kind": "openai", "base_urls": [url]}],
                        scenarios=[{"kind": "trace", "file": str(trace), "speedup": 2, "requests": 20}],
                        run={"repetitions": 1, "warmup": 1, "slo": {"percentile": 50, "ttft_s": 0.5}})


def test_a_trace_is_replayed_on_its_schedule_with_its_lengths(endpoint: str, write_profile, tmp_path: Path) -> None:
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(trace_profile(endpoint, TRACE))),
                           "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = json.loads((out / "manifest.json").read_text())["cells"]
    summary = json.loads((out / entry["dir"] / "cell.json").read_text())
    assert summary["status"] == "COMPLETED" and "trace_sha256" in summary["config"]["scenario"]
    records = sorted((r for r in read_records(out / entry["dir"] / "records.jsonl.gz") if not r.warmup),
                     key=lambda r: r.request_id)
    trace = load_trace(TRACE)[:20]
    # The 20 entries last 0.44 s at speedup 2: the nightly 1 s floor replays them, pass after pass, each
    # pass one mean gap after the last, every entry with its own lengths.
    passes = len(records) // len(trace)
    assert passes >= 2 and len(records) % len(trace) in range(len(trace))
    expected = [(e.input_tokens, e.output_tokens) for e in trace]
    assert [(r.input_tokens, r.output_tokens) for r in records] == (expected * (passes + 1))[:len(records)]
    scheduled = [r.submit_time - records[0].submit_time for r in records]
    assert scheduled[:20] == pytest.approx([e.timestamp / 2 for e in trace], abs=1e-6)
    period = scheduled[20] - scheduled[0]
    assert scheduled[20:40] == pytest.approx([period + e.timestamp / 2 for e in trace][:len(scheduled[20:40])],
                                             abs=1e-6)
    assert summary["metrics"]["duration_s"]["value"] >= 1.0
    assert summary["slo"]["good_requests"] == len(records) and summary["load_generator"]["scheduled_rate"] > 0


def test_a_bad_trace_names_its_file_and_line(write_profile, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_tokens": 4, "output_tokens": 2}\n{"timestamp": 1, "input_tokens": 4}\n')
    done = subprocess.run([sys.executable, "-m", "bench", "validate",
                           str(write_profile(trace_profile("http://127.0.0.1:1/v1", bad)))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{bad}: line 2: need timestamp, input_tokens, output_tokens" in done.stdout + done.stderr


def test_chat_completions_are_measured_on_the_chat_route(endpoint: str, write_profile, tmp_path: Path) -> None:
    data = tiny_profile(engines=[{"kind": "openai", "base_urls": [endpoint], "api": "chat"}],
                        scenarios=[{"kind": "concurrency", "users": [2], "requests": 6}],
                        run={"repetitions": 1, "warmup": 0})
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(data)), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = json.loads((out / "manifest.json").read_text())["cells"]
    records = list(read_records(out / entry["dir"] / "records.jsonl.gz"))
    # the calibration endpoint answers 400 to a body without 'messages' on the chat route (and without
    # 'prompt' on the completions route), so only a real chat request streams here
    assert len(records) >= 10  # the profile's 6, raised to the 10 samples p90 needs
    assert all(r.ok and r.output_tokens == r.expected_output_tokens for r in records)


def test_a_failing_server_stops_the_load_early_and_every_failure_is_counted(endpoint: str, write_profile,
                                                                            tmp_path: Path) -> None:
    # every request times out (1 ms against a 10 ms TTFT): more than half failed, so sending stops
    data = tiny_profile(engines=[{"kind": "openai", "base_urls": [endpoint], "request_timeout_s": 0.001}],
                        scenarios=[{"kind": "rate", "rates": [200], "requests": 400}],
                        run={"repetitions": 1, "warmup": 0})
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(data)), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    (entry,) = json.loads((out / "manifest.json").read_text())["cells"]
    records = list(read_records(out / entry["dir"] / "records.jsonl.gz"))
    assert 10 <= len(records) < 400 and not any(r.ok for r in records)  # stopped, and nothing dropped
