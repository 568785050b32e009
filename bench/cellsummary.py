"""Assemble a cell's summary (cell.json) from what the cell process reported, its raw records,
and the telemetry sampled around it. Pure: no processes, no clocks."""

from __future__ import annotations

from typing import Any

from bench.cells import Cell
from bench.isolation import Outcome
from bench.metrics import short_outputs, summarise
from bench.records import RequestRecord
from bench.resultset import SCHEMA_VERSION
from bench.validity import judge


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
) -> dict[str, Any]:
    reason = failure_reason(outcome, result)
    metrics = summarise(records) if records else {}
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
    summary["validity"] = judge(summary, cell.run.get("rules", "nightly"))
    return summary
