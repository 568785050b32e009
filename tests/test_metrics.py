"""Metrics from raw records, checked against numbers computed by hand."""

from __future__ import annotations

import pytest

from bench.measure.metrics import headline_metrics, short_outputs
from bench.measure.stats import distribution, percentile
from bench.results.records import RequestRecord


def rec(rid, rep, batch, submit, times, n_in=10, expected=None, error=None, batch_size=1):
    return RequestRecord(
        request_id=rid, repetition=rep, batch_index=batch, batch_size=batch_size, input_tokens=n_in,
        expected_output_tokens=expected if expected is not None else len(times), submit_time=submit,
        first_token_time=times[0] if times else None, end_time=times[-1] if times else None,
        token_times=list(times), output_tokens=len(times), finish_reason="length", error=error,
    )


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0


def test_distribution_fields() -> None:
    d = distribution([3.0, 1.0, 2.0], "s")
    assert d["n"] == 3 and d["mean"] == 2.0 and d["stdev"] == 1.0 and d["p50"] == 2.0
    assert d["min"] == 1.0 and d["max"] == 3.0 and d["unit"] == "s"
    assert distribution([], "s") == {"unit": "s", "n": 0}


def test_single_stream_metrics_by_hand() -> None:
    records = [
        rec(0, -1, 0, 0.0, [5.0, 6.0]),                    # warm-up: ignored everywhere
        rec(0, 0, 0, 10.0, [10.5, 10.7, 10.9]),            # ttft 0.5, itl 0.2 0.2, e2e 0.9
        rec(1, 0, 1, 11.0, [11.3, 11.4, 11.5, 11.6]),      # ttft 0.3, itl 0.1 x3, e2e 0.6
        rec(0, 1, 0, 20.0, [20.4, 20.6]),                  # ttft 0.4, itl 0.2, e2e 0.6
    ]
    m = headline_metrics(records)
    assert m["ttft"]["n"] == 3 and m["ttft"]["mean"] == pytest.approx((0.5 + 0.3 + 0.4) / 3)
    assert m["ttft"]["p50"] == pytest.approx(0.4)
    assert m["itl"]["n"] == 6 and m["itl"]["mean"] == pytest.approx((0.2 * 3 + 0.1 * 3) / 6)
    assert m["e2e_latency"]["max"] == pytest.approx(0.9)
    # tpot: (end - first) / (n - 1): 0.4/2, 0.3/3, 0.2/1
    assert sorted(m["tpot"]["mean"] for _ in [0]) == [pytest.approx((0.2 + 0.1 + 0.2) / 3)]
    # repetition 0 spans 10.0 .. 11.6 = 1.6 s with 7 tokens; repetition 1 spans 0.6 s with 2 tokens
    assert m["duration_s"]["per_repetition"] == [pytest.approx(1.6), pytest.approx(0.6)]
    assert m["output_tok_s"]["per_repetition"] == [pytest.approx(7 / 1.6), pytest.approx(2 / 0.6)]
    assert m["output_tok_s"]["value"] == pytest.approx(9 / 2.2)
    assert m["total_tok_s"]["value"] == pytest.approx((9 + 30) / 2.2)
    assert m["requests_per_s"]["value"] == pytest.approx(3 / 2.2)
    # prefill: 30 prompt tokens over 0.5 + 0.3 + 0.4 s; decode: (2 + 3 + 1) tokens over 0.4 + 0.3 + 0.2 s
    assert m["prefill_tok_s"]["value"] == pytest.approx(30 / 1.2)
    assert m["decode_tok_s"]["value"] == pytest.approx(6 / 0.9)
    assert m["requests"] == {"unit": "requests", "total": 3, "ok": 3, "failed": 0, "errors": {}}
    assert m["error_rate"]["value"] == 0.0


def test_batch_counts_once_for_phase_rates() -> None:
    # two rows of one batch share step times; prompt tokens 10 + 20 over one prefill of 0.5 s
    records = [rec(0, 0, 0, 0.0, [0.5, 0.6, 0.7], n_in=10, batch_size=2),
               rec(1, 0, 0, 0.0, [0.5, 0.6, 0.7], n_in=20, batch_size=2)]
    m = headline_metrics(records)
    assert m["prefill_tok_s"]["value"] == pytest.approx(30 / 0.5)
    assert m["decode_tok_s"]["value"] == pytest.approx(4 / 0.2)
    assert m["output_tok_s"]["value"] == pytest.approx(6 / 0.7)


def test_failures_are_counted_not_dropped() -> None:
    records = [rec(0, 0, 0, 0.0, [0.1, 0.2]), rec(1, 0, 1, 0.2, [], error="boom"),
               rec(2, 0, 2, 0.3, [0.4], error="boom")]
    m = headline_metrics(records)
    assert m["requests"]["failed"] == 2 and m["requests"]["errors"] == {"boom": 2}
    assert m["error_rate"]["value"] == pytest.approx(2 / 3)
    assert m["ttft"]["n"] == 1  # latency over successful requests only
    assert m["output_tok_s"]["value"] == pytest.approx(2 / 0.4)  # the failed ones still take wall time


def test_short_outputs_are_found() -> None:
    records = [rec(0, 0, 0, 0.0, [0.1, 0.2], expected=2), rec(1, 0, 1, 0.0, [0.1], expected=4)]
    assert [r.request_id for r in short_outputs(records)] == [1]


def test_decode_rate_counts_only_tokens_inside_the_window_when_rows_overlap() -> None:
    from bench.measure.metrics import phase_rates

    def row(rid: int, times: list[float]) -> RequestRecord:
        return RequestRecord(request_id=rid, repetition=0, batch_index=0, batch_size=2, input_tokens=10,
                             expected_output_tokens=len(times), submit_time=0.9, first_token_time=times[0],
                             end_time=times[-1], token_times=times, output_tokens=len(times))

    # continuous batching: row 0 decodes while row 1 is still in prefill
    _, decode = phase_rates([row(0, [1.0, 1.1, 1.2, 1.3]), row(1, [1.25, 1.35])])
    assert decode == pytest.approx(2 / 0.1)  # tokens at 1.3 and 1.35, after the last first token at 1.25
    _, static = phase_rates([row(0, [1.0, 1.1, 1.2]), row(1, [1.0, 1.1, 1.2])])
    assert static == pytest.approx(4 / 0.2)  # a static batch: every token after the first
