"""A verdict per cell: VALID or INVALID, with every reason. Pure: reads a cell summary, nothing else.

Two rule sets, chosen by `run.rules` in the profile:
- `procurement`, in the manner of MLPerf's run rules: long enough, and enough requests, for the
  p99 that is reported; repetitions quiet enough to call a difference; no errors tolerated.
- `nightly`: short runs for regression tracking, labelled as not for procurement.

A percentile is only trusted with enough samples: p_q needs at least `min_samples_per_tail` samples
beyond it, i.e. n >= min_samples_per_tail / (1 - q) (p99 with 10 in the tail: 1000 samples).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

THROTTLE_WORDS = ("thermal", "power", "hw_slowdown", "sw_power_cap", "hw_power_brake")


@dataclass(frozen=True)
class Rules:
    name: str
    for_procurement: bool
    min_duration_s: float
    min_samples_per_tail: int  # samples beyond the highest reported percentile
    percentile: float  # the highest percentile the verdict vouches for
    max_error_rate: float
    max_cv: float  # coefficient of variation of output tok/s across repetitions
    min_repetitions: int
    max_cpu_freq_drop: float  # fraction below the mean frequency counted as throttling


RULES = {
    "procurement": Rules("procurement", True, min_duration_s=600.0, min_samples_per_tail=10, percentile=99,
                         max_error_rate=0.0, max_cv=0.05, min_repetitions=3, max_cpu_freq_drop=0.10),
    "nightly": Rules("nightly", False, min_duration_s=1.0, min_samples_per_tail=1, percentile=90,
                     max_error_rate=0.01, max_cv=0.15, min_repetitions=1, max_cpu_freq_drop=0.25),
}


def required_samples(rules: Rules) -> int:
    return round(rules.min_samples_per_tail / (1 - rules.percentile / 100))


def judge(summary: dict[str, Any], rules_name: str) -> dict[str, Any]:
    """The verdict of one cell summary under a rule set, with every reason it is not valid."""
    rules = RULES[rules_name]
    reasons: list[str] = []
    if summary.get("status") != "COMPLETED":
        reasons.append(f"the cell did not complete: {summary.get('reason')}")
    metrics = summary.get("metrics") or {}
    reasons += _sample_checks(metrics, rules)
    reasons += _length_checks(summary)
    notes: list[str] = []
    repetitions = (summary.get("sizing") or {}).get("repetitions") or {}
    if repetitions.get("mode") == "auto":  # the precision reached replaces the noise rule
        missed = _precision_check(repetitions)
        if missed:
            (reasons if rules.for_procurement else notes).append(missed)
    elif ((summary.get("config") or {}).get("scenario") or {}).get("kind") != "capacity":
        reasons += _noise_checks(metrics, rules)  # a capacity cell's "repetitions" are different loads, on purpose
    reasons += _throttle_checks(summary.get("telemetry") or {}, rules)
    reasons += _load_generator_checks(summary)
    reasons += _prefix_cache_checks(summary)
    reasons += _concurrent_run_checks(summary)
    reasons += _structured_checks(summary)
    server = summary.get("server_metrics")
    if server and not server.get("available"):  # the run went on without the server's own view
        notes.append(f"the server's /metrics was not read: {server.get('reason')}")
    return {
        "verdict": "INVALID" if reasons else "VALID",
        "rules": rules.name,
        "for_procurement": rules.for_procurement,
        "reasons": reasons,
        "notes": notes,
    }


def _sample_checks(metrics: dict[str, Any], rules: Rules) -> list[str]:
    reasons = []
    duration = (metrics.get("duration_s") or {}).get("value")
    if duration is not None and duration < rules.min_duration_s:
        reasons.append(f"measured for {duration:.1f} s, less than the {rules.min_duration_s:g} s the "
                       f"{rules.name} rules require")
    needed = required_samples(rules)
    for name in ("ttft", "e2e_latency"):
        n = (metrics.get(name) or {}).get("n", 0)
        if metrics and n < needed:
            reasons.append(f"{name}: {n} samples, fewer than the {needed} needed to report "
                           f"p{rules.percentile:g} ({rules.name} rules)")
    requests = metrics.get("requests") or {}
    error_rate = (metrics.get("error_rate") or {}).get("value")
    if error_rate is not None and error_rate > rules.max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} above {rules.max_error_rate:.1%} "
                       f"({requests.get('failed')} of {requests.get('total')} requests failed)")
    repetitions = len((metrics.get("output_tok_s") or {}).get("per_repetition") or [])
    if metrics and repetitions < rules.min_repetitions:
        reasons.append(f"{repetitions} repetition(s), fewer than the {rules.min_repetitions} "
                       f"the {rules.name} rules need")
    return reasons


def _length_checks(summary: dict[str, Any]) -> list[str]:
    reasons = []
    lengths = summary.get("output_lengths") or {}
    if lengths.get("short"):
        reasons.append(f"{lengths['short']} request(s) ended early (EOS or a cut-off): output lengths not as asked")
    if lengths.get("usage_mismatch"):
        reasons.append(f"{lengths['usage_mismatch']} request(s) where the server's usage disagrees with the "
                       "tokens counted")
    return reasons


def _precision_check(repetitions: dict[str, Any]) -> str | None:
    """repetitions: auto: did the 95% half-width of output tok/s reach the target within the maximum?"""
    target, reached = repetitions.get("target_precision"), repetitions.get("precision")
    if target is None or (reached is not None and reached <= target):
        return None
    done = repetitions.get("done")
    got = "could not be computed" if reached is None else f"±{reached:.1%}"
    return (f"output tok/s precision {got} (95% half-width) after {done} repetition(s), short of the target "
            f"±{target:.1%} (run.target_precision; run.max_repetitions {repetitions.get('maximum')})")


def _noise_checks(metrics: dict[str, Any], rules: Rules) -> list[str]:
    values = [v for v in (metrics.get("output_tok_s") or {}).get("per_repetition") or [] if v]
    if len(values) < 2:
        return []
    cv = statistics.stdev(values) / statistics.fmean(values)
    if cv > rules.max_cv:
        return [f"repetitions disagree: output tok/s varies by {cv:.1%} (coefficient of variation) above "
                f"{rules.max_cv:.0%}"]
    return []


def _throttle_checks(telemetry: dict[str, Any], rules: Rules) -> list[str]:
    reasons = []
    seen = [r for r in telemetry.get("clock_event_reasons") or [] if any(w in r.lower() for w in THROTTLE_WORDS)]
    if seen:
        reasons.append(f"GPU throttled during the measurement: {', '.join(sorted(set(seen)))}")
    host = telemetry.get("host") or {}
    mean, low = host.get("cpu_freq_mean_mhz"), host.get("cpu_freq_min_mhz")
    if mean and low and low < mean * (1 - rules.max_cpu_freq_drop):
        reasons.append(f"CPU frequency dropped to {low:.0f} MHz, {1 - low / mean:.0%} below its mean {mean:.0f} MHz")
    return reasons


def _load_generator_checks(summary: dict[str, Any]) -> list[str]:
    check = summary.get("load_generator") or {}
    if check.get("client_bound"):
        return [f"the load generator, not the system under test, was the bottleneck: {check.get('reason', '')}".strip()]
    return []


def _prefix_cache_checks(summary: dict[str, Any]) -> list[str]:
    engine = (summary.get("config") or {}).get("engine") or {}
    hits = (summary.get("engine_stats") or {}).get("prefix_cache_hits")
    if not engine.get("enable_prefix_caching") and hits:
        return [f"{hits} prefix-cache hit(s) although prefix caching was declared off"]
    cache = summary.get("prefix_cache") or {}
    measured, ideal = cache.get("measured_hit_rate"), cache.get("ideal_hit_rate")
    if cache.get("caching") is False and measured:
        return [f"prefix-cache hit rate {measured:.0%} measured although prefix caching was declared off"]
    tolerance = cache.get("tolerance")
    if cache.get("caching") and measured is not None and ideal is not None and tolerance is not None \
            and ideal - measured > tolerance:
        return [f"prefix-cache hit rate {measured:.0%} measured ({cache.get('measured_source')}) against an ideal "
                f"{ideal:.0%}: more than {tolerance:.0%} apart (evictions, a cache too small, or prompts that do not "
                "share what the workload says)"]
    return []


def _structured_checks(summary: dict[str, Any]) -> list[str]:
    structured = summary.get("structured") or {}
    if structured.get("invalid"):
        problems = "; ".join(f"{n}x {p}" for p, n in (structured.get("problems") or {}).items())
        return [f"{structured['invalid']} of {structured['answered']} structured answers ({structured['kind']}) "
                f"were not valid: {problems}"]
    return []


def _concurrent_run_checks(summary: dict[str, Any]) -> list[str]:
    """Another lokaal-bench run measured on this machine during the cell (bench/run/machine_lock.py)."""
    others = summary.get("concurrent_runs") or []
    if not others:
        return []
    who = "; ".join(f"pid {o.get('pid')}, result set {o.get('result_set')}" for o in others)
    return [f"another lokaal-bench run was measuring on this machine during this cell ({who})"]
