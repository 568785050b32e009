"""SLOs, goodput and the capacity search. The search runs against the calibration endpoint with a
known capacity (`--slots`: at most N completions at once, the rest queue), so the right answer is
known: N users, or N / service time requests per second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ProfileError
from bench.measure.capacity_search import capacity_headline, next_load
from bench.measure.metric_registry import ttft
from bench.measure.slo import evaluate, min_requests
from bench.measure.stats import percentile
from bench.profile.loading import parse_profile
from bench.profile.points import CapacityPoint
from bench.profile.run_settings import SLOSpec
from bench.results.records import RequestRecord, read_records
from bench.serving.calibrate import start_server
from conftest import tiny_profile

TTFT, ITL, TOKENS, SLOTS = 0.02, 0.005, 8, 4
SERVICE_S = TTFT + ITL * (TOKENS - 1)


@pytest.fixture(scope="module")
def endpoint():
    proc, port = start_server(TTFT, ITL, slots=SLOTS)
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()
    proc.wait()


def record(i: int, ttft: float, *, error: str | None = None, load: float | None = None) -> RequestRecord:
    times = [] if error else [ttft + 0.01 * k for k in range(4)]
    return RequestRecord(request_id=i, repetition=0, batch_index=i, batch_size=1, input_tokens=8,
                         expected_output_tokens=4, submit_time=0.0, token_times=times,
                         first_token_time=times[0] if times else None, end_time=times[-1] if times else None,
                         output_tokens=len(times), error=error, load_point=load)


def test_goodput_counts_only_requests_within_every_objective_and_never_failures() -> None:
    records = [record(i, 0.1) for i in range(18)] + [record(18, 0.9), record(19, 0.0, error="timeout")]
    result = evaluate(records, SLOSpec(percentile=50, ttft_s=0.5, max_error_rate=0.1))
    assert result["good_requests"] == 18 and result["requests"] == 20
    assert result["verdict"] == "MET"  # p50 TTFT 0.1 s, errors 5%
    assert result["goodput_rps"] == pytest.approx(18 / 0.93)  # 18 good over the span (submit 0 to last end)
    assert evaluate(records, SLOSpec(percentile=50, ttft_s=0.5))["verdict"] == "MISSED"  # no errors allowed
    assert evaluate(records[:5], SLOSpec(percentile=50, ttft_s=0.5))["verdict"] == "INSUFFICIENT DATA"
    assert min_requests(95) == 200 and min_requests(50) == 20


def test_the_search_doubles_then_bisects_to_the_edge() -> None:
    point = CapacityPoint(kind="capacity", search="rate", start=1, max=256, steps=3)
    history: list[tuple[float, bool]] = []
    while (load := next_load(point, history)) is not None:
        history.append((load, load <= 11))  # a server that meets the SLO up to 11/s
    assert [h[0] for h in history] == [1, 2, 4, 8, 16, 12, 10, 11]
    users = CapacityPoint(kind="capacity", search="concurrency", start=1, max=64, steps=10)
    history = []
    while (load := next_load(users, history)) is not None:
        history.append((load, load <= 5))
    assert max(load for load, ok in history if ok) == 5 and not dict(history)[6]


def test_no_load_meeting_the_slo_is_said_plainly() -> None:
    point = CapacityPoint(kind="capacity", search="rate", start=2, max=8, steps=1,
                          slo=SLOSpec(percentile=50, ttft_s=0.01))
    records = [record(i, 0.1, load=2.0) for i in range(20)]
    assert capacity_headline(point, "w", records)["headline"].startswith("no probed load met SLO TTFT p50 <= 0.01 s")


def test_capacity_needs_an_slo() -> None:
    data = tiny_profile(engines=[{"kind": "openai", "base_urls": ["http://127.0.0.1:1/v1"]}],
                        scenarios=[{"kind": "capacity"}])
    with pytest.raises(ProfileError, match=r"give run\.slo"):
        parse_profile(data, "p.yaml")


def test_capacity_finds_the_known_capacity_of_a_server(endpoint: str, write_profile, tmp_path: Path) -> None:
    slo = {"percentile": 90, "ttft_s": TTFT + 0.015}  # queueing a request costs a whole service time (55 ms)
    data = tiny_profile(
        engines=[{"kind": "openai", "base_urls": [endpoint]}],
        workloads=[{"name": "w", "input_tokens": 16, "output_tokens": TOKENS}],
        scenarios=[{"kind": "capacity", "search": "concurrency", "start": 1, "max": 16, "steps": 4},
                   {"kind": "capacity", "search": "rate", "start": 16, "max": 256, "steps": 3,
                    "arrival": "constant"},
                   {"kind": "rate", "rates": [20], "requests": 40}],
        run={"repetitions": 1, "warmup": 1, "slo": slo},
    )
    out = tmp_path / "result"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(write_profile(data)), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    entries = json.loads((out / "manifest.json").read_text())["cells"]
    users, rate, plain = [json.loads((out / c["dir"] / "cell.json").read_text()) for c in entries]
    assert users["capacity"]["best"]["load"] == SLOTS, users["capacity"]["probes"]
    assert "concurrent users" in users["capacity"]["headline"] and users["capacity"]["headline"] in done.stdout
    # constant arrivals below SLOTS / service time never queue; above it the line grows without end
    assert 0.6 * SLOTS / SERVICE_S <= rate["capacity"]["best"]["load"] <= SLOTS / SERVICE_S, rate["capacity"]
    assert all(p["verdict"] == "MISSED" for p in rate["capacity"]["probes"] if p["load"] > SLOTS / SERVICE_S)
    # every served cell reports goodput under the profile's SLO: its good requests are those whose TTFT met
    # it (counted from the records, as a busy machine may make one of 40 Poisson arrivals late)
    records = [r for r in read_records(out / entries[2]["dir"] / "records.jsonl.gz") if not r.warmup]
    ttfts = sorted(t for t in (ttft(r) for r in records if r.ok) if t is not None)
    good = sum(1 for t in ttfts if t <= slo["ttft_s"])
    assert len(records) == 40 and plain["slo"]["good_requests"] == good > 30 and plain["slo"]["goodput_rps"] > 0
    # 40 requests cannot show a p90 with 10 beyond it: never MET, at any speed
    p90_met = percentile(ttfts, 90) <= slo["ttft_s"]
    assert plain["slo"]["verdict"] == ("INSUFFICIENT DATA" if p90_met else "MISSED")
