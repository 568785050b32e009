"""Pure functions: raw request records -> metrics with units. No I/O, no clocks, no engines.

Every metric is a dict with a `unit`. Distributions (latencies) carry n, mean, stdev, min, max and
the percentiles p50/p90/p95/p99; rates carry `value` (over all measured repetitions) and
`per_repetition` (for statistics across repetitions). Warm-up records never count. Failed requests
are counted and shown; latency and throughput are over successful requests, error rate beside them.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from bench.results.records import RequestRecord

PERCENTILES = (50, 90, 95, 99)

# name -> (unit, whether a higher value is better)
METRIC_INFO: dict[str, tuple[str, bool]] = {
    "ttft": ("s", False),
    "itl": ("s", False),
    "tpot": ("s", False),
    "e2e_latency": ("s", False),
    "output_tok_s": ("tok/s", True),
    "total_tok_s": ("tok/s", True),
    "requests_per_s": ("req/s", True),
    "prefill_tok_s": ("tok/s", True),
    "decode_tok_s": ("tok/s", True),
    "error_rate": ("fraction", False),
}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on pre-sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def distribution(values: Iterable[float], unit: str) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"unit": unit, "n": 0}
    out: dict[str, Any] = {
        "unit": unit,
        "n": len(data),
        "mean": statistics.fmean(data),
        "stdev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "min": data[0],
        "max": data[-1],
    }
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(data, q)
    return out


def rate(total: float, seconds: float) -> float | None:
    return total / seconds if seconds > 0 else None


def ttft(record: RequestRecord) -> float | None:
    return None if record.first_token_time is None else record.first_token_time - record.submit_time


def e2e_latency(record: RequestRecord) -> float | None:
    return None if record.end_time is None else record.end_time - record.submit_time


def inter_token_latencies(record: RequestRecord) -> list[float]:
    """Inter-token latency, one value per token after the first chunk.

    Tokens that arrive one at a time give the gaps between consecutive tokens. A streamed chunk of k
    tokens arriving d seconds after the previous chunk gives each of its k tokens d / k (the per-token
    rate over that gap); the tokens that came with the first token have none (they are in its TTFT).
    So a request's values sum to its last chunk's arrival minus its first (and with one token in the
    first chunk their mean is its TPOT). A chunk's k is exact where the server returned token ids; where it did not,
    a chunk with text counts as one, and when the server's usage says more tokens came than were
    counted, the difference is spread evenly: each chunk after the first carries k * r tokens, r =
    (usage - first chunk's count) / (tokens counted after the first chunk)."""
    chunks, counts = record.chunk_times, record.chunk_tokens
    if chunks and counts and len(chunks) == len(counts):
        later = sum(counts[1:])
        scale = 1.0
        if not record.chunk_tokens_exact and later and record.output_tokens - counts[0] > later:
            scale = (record.output_tokens - counts[0]) / later
        return [(b - a) / (k * scale) for (a, b), k in zip(itertools.pairwise(chunks), counts[1:], strict=True)
                for _ in range(k)]
    times = record.token_times
    return [b - a for a, b in itertools.pairwise(times)]


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first: (end - first token) / (output tokens - 1)."""
    if record.output_tokens < 2 or record.first_token_time is None or record.end_time is None:
        return None
    return (record.end_time - record.first_token_time) / (record.output_tokens - 1)


def _batches(records: Sequence[RequestRecord]) -> dict[tuple[int, int], list[RequestRecord]]:
    groups: dict[tuple[int, int], list[RequestRecord]] = defaultdict(list)
    for record in records:
        groups[(record.repetition, record.batch_index)].append(record)
    return groups


def phase_rates(records: Sequence[RequestRecord]) -> tuple[float | None, float | None]:
    """Prefill tokens/s (prompt tokens over time to first token) and decode tokens/s (tokens after
    the first over the time after the first), each summed over batches so a batch counts once.

    The decode window of a batch opens when its last row has its first token. Rows that schedule on
    their own (vLLM's continuous batching) may decode before that; only the tokens inside the window
    count, so overlapping prefill cannot inflate the decode rate. (Rows of a static batch share their
    times: all their tokens after the first are inside the window.)"""
    prefill_tokens = prefill_time = decode_tokens = decode_time = 0.0
    for batch in _batches(records).values():
        firsts = [r.first_token_time for r in batch if r.first_token_time is not None]
        ends = [r.end_time for r in batch if r.end_time is not None]
        if not firsts or not ends:
            continue
        submit = min(r.submit_time for r in batch)
        opens = max(firsts)
        prefill_tokens += sum(r.input_tokens for r in batch)
        prefill_time += opens - submit
        decode_tokens += sum(sum(1 for t in r.token_times if t > opens) if len(r.token_times) == r.output_tokens
                             else max(r.output_tokens - 1, 0) for r in batch)
        decode_time += max(ends) - opens
    return rate(prefill_tokens, prefill_time), rate(decode_tokens, decode_time)


def span(records: Sequence[RequestRecord]) -> float:
    """Seconds from the first submit to the last end of a repetition."""
    ends = [r.end_time for r in records if r.end_time is not None]
    if not ends:
        return 0.0
    return max(ends) - min(r.submit_time for r in records)


def repetition_rates(records: Sequence[RequestRecord]) -> dict[str, float | None]:
    """Throughputs and the measured span of one repetition's records (failed requests count in the span)."""
    ok = [r for r in records if r.ok]
    seconds = span(records)
    prefill, decode = phase_rates(ok)
    return {
        "output_tok_s": rate(sum(r.output_tokens for r in ok), seconds),
        "total_tok_s": rate(sum(r.output_tokens + r.input_tokens for r in ok), seconds),
        "requests_per_s": rate(len(ok), seconds),
        "prefill_tok_s": prefill,
        "decode_tok_s": decode,
        "duration_s": seconds,
    }


def summarise(records: Iterable[RequestRecord]) -> dict[str, dict[str, Any]]:
    """All metrics of a cell from its records (warm-up excluded)."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    metrics: dict[str, dict[str, Any]] = {
        "ttft": distribution((v for r in ok if (v := ttft(r)) is not None), "s"),
        "itl": distribution((v for r in ok for v in inter_token_latencies(r)), "s"),
        "tpot": distribution((v for r in ok if (v := tpot(r)) is not None), "s"),
        "e2e_latency": distribution((v for r in ok if (v := e2e_latency(r)) is not None), "s"),
    }
    by_repetition: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in measured:
        by_repetition[record.repetition].append(record)
    per_rep = [repetition_rates(by_repetition[k]) for k in sorted(by_repetition)]
    total_seconds = sum(r["duration_s"] or 0.0 for r in per_rep)
    prefill, decode = phase_rates(ok)
    overall = {
        "output_tok_s": rate(sum(r.output_tokens for r in ok), total_seconds),
        "total_tok_s": rate(sum(r.output_tokens + r.input_tokens for r in ok), total_seconds),
        "requests_per_s": rate(len(ok), total_seconds),
        "prefill_tok_s": prefill,
        "decode_tok_s": decode,
    }
    for name, value in overall.items():
        metrics[name] = {
            "unit": METRIC_INFO[name][0],
            "value": value,
            "per_repetition": [r[name] for r in per_rep],
        }
    metrics["duration_s"] = {"unit": "s", "value": total_seconds, "per_repetition": [r["duration_s"] for r in per_rep]}
    metrics["requests"] = {
        "unit": "requests",
        "total": len(measured),
        "ok": len(ok),
        "failed": len(failed),
        "errors": dict(Counter(r.error for r in failed)),
    }
    metrics["error_rate"] = {"unit": "fraction", "value": len(failed) / len(measured) if measured else None}
    metrics["input_tokens"] = {"unit": "tok", "value": sum(r.input_tokens for r in ok)}
    metrics["output_tokens"] = {"unit": "tok", "value": sum(r.output_tokens for r in ok)}
    return metrics


def short_outputs(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Requests whose output length differs from the one asked for (engines already mark them with a
    'short output' error): an error, never a faster result."""
    return [r for r in records if r.output_tokens != r.expected_output_tokens
            and (r.ok or (r.error or "").startswith("short output"))]


def peak_host_bytes(memory: dict[str, Any]) -> int | None:
    """A cell's peak host memory: its own process's exact peak RSS, or the sampled peak of its whole
    process tree when that is higher (engines with worker processes: vLLM's engine core and ranks)."""
    values = [v for v in (memory.get("peak_rss_bytes"), memory.get("peak_tree_rss_bytes_sampled")) if v]
    return max(values) if values else None
