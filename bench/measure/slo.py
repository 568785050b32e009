"""Service-level objectives: does a cell meet them, and its goodput.

Two questions, both pure functions of the raw records (warm-up excluded):

- per request (goodput, as DistServe and vLLM's benchmark define it): a request is *good* when it
  succeeded and its TTFT, TPOT and end-to-end latency are each within their objective; goodput is
  good requests per second of measured wall time. A failed request is never good.
- per cell (the SLO verdict): the stated percentile of TTFT, ITL, TPOT and E2E latency is within
  its objective and the error rate is at most `max_error_rate`. Too few requests to estimate the
  percentile (fewer than 10 beyond it) makes the verdict "insufficient data", never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from bench.measure.metric_registry import e2e_latency, inter_token_latencies, span, tpot, ttft
from bench.measure.stats import percentile
from bench.profile.run_settings import SLOSpec
from bench.results.records import RequestRecord

# objective name -> (per-request value, or None for ITL which is a per-token metric)
_PER_REQUEST = {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e_latency}


def min_requests(q: float, beyond: int = 10) -> int:
    """Requests needed so that at least `beyond` samples lie above the q-th percentile."""
    return math.ceil(beyond / (1 - q / 100)) if q < 100 else 10 ** 9


def is_good(record: RequestRecord, slo: SLOSpec) -> bool:
    if not record.ok:
        return False
    for name, metric in _PER_REQUEST.items():
        limit = getattr(slo, name)
        if limit is not None:
            value = metric(record)
            if value is None or value > limit:
                return False
    return True


def evaluate(records: Iterable[RequestRecord], slo: SLOSpec) -> dict[str, Any]:
    """The cell's SLO verdict and goodput under `slo` (run.slo)."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    q = slo.percentile
    by_repetition: dict[int, list[RequestRecord]] = {}
    for record in measured:
        by_repetition.setdefault(record.repetition, []).append(record)
    seconds = sum(span(rs) for rs in by_repetition.values())
    good = sum(1 for r in measured if is_good(r, slo))
    samples: dict[str, list[float]] = {
        name: sorted(v for r in ok if (v := metric(r)) is not None) for name, metric in _PER_REQUEST.items()}
    samples["itl_s"] = sorted(v for r in ok for v in inter_token_latencies(r))
    checks: list[dict[str, Any]] = []
    for name in ("ttft_s", "itl_s", "tpot_s", "e2e_s"):
        limit = getattr(slo, name)
        if limit is None:
            continue
        values = samples[name]
        observed = percentile(values, q) if values else None
        checks.append({"objective": f"{name[:-2]} p{q:g} <= {limit:g} s", "observed": observed,
                       "met": observed is not None and observed <= limit})
    error_rate = (len(measured) - len(ok)) / len(measured) if measured else None
    max_errors = slo.max_error_rate
    checks.append({"objective": f"error rate <= {max_errors:g}", "observed": error_rate,
                   "met": error_rate is not None and error_rate <= max_errors})
    enough = len(measured) >= min_requests(q)
    met = all(c["met"] for c in checks)
    verdict = "MET" if met and enough else "MISSED" if not met else "INSUFFICIENT DATA"
    return {
        "objectives": {k: v for k, v in slo.model_dump().items() if v is not None},
        "checks": checks,
        "verdict": verdict,
        "requests": len(measured),
        "requests_needed": min_requests(q),
        "good_requests": good,
        "goodput_rps": good / seconds if seconds > 0 else None,
        "good_fraction": good / len(measured) if measured else None,
    }


def describe(slo: SLOSpec) -> str:
    """The SLO in words, for a headline: 'TTFT p95 <= 2 s, ITL p95 <= 0.1 s, errors <= 1%'."""
    q = slo.percentile
    limits = {name: getattr(slo, name) for name in ("ttft_s", "itl_s", "tpot_s", "e2e_s")}
    parts = [f"{name[:-2].upper()} p{q:g} <= {limit:g} s" for name, limit in limits.items() if limit is not None]
    parts.append(f"errors <= {slo.max_error_rate * 100:g}%")
    return ", ".join(parts)
