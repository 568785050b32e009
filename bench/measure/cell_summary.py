"""Assemble a cell's summary (cell.json) from what the cell process reported, its raw records,
and the telemetry sampled around it. Pure: no processes, no clocks."""

from __future__ import annotations

from typing import Any

from bench.measure import capacity_search as capacity
from bench.measure import endpoints, engine_timing, slo
from bench.measure.metric_registry import ttft
from bench.measure.metrics import headline_metrics, short_outputs
from bench.measure.sizing import sizing_summary
from bench.measure.stats import percentile
from bench.measure.validity import judge
from bench.profile.cells import Cell
from bench.profile.points import CapacityPoint
from bench.results.records import RequestRecord
from bench.results.resultset import SCHEMA_VERSION
from bench.run.isolation import Outcome


def energy_per_token(telemetry: dict[str, Any], output_tokens: int | None) -> dict[str, Any]:
    """Joules per output token over the measured window, labelled with every source used."""
    energy = telemetry.get("energy") or {}
    parts = {k: energy.get(k) for k in ("gpu_j", "cpu_j") if energy.get(k) is not None}
    sources = sorted({item["source"] for item in energy.get("items") or []})
    if not parts or not output_tokens:
        reasons = {k: v.get("reason") for k, v in (telemetry.get("energy_sources") or {}).items()
                   if not v.get("available")}
        return {"unit": "J/tok", "value": None, "sources": [], "unavailable": reasons}
    total = sum(parts.values())
    return {
        "unit": "J/tok",
        "value": total / output_tokens,
        "joules": total,
        "parts_j": parts,
        "sources": sources,
    }


SEND_LAG_FLOOR_S = 0.010
SEND_LAG_SHARE_OF_TTFT = 0.01


def send_lag_limit(measured: list[RequestRecord]) -> float:
    """How late a send may be (p99) before the client, not the server, shaped the figures: 10 ms, or
    1% of the cell's TTFT p50 where that is more. Latency counts from the scheduled send, so a lag adds
    to TTFT; judged against TTFT it means the same on a GPU answering in 20 ms as on a CPU taking
    seconds, where a client sharing the server's cores is a few ms late without changing any figure."""
    ttfts = sorted(t for t in (ttft(r) for r in measured if r.ok) if t is not None)
    return max(SEND_LAG_FLOOR_S, SEND_LAG_SHARE_OF_TTFT * percentile(ttfts, 50)) if ttfts else SEND_LAG_FLOOR_S


def load_generator_check(cell: Cell, records: list[RequestRecord], telemetry: dict[str, Any],
                         client: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """For served cells: did the client keep up? Send lag (actual minus scheduled send), the send
    rate achieved against the target, and the client's CPU (per client process: `client` is the
    cell process's own account, result.json's load_generator). Client-bound cells are flagged."""
    measured = [r for r in records if not r.warmup and r.sent_time is not None]
    if not cell.served or not measured:
        return None
    client = client or {}
    processes = client.get("client_processes") or 1
    lags = sorted(r.send_lag for r in measured if r.send_lag is not None)
    limit = send_lag_limit(measured)
    check: dict[str, Any] = {"send_lag_s": {"p50": percentile(lags, 50), "p99": percentile(lags, 99),
                                            "limit": limit},
                             "client_processes": processes,
                             "client_processes_reason": client.get("client_processes_reason")}
    reasons = []
    if check["send_lag_s"]["p99"] > limit:
        reasons.append(f"send lag p99 {check['send_lag_s']['p99'] * 1000:.1f} ms above {limit * 1000:.0f} ms "
                       f"({SEND_LAG_FLOOR_S * 1000:.0f} ms, or {SEND_LAG_SHARE_OF_TTFT:.0%} of TTFT p50 where "
                       "that is more)")
    if cell.scenario.kind in ("rate", "trace", "capacity"):  # open loop (capacity: by rate or users)
        def mean_rate(times_of: Any) -> float | None:
            by_repetition: dict[int, list[float]] = {}
            for record in measured:
                by_repetition.setdefault(record.repetition, []).append(times_of(record))
            rates = [(len(t) - 1) / (max(t) - min(t)) for t in by_repetition.values() if len(t) > 1 and max(t) > min(t)]
            return sum(rates) / len(rates) if rates else None

        # Against the schedule actually drawn (a Poisson draw of 20 sends is rarely exactly the nominal rate).
        check["target_rate"] = getattr(cell.scenario, "rate", None)
        check["scheduled_rate"] = mean_rate(lambda r: r.submit_time)
        check["achieved_rate"] = mean_rate(lambda r: r.sent_time)
        scheduled, achieved = check["scheduled_rate"], check["achieved_rate"]
        if scheduled and achieved and achieved < 0.98 * scheduled:
            reasons.append(f"sent {achieved:.1f}/s against a schedule of {scheduled:.1f}/s")
    # The process tree's CPU (the cell process and its client processes), per client process; and the
    # busiest worker's own figure when there were several (an average can hide one saturated loop).
    cpu = (telemetry.get("host") or {}).get("proc_cpu_mean_pct")
    check["client_cpu_pct"] = cpu
    per_process = client.get("process_cpu_pct_max")
    if per_process is None and cpu is not None:
        per_process = cpu / processes
    check["client_cpu_pct_per_process"] = per_process
    if per_process is not None and per_process > 90:
        where = "of a core" if processes == 1 else f"of a core in one of {processes} client processes"
        reasons.append(f"the client used {per_process:.0f}% {where}")
    check["client_bound"] = bool(reasons)
    check["reason"] = "; ".join(reasons)
    return check


def workload_views(cell: Cell, records: list[RequestRecord], server: dict[str, Any] | None) -> dict[str, Any]:
    """What a workload's own kind adds: turns (conversations), the prefix cache (ideal beside the server's),
    structured answers' validity, reasoning apart from answers, and the server's own /metrics view. Only
    the views a cell has, so other cells' summaries keep their shape."""
    from bench.measure.conversation import conversation_summary
    from bench.measure.prefix_cache import prefix_cache_summary
    from bench.measure.reasoning import reasoning_summary
    from bench.measure.structured import structured_summary
    from bench.profile.documents import expected_hit_rate

    views: dict[str, Any] = {}
    if server is not None:
        views["server_metrics"] = server
    documents = cell.workload.documents if cell.workload is not None else None
    expected = None
    measured = [r for r in records if not r.warmup]
    if documents is not None and measured:
        question = sum(r.input_tokens - (r.salt_tokens or 0) for r in measured) / len(measured) - documents.tokens
        expected = expected_hit_rate(documents, max(question, 0.0), len(measured), len(records) - len(measured))
    for name, view in (("conversation", conversation_summary(records)),
                       ("prefix_cache", prefix_cache_summary(cell, records, server, expected)),
                       ("structured", structured_summary(records)),
                       ("reasoning", reasoning_summary(records))):
        if view is not None:
            views[name] = view
    if "prefix_cache" in views:
        views["prefix_cache"]["tolerance"] = cell.run.prefix_hit_tolerance
    return views


def failure_reason(outcome: Outcome, result: dict[str, Any] | None) -> str | None:
    if outcome.failure:
        return outcome.failure
    if result is None:
        return f"cell process exited with code {outcome.returncode} and reported nothing (see cell.log)"
    if result.get("status") != "COMPLETED":
        return result.get("reason") or "the cell process reported a failure (see cell.log)"
    if outcome.returncode != 0:
        return f"cell process exited with code {outcome.returncode} (see cell.log)"
    return None


def build_summary(
    cell: Cell,
    outcome: Outcome,
    result: dict[str, Any] | None,
    records: list[RequestRecord],
    telemetry: dict[str, Any],
    whole_cell_telemetry: dict[str, Any],
    started: str,
    finished: str,
    server_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    reason = failure_reason(outcome, result)
    metrics = headline_metrics(records) if records else {}
    short = short_outputs(r for r in records if not r.warmup)
    if reason is None and short:
        example = short[0]
        reason = (f"{len(short)} request(s) produced fewer tokens than asked (e.g. request {example.request_id}: "
                  f"{example.output_tokens} of {example.expected_output_tokens}); a short output is an error, "
                  "not a faster result")
    if reason is None and metrics and metrics["requests"]["ok"] == 0:
        reason = "no request completed"
    result = result or {}
    memory = dict(result.get("memory") or {})
    memory["peak_tree_rss_bytes_sampled"] = outcome.peak_tree_rss_bytes
    host = whole_cell_telemetry.get("host") or {}
    if host.get("proc_rss_peak_bytes") is not None:
        memory["peak_rss_bytes_sampled"] = host["proc_rss_peak_bytes"]
    gpus = whole_cell_telemetry.get("gpus") or []
    if gpus:
        memory["gpu_used_peak_bytes"] = [g.get("mem_used_peak_bytes") for g in gpus]
    output_tokens = metrics.get("output_tokens", {}).get("value") if metrics else None
    model = result.get("model") or {}
    summary = {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.id,
        "label": cell.label,
        "status": "FAILED" if reason else "COMPLETED",
        "reason": reason,
        "config": cell.to_dict(),
        "identity": cell.identity(),
        "model": model,
        "synthetic_weights": bool(model.get("synthetic")),
        "engine": result.get("engine"),
        "load_s": (result.get("load") or {}).get("load_s"),
        "metrics": metrics,
        "memory": memory,
        "energy_per_output_token": energy_per_token(telemetry, output_tokens),
        "telemetry": telemetry,
        "prompts_sha256": result.get("prompts_sha256"),
        "responses_sha256": result.get("responses_sha256"),
        "started": started,
        "finished": finished,
        "wall_s": outcome.wall_s,
        "returncode": outcome.returncode,
        "network_refused": [],
        "output_lengths": {
            "short": len(short),
            "usage_mismatch": sum(1 for r in records if not r.warmup and getattr(r, "usage_mismatch", False)),
        },
        "files": {
            "records": "records.jsonl.gz",
            "telemetry": "telemetry.jsonl.gz",
            "log": "cell.log",
            "spec": "spec.json",
        },
    }
    summary["load_generator"] = load_generator_check(cell, records, telemetry, result.get("load_generator"))
    # A stop rule cut a repetition short (error rate, max duration): the reader sees why and how much.
    summary["stopped"] = (result.get("load_generator") or {}).get("stopped") or None
    summary["engine_timing"] = engine_timing.cross_check(records, getattr(cell.engine, "timing_tolerance_s", None))
    summary["engine_stats"] = engine_timing.engine_stats(records)
    summary["endpoints"] = endpoints.per_endpoint(records)
    # (a capacity cell's probes are different loads: each probe's goodput is under summary["capacity"])
    if cell.run.slo is not None and cell.served and cell.scenario.kind != "capacity" and records:
        summary["slo"] = slo.evaluate(records, cell.run.slo)  # goodput and the SLO verdict
    if isinstance(cell.scenario, CapacityPoint) and records:
        workload = cell.workload.name if cell.workload else "?"
        summary["capacity"] = capacity.capacity_headline(cell.scenario, workload, records)
    summary["sizing"] = sizing_summary(result.get("sizing"), metrics)  # the floors applied, the precision reached
    summary.update(workload_views(cell, records, server_metrics))
    summary["validity"] = judge(summary, cell.run.rules)
    return summary
