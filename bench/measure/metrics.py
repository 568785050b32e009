"""The headline of a cell: every metric of the registry (bench/measure/metric_registry.py) over its raw
records, plus the counts beside them. Pure: no I/O, no clocks, no engines.

Every metric is a dict with a `unit`. Distributions (latencies) carry n, mean, stdev, min, max and
the percentiles p50/p90/p95/p99; rates carry `value` (over all measured repetitions) and
`per_repetition` (for statistics across repetitions). Warm-up records never count. Failed requests
are counted and shown; latency and throughput are over successful requests, error rate beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from bench.measure.metric_registry import METRICS, span
from bench.results.records import RequestRecord

RATES = ("output_tok_s", "total_tok_s", "requests_per_s", "prefill_tok_s", "decode_tok_s")


def phase_rates(records: Sequence[RequestRecord]) -> tuple[float | None, float | None]:
    """Prefill and system-wide decode tokens/s of these records (see the registry's formulas)."""
    prefill, decode = METRICS["prefill_tok_s"], METRICS["decode_tok_s"]
    return prefill.figure(prefill.compute(records)), decode.figure(decode.compute(records))


def repetition_rates(records: Sequence[RequestRecord]) -> dict[str, float | None]:
    """Throughputs and the measured span of one repetition's records (failed requests count in the span)."""
    rates: dict[str, float | None] = {name: METRICS[name].figure(METRICS[name].compute(records)) for name in RATES}
    rates["duration_s"] = span(records)
    return rates


def headline_metrics(records: Iterable[RequestRecord]) -> dict[str, dict[str, Any]]:
    """All metrics of a cell from its records (warm-up excluded): the registry's headlines, then the
    measured seconds, request counts, error rate and token totals."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    repetitions = sorted({r.repetition for r in measured})
    metrics = {name: metric.headline(metric.compute(measured), repetitions)
               for name, metric in METRICS.items() if name != "error_rate"}
    durations = [span([r for r in measured if r.repetition == k]) for k in repetitions]
    metrics["duration_s"] = {"unit": "s", "value": sum(durations), "per_repetition": durations}
    metrics["requests"] = {
        "unit": "requests",
        "total": len(measured),
        "ok": len(ok),
        "failed": len(failed),
        "errors": dict(Counter(r.error for r in failed)),
    }
    error_rate = METRICS["error_rate"]
    metrics["error_rate"] = error_rate.headline(error_rate.compute(measured), repetitions)
    metrics["input_tokens"] = {"unit": "tok", "value": sum(r.input_tokens for r in ok)}
    metrics["output_tokens"] = {"unit": "tok", "value": sum(r.output_tokens for r in ok)}
    return metrics


def short_outputs(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Requests whose output length differs from the one asked for (engines already mark them with a
    'short output' error): an error, never a faster result. A structured answer ends when its structure
    does (its expected length is a cap): it is judged on validity instead (bench/measure/structured.py)."""
    return [r for r in records if r.output_tokens != r.expected_output_tokens and r.structured is None
            and (r.ok or (r.error or "").startswith("short output"))]


def peak_host_bytes(memory: dict[str, Any]) -> int | None:
    """A cell's peak host memory: its own process's exact peak RSS, or the sampled peak of its whole
    process tree when that is higher (engines with worker processes: vLLM's engine core and ranks)."""
    values = [v for v in (memory.get("peak_rss_bytes"), memory.get("peak_tree_rss_bytes_sampled")) if v]
    return max(values) if values else None
