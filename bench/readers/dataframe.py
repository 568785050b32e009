"""Result sets into pandas DataFrames, for researchers: `bench.load(paths)` gives one row per cell
(metrics flattened to `ttft_p99`, `decode_tok_s`, ...; units in `df.attrs["units"]`), and
`bench.load(paths, per="request")` one row per raw request record."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.measure.metric_registry import METRICS, e2e_latency, ttft
from bench.measure.metrics import peak_host_bytes
from bench.results.load import LoadedCell, LoadedResultSet, Source, load_result_sets

_DISTRIBUTION_KEYS = ("n", "mean", "stdev", "min", "max", "p50", "p90", "p95", "p99")


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """`{"ttft": {"p99": ...}}` -> `{"ttft_p99": ...}`; rates keep their name."""
    flat: dict[str, Any] = {}
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        if "value" in entry:
            flat[name] = entry["value"]
        for key in _DISTRIBUTION_KEYS:
            if key in entry and "value" not in entry:
                flat[f"{name}_{key}"] = entry[key]
    return flat


def _cell_row(result_set: LoadedResultSet, cell: LoadedCell) -> dict[str, Any]:
    summary = cell.summary or {}
    scenario = cell.scenario
    engine = cell.config.get("engine") or {}
    row: dict[str, Any] = {
        "result_set": result_set.name,
        "machine_id": result_set.machine_id,
        "cpu": result_set.cpu,
        "cell_id": summary.get("cell_id"),
        "label": summary.get("label"),
        "status": summary.get("status"),
        "validity": cell.verdict,
        "model": cell.model_name,
        "engine": engine.get("kind"),
        "dtype": engine.get("dtype"),
        "device": (summary.get("engine") or {}).get("device"),
        "scenario": scenario.get("kind"),
        "batch_size": scenario.get("batch_size"),
        "users": scenario.get("users"),
        "rate": scenario.get("rate"),
        "depth": scenario.get("depth"),
        "workload": cell.workload,
        "synthetic_weights": summary.get("synthetic_weights"),
        "load_s": summary.get("load_s"),
        "peak_rss_bytes": (summary.get("memory") or {}).get("peak_rss_bytes"),
        "peak_host_bytes": peak_host_bytes(summary.get("memory") or {}),  # the process tree's, when higher
        "energy_j_per_token": (summary.get("energy_per_output_token") or {}).get("value"),
        "decode_roofline_fraction": ((summary.get("roofline") or {}).get("decode") or {}).get("fraction"),
        # None, or the older schema version this result set was written with (upgraded on read)
        "schema_upgraded_from": result_set.upgraded_from,
    }
    row.update(flatten_metrics(cell.metrics))  # stored, and what an older schema did not store from the records
    return row


def load(paths: Source | Iterable[Source], per: str = "cell") -> Any:
    """A pandas DataFrame of the cells (per="cell") or raw requests (per="request") of result sets
    (or folders holding them, or sets already loaded by bench.results.load)."""
    import pandas as pd

    if per not in ("cell", "request"):
        raise ValueError("per must be 'cell' or 'request'")
    rows: list[dict[str, Any]] = []
    for result_set in load_result_sets(paths):
        for cell in result_set.cells:
            if cell.summary is None:
                continue
            row = _cell_row(result_set, cell)
            if per == "cell":
                rows.append(row)
                continue
            for record in cell.records:
                data = record.to_json()
                data.pop("token_times")
                data["ttft_s"] = ttft(record)
                data["e2e_latency_s"] = e2e_latency(record)
                rows.append({"result_set": row["result_set"], "cell_id": row["cell_id"], "label": row["label"],
                             "model": row["model"], "scenario": row["scenario"], "batch_size": row["batch_size"],
                             **data})
    frame = pd.DataFrame(rows)
    frame.attrs["units"] = {name: metric.unit for name, metric in METRICS.items()}
    return frame
