"""The capacity search's decisions and its headline: pure functions of SLO verdicts and records.

The search (bench/scenarios/capacity.py runs it) doubles the load from `start` while the SLO holds,
then bisects between the highest load that met it and the lowest that missed. The headline is
re-derived from the raw records (each carries the load it was sent under), so a reader can check it.
"""

from __future__ import annotations

from typing import Any

from bench.measure import slo
from bench.measure.metric_registry import e2e_latency
from bench.profile.points import CapacityPoint
from bench.profile.run_settings import SLOSpec
from bench.results.records import RequestRecord


def next_load(point: CapacityPoint, history: list[tuple[float, bool]]) -> float | None:
    """The next load to probe after `history` ((load, SLO met) in the order probed), or None when done."""
    if not history:
        return float(point.start)
    low = max((load for load, ok in history if ok), default=0.0)
    missed = [load for load, ok in history if not ok and load > low]
    if not missed:  # still rising: double, up to the ceiling asked for
        return None if low >= point.max else float(min(low * 2, point.max))
    first_miss = next(i for i, (_, ok) in enumerate(history) if not ok)
    if len(history) - first_miss - 1 >= point.steps:
        return None  # bisected as often as asked
    mid = (low + min(missed)) / 2
    if point.search == "concurrency":
        mid = float(int(mid))
        if mid <= low:
            return None  # neighbouring user counts: nothing lies between them
    return None if any(mid == load for load, _ in history) else mid


def requests_per_probe(point: CapacityPoint) -> int:
    """Enough requests for the SLO percentile (10 samples beyond it), or more if the profile asks."""
    assert point.slo is not None, "a capacity search needs run.slo (the profile is checked for it)"
    return max(slo.min_requests(point.slo.percentile), point.requests or 0)


def probes(records: list[RequestRecord], objectives: SLOSpec) -> list[dict[str, Any]]:
    """Each probed load with its SLO verdict, goodput and latency, in the order probed."""
    by_load: dict[float, list[RequestRecord]] = {}
    for record in sorted((r for r in records if not r.warmup and r.load_point is not None),
                         key=lambda r: r.repetition):
        by_load.setdefault(record.load_point, []).append(record)  # type: ignore[arg-type]
    out = []
    for load, group in by_load.items():
        verdict = slo.evaluate(group, objectives)
        latencies = [v for r in group if r.ok and (v := e2e_latency(r)) is not None]
        out.append({"load": load, "verdict": verdict["verdict"], "goodput_rps": verdict["goodput_rps"],
                    "requests": verdict["requests"], "checks": verdict["checks"],
                    "mean_e2e_s": sum(latencies) / len(latencies) if latencies else None})
    return out


def capacity_headline(point: CapacityPoint, workload: str, records: list[RequestRecord]) -> dict[str, Any]:
    """The answer: the highest load meeting the SLO, and the one sentence procurement reads."""
    assert point.slo is not None
    found = probes(records, point.slo)
    best = max((p for p in found if p["verdict"] == "MET"), key=lambda p: p["load"], default=None)
    words = slo.describe(point.slo)
    if best is None:
        headline = (f"no probed load met SLO {words} for workload {workload} "
                    f"(lowest tried: {min((p['load'] for p in found), default=point.start):g})")
        return {"search": point.search, "probes": found, "best": None, "headline": headline}
    if point.search == "rate":
        rate = best["load"]
        users = rate * best["mean_e2e_s"] if best["mean_e2e_s"] else None  # Little's law
    else:
        rate, users = best["goodput_rps"] or 0.0, best["load"]
    at_max = best["load"] >= point.max
    headline = (f"this node serves {rate:.3g} requests/s (about {users:.3g} concurrent users) of workload "
                f"{workload} within SLO {words}" + (" (the search ceiling; it may serve more)" if at_max else ""))
    return {"search": point.search, "probes": found, "best": best, "requests_per_s": rate,
            "concurrent_users": users, "at_search_ceiling": at_max, "headline": headline}
