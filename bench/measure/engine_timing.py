"""An engine's own per-request timings against the wall clock (in-process vLLM).

vLLM stamps each request in its engine core (queued, scheduled, first token, last token); the cell
stamps the same tokens as they reach it. The engine's stamp must come first and not by much: the
gap is what the engine's output path (IPC, detokenisation, our step loop) adds. A gap beyond the
engine's stated tolerance, or a negative one, is counted, so a reader can tell whether the
wall-clock latencies can be trusted as the engine's. Pure: reads records, nothing else.
"""

from __future__ import annotations

from typing import Any

from bench.measure.stats import percentile
from bench.results.records import RequestRecord

DEFAULT_TOLERANCE_S = 0.05
# A stamp may lead ours by a hair without meaning anything: clock reads on different cores.
CLOCK_SLACK_S = 0.001


def _spread(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99), "max": ordered[-1]} if ordered else {
        "p50": None, "p99": None, "max": None}


def cross_check(records: list[RequestRecord], tolerance_s: float | None) -> dict[str, Any] | None:
    """None when no record carries engine timings (every engine but in-process vLLM)."""
    timed = [r for r in records if not r.warmup and r.engine_timing]
    if not timed:
        return None
    tolerance = DEFAULT_TOLERANCE_S if tolerance_s is None else tolerance_s
    first_gaps, last_gaps, disagreeing = [], [], []
    for record in timed:
        timing = record.engine_timing or {}
        gaps = []
        if timing.get("first_token") is not None and record.first_token_time is not None:
            gaps.append(record.first_token_time - timing["first_token"])
            first_gaps.append(gaps[-1])
        if timing.get("last_token") is not None and record.end_time is not None:
            gaps.append(record.end_time - timing["last_token"])
            last_gaps.append(gaps[-1])
        if any(g > tolerance or g < -CLOCK_SLACK_S for g in gaps):
            disagreeing.append(record.request_id)

    def durations(key: str) -> dict[str, float | None]:
        return _spread([float(r.engine_timing[key]) for r in timed if (r.engine_timing or {}).get(key) is not None])

    return {
        "requests": len(timed),
        "same_clock": all((r.engine_timing or {}).get("same_clock") for r in timed),
        "tolerance_s": tolerance,
        "first_token_gap_s": _spread(first_gaps),
        "last_token_gap_s": _spread(last_gaps),
        "disagreeing": len(disagreeing),
        "disagreeing_examples": disagreeing[:5],
        "engine_queue_s": durations("queue_s"),
        "engine_prefill_s": durations("prefill_s"),
        "engine_decode_s": durations("decode_s"),
    }


def engine_stats(records: list[RequestRecord]) -> dict[str, Any] | None:
    """Counters the engine reported per request: prefix-cache hits (checked by validity) and preemptions."""
    timed = [r.engine_timing for r in records if not r.warmup and r.engine_timing]
    if not timed:
        return None
    return {
        "prefix_cache_hits": sum(1 for t in timed if t.get("cached_tokens")),
        "cached_tokens": sum(int(t.get("cached_tokens") or 0) for t in timed),
        "preemptions": sum(int(t.get("preemptions") or 0) for t in timed),
    }
