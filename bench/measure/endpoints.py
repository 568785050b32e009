"""Served cells spread over several endpoints (a load-balanced cluster): the same metrics per
endpoint, beside the total, so one slow or failing replica is seen rather than averaged away.
Pure: reads records, nothing else."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.measure.metrics import headline_metrics
from bench.results.records import RequestRecord

SHOWN = ("ttft", "itl", "e2e_latency")


def per_endpoint(records: list[RequestRecord]) -> dict[str, dict[str, Any]] | None:
    """{endpoint: requests, failed, error rate, output tok/s, req/s and p50/p99 latencies}; None for one endpoint."""
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in records:
        if not record.warmup and record.endpoint is not None:
            groups[record.endpoint].append(record)
    if len(groups) < 2:
        return None
    out: dict[str, dict[str, Any]] = {}
    for endpoint in sorted(groups):
        metrics = headline_metrics(groups[endpoint])
        requests = metrics["requests"]
        out[endpoint] = {
            "requests": requests["total"],
            "failed": requests["failed"],
            "errors": requests["errors"],
            "error_rate": metrics["error_rate"]["value"],
            "output_tok_s": metrics["output_tok_s"]["value"],
            "requests_per_s": metrics["requests_per_s"]["value"],
            **{name: {"p50": metrics[name].get("p50"), "p99": metrics[name].get("p99")} for name in SHOWN},
        }
    return out
