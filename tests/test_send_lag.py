"""The load generator's send-lag rule judges a late send against the latency it adds to: 10 ms, or 1%
of the cell's TTFT p50 where that is more. A client sharing a CPU server's cores is a few ms late on
multi-second TTFTs (seen with llama-server on 2 cores) without changing a figure; the same lag on a
GPU's 20 ms TTFT is half of it."""

from __future__ import annotations

from pathlib import Path

from bench.measure.cell_summary import load_generator_check
from bench.profile.cells import expand
from bench.profile.loading import parse_profile
from bench.results.records import RequestRecord
from conftest import tiny_profile


def served_cell():  # type: ignore[no-untyped-def]
    profile = tiny_profile(engines=[{"kind": "openai", "base_urls": ["http://127.0.0.1:9"]}],
                           scenarios=[{"kind": "concurrency", "users": [2], "requests": 20}])
    (cell,) = expand(parse_profile(profile, "p.yaml"), Path("p.yaml"))
    return cell


def records(lag_s: float, ttft_s: float, n: int = 20) -> list[RequestRecord]:
    out = []
    for i in range(n):
        submit = 10.0 * i
        out.append(RequestRecord(request_id=i, repetition=0, batch_index=0, batch_size=1, input_tokens=16,
                                 expected_output_tokens=8, submit_time=submit, sent_time=submit + lag_s,
                                 first_token_time=submit + ttft_s, end_time=submit + ttft_s + 0.5,
                                 output_tokens=8))
    return out


def test_a_late_send_is_judged_against_the_ttft_it_adds_to() -> None:
    cell = served_cell()
    fast = load_generator_check(cell, records(lag_s=0.012, ttft_s=0.020), {})
    assert fast is not None and fast["client_bound"]
    assert "send lag p99 12.0 ms above 10 ms" in fast["reason"]
    slow = load_generator_check(cell, records(lag_s=0.012, ttft_s=2.7), {})
    assert slow is not None and not slow["client_bound"], slow["reason"]
    assert abs(slow["send_lag_s"]["limit"] - 0.027) < 1e-9
    late = load_generator_check(cell, records(lag_s=0.040, ttft_s=2.7), {})
    assert late is not None and late["client_bound"] and "above 27 ms" in late["reason"]


def test_failed_requests_do_not_raise_the_limit() -> None:
    cell = served_cell()
    failing = records(lag_s=0.012, ttft_s=2.7)
    for record in failing:
        record.error = "HTTP 500"
    check = load_generator_check(cell, failing, {})
    assert check is not None and check["client_bound"] and check["send_lag_s"]["limit"] == 0.010
