"""One definition per metric: for every metric of the registry, the samples `compare` and `history`
test aggregate to exactly the headline the cell summary stores, on records with continuous batching
(rows whose first tokens come at different times, as vLLM's do) and on overlapping served streams,
where compare's old formula and the headline disagreed. And the two decode rates, by hand."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.measure.metric_registry import METRICS, RateSample, split_metric
from bench.measure.metrics import headline_metrics
from bench.results.records import RequestRecord


def row(rid: int, rep: int, batch: int, submit: float, times: list[float], size: int = 1, n_in: int = 10,
        error: str | None = None) -> RequestRecord:
    return RequestRecord(request_id=rid, repetition=rep, batch_index=batch, batch_size=size, input_tokens=n_in,
                         expected_output_tokens=len(times), submit_time=submit,
                         first_token_time=times[0] if times else None, end_time=times[-1] if times else None,
                         token_times=list(times), output_tokens=len(times), finish_reason="length", error=error)


def steps(first: float, n: int, step: float) -> list[float]:
    return [first + step * k for k in range(n)]


def vllm_like() -> list[RequestRecord]:
    """In-process continuous batching: each batch's rows are scheduled in two waves, the second wave
    prefilling while the first decodes; rows end at different times; one failed row; a warm-up batch."""
    records = [row(100 + r, -1, 0, 0.0, steps(0.05 + 0.04 * (r // 2), 6, 0.02), size=4) for r in range(4)]
    clock, rid = 1.0, 0
    for rep in (0, 1):
        for batch in range(3):
            step = 0.02 * (1 + 0.1 * ((rep + batch) % 3))
            for r in range(4):
                first = clock + 0.03 + step * 2 * (r // 2) + 0.001 * r
                error = "boom" if (rep, batch, r) == (1, 2, 3) else None
                records.append(row(rid, rep, batch, clock, [] if error else steps(first, 8 + r, step), size=4,
                                   n_in=20 + r, error=error))
                rid += 1
            clock = max(r.end_time or 0 for r in records) + 0.005
    return records


def served_like() -> list[RequestRecord]:
    """Three closed-loop users' streams that overlap in time; every request is its own batch."""
    records, rid = [], 0
    for rep in (0, 1):
        for user in range(3):
            start = 10.0 * (rep + 1) + 0.013 * user
            for _ in range(4):
                times = steps(start + 0.05 + 0.002 * (rid % 4), 10, 0.03 + 0.001 * (rid % 3))
                records.append(row(rid, rep, rid, start, times))
                rid += 1
                start = times[-1] + 0.001
    return records


@pytest.mark.parametrize("make", [vllm_like, served_like])
def test_every_metrics_samples_aggregate_to_the_headline(make) -> None:
    records = make()
    headline = headline_metrics(records)
    repetitions = sorted({r.repetition for r in records if not r.warmup})
    for name, metric in METRICS.items():
        samples = metric.samples(records)  # what compare and history test
        stored = headline[name]
        assert samples, name
        if metric.kind == "latency":
            for stat in ("p50", "p90", "p95", "p99", "mean"):
                assert metric.figure(samples, stat) == pytest.approx(stored[stat], rel=1e-12), (name, stat)
            assert len(metric.test_values(samples)) == stored["n"]
        elif metric.kind == "rate":
            assert all(isinstance(s, RateSample) for s in samples)
            assert metric.figure(samples) == pytest.approx(stored["value"], rel=1e-12), name
            for k, value in zip(repetitions, stored["per_repetition"], strict=True):
                assert metric.figure([s for s in samples if s.repetition == k]) == pytest.approx(value, rel=1e-12)
        else:
            assert metric.figure(samples) == pytest.approx(stored["value"], rel=1e-12), name
        assert metric.figure(samples) == metric.stored(stored)  # the figure compare shows is the table's


def test_the_rates_pieces_tile_the_measured_time() -> None:
    records = vllm_like()
    headline = headline_metrics(records)
    pieces = METRICS["output_tok_s"].samples(records)
    assert sum(p.seconds for p in pieces) == pytest.approx(headline["duration_s"]["value"], rel=1e-12)
    assert sum(p.amount for p in pieces) == headline["output_tokens"]["value"]
    assert len(pieces) == 6  # one per batch: compare has many samples per cell, not one per repetition


def test_compares_old_decode_formula_disagreed_with_the_headline_under_continuous_batching() -> None:
    """compare once took (output - 1) tokens over (last end - last first token) per batch; the rows of
    the first wave decode before that window opens, so under continuous batching it read high."""
    records = [r for r in vllm_like() if not r.warmup and r.ok]
    batches: dict[tuple[int, int], list[RequestRecord]] = {}
    for r in records:
        batches.setdefault((r.repetition, r.batch_index), []).append(r)
    old = [sum(r.output_tokens - 1 for r in b) / (max(r.end_time for r in b) - max(r.first_token_time for r in b))
           for b in batches.values()]
    new = METRICS["decode_tok_s"].test_values(METRICS["decode_tok_s"].samples(records))
    assert len(old) == len(new) == 6
    assert all(o > n * 1.1 for o, n in zip(old, new, strict=True))  # each batch: 10% and more too high
    assert METRICS["decode_tok_s"].figure(METRICS["decode_tok_s"].samples(records)) == pytest.approx(
        headline_metrics(records)["decode_tok_s"]["value"])


def test_the_two_decode_rates_by_hand() -> None:
    # One in-process batch of two rows: row 0 first at 1.0, row 1 (in prefill meanwhile) first at 1.2;
    # the window opens at 1.2: row 0's tokens at 1.3 1.4, row 1's at 1.3 1.4 1.5 count, over 0.3 s.
    batch = [row(0, 0, 0, 0.9, [1.0, 1.1, 1.2, 1.3, 1.4], size=2), row(1, 0, 0, 0.9, [1.2, 1.3, 1.4, 1.5], size=2)]
    head = headline_metrics(batch)
    assert head["decode_tok_s"]["value"] == pytest.approx(5 / 0.3)
    # one stream's: row 0 has 4 tokens after its first in 0.4 s, row 1 3 in 0.3 s
    assert head["stream_decode_tok_s"]["value"] == pytest.approx(7 / 0.7)
    # Two served streams (a batch each) decoding 10 tok/s over overlapping windows: together 20 tok/s
    # while both decode, 10 while one does. Windows [1.0, 2.0] and [1.5, 2.5]: union 1.5 s, 20 tokens.
    streams = [row(0, 0, 0, 0.9, steps(1.0, 11, 0.1)), row(1, 0, 1, 1.4, steps(1.5, 11, 0.1))]
    head = headline_metrics(streams)
    assert head["decode_tok_s"]["value"] == pytest.approx(20 / 1.5)
    assert head["stream_decode_tok_s"]["value"] == pytest.approx(10.0)
    assert head["output_tok_s"]["value"] == pytest.approx(22 / 1.6)


def test_served_decode_rate_counts_every_stream_at_once() -> None:
    """The issue's example: many streams at one stream's speed; decode_tok_s is their sum, not one's."""
    streams = [row(i, 0, i, 0.0, steps(0.1 + 0.001 * i, 101, 0.01)) for i in range(64)]
    head = headline_metrics(streams)
    assert head["stream_decode_tok_s"]["value"] == pytest.approx(100.0)
    assert head["decode_tok_s"]["value"] == pytest.approx(64 * 100 / (1.0 + 0.063))
    assert head["decode_tok_s"]["value"] < head["output_tok_s"]["value"] * 64  # sanity: same order as output


def test_a_static_batch_is_unchanged() -> None:
    batch = [row(0, 0, 0, 0.0, [0.5, 0.6, 0.7], size=2, n_in=10), row(1, 0, 0, 0.0, [0.5, 0.6, 0.7], size=2, n_in=20)]
    head = headline_metrics(batch)
    assert head["decode_tok_s"]["value"] == pytest.approx(4 / 0.2)
    assert head["stream_decode_tok_s"]["value"] == pytest.approx(2 / 0.2)
    assert head["prefill_tok_s"]["value"] == pytest.approx(30 / 0.5)


def test_stored_token_times_rounding_does_not_count_the_first_token() -> None:
    """Token times are stored rounded to 0.1 us, first_token_time is not: a first token rounded up
    must not count as decoded after itself."""
    record = row(0, 0, 0, 0.0, [round(0.12345666, 7), 0.2, 0.3])  # stored 0.1234567: rounded up
    record.first_token_time = 0.12345666
    assert headline_metrics([record])["decode_tok_s"]["value"] == pytest.approx(2 / (0.3 - 0.12345666))


def test_metric_names_and_units() -> None:
    assert split_metric("stream_decode_tok_s") == ("stream_decode_tok_s", None)
    assert split_metric("e2e_latency_mean") == ("e2e_latency", "mean")
    for bad in ("speed", "decode_tok_s_p99"):
        with pytest.raises(BenchError):
            split_metric(bad)
    assert {m.name for m in METRICS.values() if m.kind == "latency"} == {"ttft", "itl", "tpot", "e2e_latency"}
    assert all(m.display_unit == "ms" and m.scale == 1000 for m in METRICS.values() if m.unit == "s")
    assert not METRICS["ttft"].higher_is_better and METRICS["decode_tok_s"].higher_is_better
    assert all(m.formula for m in METRICS.values())  # each says its formula
